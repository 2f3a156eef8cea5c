package image

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// Linux lseek whence that finds data in sparse files.
const seekData = 3

// Sparse reads a raw disk file that has holes and says where its data is,
// so a target can skip the holes (zeros) without reading them: a 4 GiB
// disk file holding 1 GiB is read as 1 GiB. It reads from offset 0 as an
// io.Reader; SkipTo moves forward.
type Sparse struct {
	f    *os.File
	pos  int64
	size int64
}

// OpenSparse opens path when it is a sparse file of exactly size bytes (a
// raw disk; see targets.Image.Format) on a file system that reports its
// holes; otherwise it returns nil and the disk is read as a stream.
func OpenSparse(path string, size int64) *Sparse {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil || st.Size != size || st.Blocks*512 >= st.Size {
		f.Close()
		return nil
	}
	s := &Sparse{f: f, size: size}
	if _, err := s.NextData(0); err != nil {
		f.Close()
		return nil
	}
	return s
}

func (s *Sparse) Read(p []byte) (int, error) {
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

// Close closes the file.
func (s *Sparse) Close() error { return s.f.Close() }

// NextData returns the offset of the first byte at or after off that may
// hold data, or the disk size when only a hole follows.
func (s *Sparse) NextData(off int64) (int64, error) {
	n, err := s.f.Seek(off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return s.size, nil
	}
	if err != nil {
		return 0, err
	}
	return min(n, s.size), nil
}

// SkipTo moves the read position to off.
func (s *Sparse) SkipTo(off int64) { s.pos = off }
