package ec2

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// Linux lseek whences that find data and holes in sparse files.
const (
	seekData = 3
	seekHole = 4
)

// sparseFile reads a raw disk file that has holes, and tells writeBlocks
// where its data is, so the holes (zeros) are skipped without being read.
// Built images are often sparse: a 10 GiB disk holding 1 GiB is read as
// 1 GiB.
type sparseFile struct {
	f    *os.File
	pos  int64
	size int64
}

// openSparse opens path when it is a sparse file of size bytes on a file
// system that reports its holes; otherwise it returns nil and the disk is
// read as a stream.
func openSparse(path string, size int64) *sparseFile {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil || st.Size != size || st.Blocks*512 >= st.Size {
		f.Close()
		return nil
	}
	s := &sparseFile{f: f, size: size}
	if _, err := s.nextData(0); err != nil {
		f.Close()
		return nil
	}
	return s
}

func (s *sparseFile) Read(p []byte) (int, error) {
	if s.pos >= s.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), s.size-s.pos)]
	n, err := s.f.ReadAt(p, s.pos)
	s.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (s *sparseFile) Close() error { return s.f.Close() }

// nextData returns the offset of the first byte at or after off that may
// hold data, or the disk size when only a hole follows.
func (s *sparseFile) nextData(off int64) (int64, error) {
	n, err := s.f.Seek(off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return s.size, nil
	}
	if err != nil {
		return 0, err
	}
	return min(n, s.size), nil
}

// skipTo moves the read position forward to off.
func (s *sparseFile) skipTo(off int64) error {
	s.pos = off
	return nil
}
