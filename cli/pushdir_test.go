package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPushDirectory streams a directory as a tar archive to the mirror
// target, which unpacks it as the build ("unpack": true).
func TestPushDirectory(t *testing.T) {
	e := start(t)
	src := filepath.Join(t.TempDir(), "build-42")
	files := map[string]string{
		"RPMS/std/kernel.rpm":       strings.Repeat("k", 100000),
		"iso/starlingx.iso":         strings.Repeat("i", 70000),
		"logs/build.log":            "ok\n",
		"installer/bzImage":         "z",
		strings.Repeat("n", 150):    "long name",
		"outputs/empty-file-at-end": "",
	}
	for name, content := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := e.run("", nil, "push", "--target", "mirror", "--data", e.dataFile(`{"tree": "demo", "series": "stx/master"}`), "--follow", "--json", src)
	if r.code != 0 {
		t.Fatalf("push of a directory: exit %d: %s", r.code, r.stderr)
	}
	job := decodeJob(t, r.stdout)
	if job.Filename != "build-42.tar" || job.State != "succeeded" {
		t.Fatalf("pushed job: %+v", job)
	}
	if !strings.Contains(r.stderr, "6 files") {
		t.Errorf("push did not describe the archive:\n%s", r.stderr)
	}
	// The build directory is the result's directory (or the result itself).
	build := e.published(job)
	if fi, err := os.Stat(build); err != nil || !fi.IsDir() {
		build = filepath.Dir(build)
	}
	for name, content := range files {
		if got, err := os.ReadFile(filepath.Join(build, name)); err != nil || string(got) != content {
			t.Errorf("%s in the publication: %v (%d bytes, want %d)", name, err, len(got), len(content))
		}
	}

	r = e.run("", nil, "push", "--target", "s3", "--data", e.dataFile(`{}`), src)
	if r.code != 2 || !strings.Contains(r.stderr, "only be pushed to the mirror target") {
		t.Errorf("push of a directory to s3: exit %d, %q", r.code, r.stderr)
	}
}
