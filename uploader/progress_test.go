package uploader

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/mirror"
)

// The real mirror target, run as the daemon runs it, reports its copy in
// the progress file: at its end the whole image.
func TestProgressFileWithMirror(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	img := filepath.Join(dir, "image")
	const size = 9 << 20
	if err := os.WriteFile(img, bytes.Repeat([]byte("cloudupload"), size/11+1)[:size], 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	os.WriteFile(data, []byte(`{"tree":"test"}`), 0o600)
	progress := filepath.Join(dir, "progress")
	e := env{"CLOUDUPLOAD_JOB": "7", "CLOUDUPLOAD_PROJECT": "home:alice", "CLOUDUPLOAD_REPOSITORY": "images",
		"CLOUDUPLOAD_ARCH": "x86_64", "CLOUDUPLOAD_PACKAGE": "leap",
		mirror.EnvMirrors: "test=" + tree, targets.EnvProgressFile: progress}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"alice", "mirror", img, data, "leap.x86_64.raw", filepath.Join(dir, "result")},
		Options{Targets: []targets.Target{mirror.New()}, Getenv: e.get, Stdout: &stdout, Stderr: &stderr})
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(progress)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"done":9437184,"total":9437184}` + "\n"; string(b) != want {
		t.Errorf("progress file %q, want %q", b, want)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".progress.tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
