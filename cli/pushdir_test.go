package cli_test

import (
	"archive/tar"
	"compress/gzip"
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
	if r.code != 2 || !strings.Contains(r.stderr, "only the mirror target unpacks an archive") {
		t.Errorf("push of a directory to s3: exit %d, %q", r.code, r.stderr)
	}
}

// TestPushArchive pushes a .tar.gz made elsewhere with --unpack: the mirror
// target publishes its tree as the build.
func TestPushArchive(t *testing.T) {
	e := start(t)
	archive := filepath.Join(t.TempDir(), "release-1.0.tar.gz")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	files := map[string]string{"images/disk.img": strings.Repeat("d", 5000), "SHA256SUMS.txt": "sums\n"}
	for _, name := range []string{"images/disk.img", "SHA256SUMS.txt"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[name]))
	}
	tw.Close()
	zw.Close()
	f.Close()
	r := e.run("", nil, "push", "--target", "mirror", "--unpack", "--data", e.dataFile(`{"tree": "demo", "series": "rel"}`), "-f", "--json", archive)
	if r.code != 0 {
		t.Fatalf("push --unpack: exit %d: %s", r.code, r.stderr)
	}
	job := decodeJob(t, r.stdout)
	build := e.published(job)
	for name, content := range files {
		if got, err := os.ReadFile(filepath.Join(build, name)); err != nil || string(got) != content {
			t.Errorf("%s in the publication: %v, %q", name, err, got)
		}
	}
	if r := e.run("", nil, "push", "--target", "s3", "--unpack", "--data", e.dataFile(`{}`), archive); r.code != 2 {
		t.Errorf("push --unpack to s3: exit %d, %q", r.code, r.stderr)
	}
}
