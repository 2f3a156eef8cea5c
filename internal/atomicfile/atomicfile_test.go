package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	for name, write := range map[string]func(string, []byte, os.FileMode) error{"WriteFile": WriteFile, "Replace": Replace} {
		t.Run(name, func(t *testing.T) { testWrite(t, write) })
	}
}

func testWrite(t *testing.T, write func(string, []byte, os.FileMode) error) {
	dir := t.TempDir()
	p := filepath.Join(dir, "job.json")
	for _, content := range []string{"first", "second, longer"} {
		if err := write(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestWriteFileFailureLeavesOldContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "result")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory in the way of the rename makes the write fail.
	q := filepath.Join(dir, "sub")
	os.Mkdir(q, 0o755)
	os.WriteFile(filepath.Join(q, "x"), nil, 0o644)
	if err := WriteFile(q, []byte("new"), 0o644); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if IsTemp(e.Name()) {
			t.Errorf("temporary file %s left after a failed write", e.Name())
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("other file changed: %q", b)
	}
}

func TestIsTemp(t *testing.T) {
	for name, want := range map[string]bool{".job.json.tmp-123": true, "job.json": false, "a.tmp-1": false, ".lock": false} {
		if IsTemp(name) != want {
			t.Errorf("IsTemp(%q) = %v", name, !want)
		}
	}
}

func TestCauseHasNoPath(t *testing.T) {
	dir := t.TempDir()
	err := WriteFile(filepath.Join(dir, "missing", "result"), []byte("x"), 0o644)
	if err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	got := Cause(err).Error()
	if strings.Contains(got, dir) || !strings.Contains(got, "no such file or directory") {
		t.Fatalf("Cause = %q: want the cause without the path %s", got, dir)
	}
	rerr := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	if got := Cause(rerr).Error(); strings.Contains(got, dir) || !strings.HasPrefix(got, "rename: ") {
		t.Fatalf("Cause(rename) = %q", got)
	}
	if Cause(nil) != nil {
		t.Fatal("Cause(nil) != nil")
	}
}
