package client

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tree writes a directory holding the cases that change a tar stream's
// size: empty and partial-block files, exact blocks, a name too long for a
// ustar header (PAX record), a non-ASCII name, a long symlink target,
// nested and empty directories.
func tree(t *testing.T) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	long := strings.Repeat("d", 120)
	files := map[string]string{
		"empty":                         "",
		"one":                           "x",
		"block":                         strings.Repeat("b", 512),
		"block+1":                       strings.Repeat("c", 513),
		"RPMS/x86_64/kernel-6.1.rpm":    strings.Repeat("k", 70000),
		long + "/" + long + "/f.txt":    "deep",
		"iso/ünïcødé-名前.iso":            "iso",
		"logs/build.log":                "log\n",
		"installer/" + long + ".img":    "img",
		"a/b/c/d/e/f/g/h/i/j/k/l/m/n/o": "nested",
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "empty-dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("one", filepath.Join(dir, "latest")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(strings.Repeat("../x/", 40)+"target", filepath.Join(dir, "far")); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// TestTarSize compares the size planned by TarDir with the bytes WriteTo
// actually produces, and reads the archive back.
func TestTarSize(t *testing.T) {
	dir, files := tree(t)
	a, err := TarDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || a.Size() != int64(buf.Len()) {
		t.Fatalf("planned %d bytes, WriteTo said %d, wrote %d", a.Size(), n, buf.Len())
	}
	if a.Files() != len(files) {
		t.Errorf("Files() = %d, want %d", a.Files(), len(files))
	}
	got := map[string]string{}
	var dirs, links []string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			got[h.Name] = string(b)
			if h.Mode != 0o640 {
				t.Errorf("%s: mode %o", h.Name, h.Mode)
			}
		case tar.TypeDir:
			dirs = append(dirs, h.Name)
		case tar.TypeSymlink:
			links = append(links, h.Name+"->"+h.Linkname)
		}
		if h.Uname != "" || h.Uid != 0 || strings.HasPrefix(h.Name, "/") || strings.HasPrefix(h.Name, dir) {
			t.Errorf("entry %q leaks owner or local path: %+v", h.Name, h)
		}
	}
	for name, content := range files {
		if got[name] != content {
			t.Errorf("%s: got %d bytes, want %d", name, len(got[name]), len(content))
		}
	}
	if len(got) != len(files) {
		t.Errorf("archive holds %d files, want %d", len(got), len(files))
	}
	if !contains(dirs, "empty-dir/") || !contains(dirs, "RPMS/x86_64/") {
		t.Errorf("directories: %v", dirs)
	}
	if len(links) != 2 || links[1] != "latest->one" {
		t.Errorf("links: %v", links)
	}
	if r := a.Reader(); r != nil {
		m, err := io.Copy(io.Discard, r)
		r.Close()
		if err != nil || m != a.Size() {
			t.Errorf("Reader: %d bytes, %v; want %d", m, err, a.Size())
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestTarEmptyDir(t *testing.T) {
	a, err := TarDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil || a.Size() != 1024 || buf.Len() != 1024 {
		t.Errorf("empty directory: planned %d, wrote %d, %v", a.Size(), buf.Len(), err)
	}
}

// TestTarChanged: a file that grows or shrinks between planning and
// streaming fails the stream, naming the file.
func TestTarChanged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(path string) error
	}{
		{"grown", func(p string) error { return os.WriteFile(p, []byte("xx"), 0o644) }},
		{"shrunk", func(p string) error { return os.Truncate(p, 0) }},
		{"removed", os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := tree(t)
			a, err := TarDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.change(filepath.Join(dir, "one")); err != nil {
				t.Fatal(err)
			}
			_, err = a.WriteTo(io.Discard)
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "one")) {
				t.Fatalf("err = %v, want one naming the file", err)
			}
			if tc.name != "removed" && !errors.Is(err, ErrChanged) {
				t.Errorf("err = %v, want ErrChanged", err)
			}
		})
	}
}

func TestTarRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := TarDir(dir)
	if err == nil || !strings.Contains(err.Error(), "named pipe") {
		t.Fatalf("err = %v, want a refusal of the named pipe", err)
	}
	if _, err := TarDir(filepath.Join(dir, "fifo")); err == nil {
		t.Error("TarDir of a non-directory succeeded")
	}
}
