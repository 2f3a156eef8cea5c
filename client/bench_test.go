package client

import (
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkTarStream streams a 136 MiB build directory (32 files of 4 MiB,
// 2,000 of 4 KiB, in 40 directories) as push sends it, through a pipe, and
// in the same run `tar -cf - .` of the same directory (GNU tar, its output
// read through a pipe too). Reports MiB/s of both, the ratio (>1: faster
// than tar) and, with -benchmem, the memory per stream: it does not grow
// with the files' size.
func BenchmarkTarStream(b *testing.B) {
	if _, err := exec.LookPath("tar"); err != nil {
		b.Fatal("tar is needed as the baseline")
	}
	dir := b.TempDir()
	rnd := rand.New(rand.NewSource(1))
	big := make([]byte, 4<<20)
	var total int64
	for i := 0; i < 32; i++ {
		rnd.Read(big)
		p := filepath.Join(dir, fmt.Sprintf("iso/%02d", i%4), fmt.Sprintf("image-%02d.img", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, big, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(len(big))
	}
	for i := 0; i < 2000; i++ {
		p := filepath.Join(dir, fmt.Sprintf("RPMS/%02d", i%36), fmt.Sprintf("pkg-%04d.rpm", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, big[i:i+4096], 0o644); err != nil {
			b.Fatal(err)
		}
		total += 4096
	}
	var ours, tar time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		a, err := TarDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		r := a.Reader()
		// As an HTTP transport reads a request body: 64 KiB at a time.
		n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, r, make([]byte, 64<<10))
		r.Close()
		if err != nil || n != a.Size() {
			b.Fatalf("stream: %d bytes of %d, %v", n, a.Size(), err)
		}
		ours += time.Since(start)

		b.StopTimer()
		start = time.Now()
		cmd := exec.Command("tar", "-cf", "-", ".")
		cmd.Dir = dir
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, out); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		tar += time.Since(start)
		b.StartTimer()
	}
	mibs := func(d time.Duration) float64 { return float64(total) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(ours), "MiB/s")
	b.ReportMetric(mibs(tar), "tar-MiB/s")
	b.ReportMetric(tar.Seconds()/ours.Seconds(), "x-tar")
}
