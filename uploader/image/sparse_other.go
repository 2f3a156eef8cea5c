//go:build !linux

package image

import "io"

// Sparse finds no holes outside Linux.
type Sparse struct{ io.ReadCloser }

// OpenSparse returns nil outside Linux: the disk is read as a stream.
func OpenSparse(path string, size int64) *Sparse { return nil }

// NextData says data may follow anywhere.
func (s *Sparse) NextData(off int64) (int64, error) { return off, nil }

// SkipTo does nothing.
func (s *Sparse) SkipTo(off int64) {}
