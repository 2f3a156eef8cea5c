package mirror

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPublish publishes a 256 MiB file and compares with what a
// release engineer's script does for the same file in the same run:
// cp, sha256sum into a MANIFEST, sync (and none of the staging, locking
// or links). Reported: MiB/s of both and their ratio (>1: faster).
func BenchmarkPublish(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	src := filepath.Join(dir, "image.raw")
	buf := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(buf)
	if err := os.WriteFile(src, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	buf = nil
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	var ours, script time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// The script.
		out := filepath.Join(dir, fmt.Sprintf("script-%d", i))
		os.Mkdir(out, 0o755)
		start := time.Now()
		cmd := exec.Command("sh", "-c", `cp "$1" "$2/image.raw" && cd "$2" && sha256sum image.raw > MANIFEST && sync image.raw MANIFEST .`, "sh", src, out)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("script: %v\n%s", err, o)
		}
		script += time.Since(start)
		os.RemoveAll(out)

		// The mirror target, with a link; a different series each time
		// so that dedup does not apply.
		o := &Options{Tree: Tree{Name: "bench", Dir: tree}, Series: fmt.Sprintf("s%d", i), BuildID: "1", Result: "success", Links: []string{"latest"}}
		start = time.Now()
		if _, err := Publish(context.Background(), o, src, "image.raw", nil); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		os.RemoveAll(filepath.Join(tree, o.Series))
	}
	mibs := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(ours), "MiB/s")
	b.ReportMetric(mibs(script), "script-MiB/s")
	b.ReportMetric(script.Seconds()/ours.Seconds(), "x-script")
}

// BenchmarkPublishUnchanged publishes a 256 MiB file that the previous build
// of the series already holds: the copy is hard-linked to the previous one
// and dropped without fsync. Compared with the same
// script as BenchmarkPublish.
func BenchmarkPublishUnchanged(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	src := filepath.Join(dir, "image.raw")
	buf := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(buf)
	if err := os.WriteFile(src, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	buf = nil
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	o := &Options{Tree: Tree{Name: "bench", Dir: tree}, Series: "s", BuildID: "0", Result: "success", Links: []string{"latest"}}
	if _, err := Publish(context.Background(), o, src, "image.raw", nil); err != nil {
		b.Fatal(err)
	}
	var ours, script time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := filepath.Join(dir, fmt.Sprintf("script-%d", i))
		os.Mkdir(out, 0o755)
		start := time.Now()
		cmd := exec.Command("sh", "-c", `cp "$1" "$2/image.raw" && cd "$2" && sha256sum image.raw > MANIFEST && sync image.raw MANIFEST .`, "sh", src, out)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("script: %v\n%s", err, o)
		}
		script += time.Since(start)
		os.RemoveAll(out)

		o.BuildID = fmt.Sprint(i + 1)
		start = time.Now()
		if _, err := Publish(context.Background(), o, src, "image.raw", nil); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
	}
	b.StopTimer()
	a, _ := os.Stat(filepath.Join(tree, "s/0/image.raw"))
	z, _ := os.Stat(filepath.Join(tree, "s", o.BuildID, "image.raw"))
	if !os.SameFile(a, z) {
		b.Fatal("not deduplicated")
	}
	mibs := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(ours), "MiB/s")
	b.ReportMetric(mibs(script), "script-MiB/s")
	b.ReportMetric(script.Seconds()/ours.Seconds(), "x-script")
}
