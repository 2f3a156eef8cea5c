package image

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	f.Truncate(size)
	data := bytes.Repeat([]byte("x"), 4096)
	f.WriteAt(data, 32<<20)
	f.Close()
	s := OpenSparse(path, size)
	if s == nil {
		t.Fatal("OpenSparse refused a sparse file (this file system does not report holes; tmpfs and ext4 do)")
	}
	defer s.Close()
	off, err := s.NextData(0)
	if err != nil || off > 32<<20 || off < 32<<20-1<<20 {
		t.Fatalf("NextData(0) = %d, %v; want about 32 MiB", off, err)
	}
	s.SkipTo(32 << 20)
	got := make([]byte, 4096)
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read at 32 MiB: %v", err)
	}
	if off, _ := s.NextData(32<<20 + 1<<20); off != size {
		t.Errorf("NextData after the data = %d, want the size", off)
	}
	if OpenSparse(path, size+1) != nil {
		t.Errorf("a file of another size was accepted")
	}
}
