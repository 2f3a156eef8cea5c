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

// benchSize is the size of the file both benchmarks publish.
const benchSize = 256 << 20

// benchSetup writes the random file to publish and makes an empty tree.
func benchSetup(b *testing.B) (dir, src, tree string) {
	dir = b.TempDir()
	src = filepath.Join(dir, "image.raw")
	buf := make([]byte, benchSize)
	rand.New(rand.NewSource(1)).Read(buf)
	if err := os.WriteFile(src, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	tree = filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	return dir, src, tree
}

// timeScript runs what a release engineer's script does with src (cp,
// sha256sum into a MANIFEST, sync; none of the staging, locking or links)
// in a fresh directory under dir, and returns how long it took.
func timeScript(b *testing.B, dir, src string, i int) time.Duration {
	out := filepath.Join(dir, fmt.Sprintf("script-%d", i))
	os.Mkdir(out, 0o755)
	defer os.RemoveAll(out)
	start := time.Now()
	cmd := exec.Command("sh", "-c", `cp "$1" "$2/image.raw" && cd "$2" && sha256sum image.raw > MANIFEST && sync image.raw MANIFEST .`, "sh", src, out)
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("script: %v\n%s", err, o)
	}
	return time.Since(start)
}

// reportVsScript reports MiB/s of both and their ratio (>1: faster).
func reportVsScript(b *testing.B, ours, script time.Duration) {
	mibs := func(d time.Duration) float64 { return float64(benchSize) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(ours), "MiB/s")
	b.ReportMetric(mibs(script), "script-MiB/s")
	b.ReportMetric(script.Seconds()/ours.Seconds(), "x-script")
}

// BenchmarkPublish publishes a 256 MiB file and compares with the script
// (timeScript) for the same file in the same run.
func BenchmarkPublish(b *testing.B) {
	dir, src, tree := benchSetup(b)
	var ours, script time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		script += timeScript(b, dir, src, i)

		// The mirror target, with a link; a different series each time
		// so that dedup does not apply.
		o := &Options{Tree: Tree{Name: "bench", Dir: tree}, Series: fmt.Sprintf("s%d", i), BuildID: "1", Result: "success", Links: []string{"latest"}}
		start := time.Now()
		if _, err := Publish(context.Background(), o, src, "image.raw", nil); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		os.RemoveAll(filepath.Join(tree, o.Series))
	}
	reportVsScript(b, ours, script)
}

// BenchmarkPublishUnchanged publishes a 256 MiB file that the previous build
// of the series already holds: the copy is hard-linked to the previous one
// and dropped without fsync. Compared with the same script as
// BenchmarkPublish.
func BenchmarkPublishUnchanged(b *testing.B) {
	dir, src, tree := benchSetup(b)
	o := &Options{Tree: Tree{Name: "bench", Dir: tree}, Series: "s", BuildID: "0", Result: "success", Links: []string{"latest"}}
	if _, err := Publish(context.Background(), o, src, "image.raw", nil); err != nil {
		b.Fatal(err)
	}
	var ours, script time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		script += timeScript(b, dir, src, i)

		o.BuildID = fmt.Sprint(i + 1)
		start := time.Now()
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
	reportVsScript(b, ours, script)
}
