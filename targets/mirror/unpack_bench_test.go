package mirror

import (
	"archive/tar"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// benchArchive writes a 256 MiB tar shaped like a build: four 48 MiB images
// and 2048 files of 32 KiB (packages, logs) in 16 directories.
func benchArchive(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rnd := rand.New(rand.NewSource(1))
	tw := tar.NewWriter(f)
	add := func(name string, size int) {
		buf := make([]byte, size)
		rnd.Read(buf)
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
			b.Fatal(err)
		}
		tw.Write(buf)
	}
	for i := range 4 {
		add(fmt.Sprintf("iso/image-%d.iso", i), 48<<20)
	}
	for i := range 2048 {
		add(fmt.Sprintf("RPMS/dir%02d/pkg-%04d.rpm", i%16, i), 32<<10)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkUnpack publishes a 256 MiB tar of a build (benchArchive) with
// "unpack" and compares, in the same run, with what a release engineer's
// script does with it: tar -x, sha256sum of every file into a MANIFEST,
// and sync of the files (none of the checks, staging, locking or links).
// It reports both rates, the ratio (x-script > 1: faster than the script)
// and the peak Go heap during the publication.
func BenchmarkUnpack(b *testing.B) {
	dir := b.TempDir()
	archive := filepath.Join(dir, "build.tar")
	benchArchive(b, archive)
	st, _ := os.Stat(archive)
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	var ours, script time.Duration
	var peak atomic.Uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := filepath.Join(dir, fmt.Sprintf("script-%d", i))
		os.Mkdir(out, 0o755)
		start := time.Now()
		cmd := exec.Command("sh", "-c", `tar -xf "$1" -C "$2" && cd "$2" && find . -type f -print0 | xargs -0 sha256sum > MANIFEST && find . -type f -print0 | xargs -0 sync && sync .`, "sh", archive, out)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("script: %v\n%s", err, o)
		}
		script += time.Since(start)
		os.RemoveAll(out)

		o := &Options{Tree: Tree{Name: "bench", Dir: tree}, Series: fmt.Sprintf("s%d", i), BuildID: "1", Result: "success", Links: []string{"latest"}, Unpack: true}
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		start = time.Now()
		f, err := os.Open(archive)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := PublishArchive(context.Background(), o, f, "build.tar", nil); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		f.Close()
		close(stop)
		<-sampled
		os.RemoveAll(filepath.Join(tree, o.Series))
	}
	mibs := func(d time.Duration) float64 { return float64(st.Size()) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(ours), "MiB/s")
	b.ReportMetric(mibs(script), "script-MiB/s")
	b.ReportMetric(script.Seconds()/ours.Seconds(), "x-script")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
}
