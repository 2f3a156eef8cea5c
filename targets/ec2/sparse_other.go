//go:build !linux

package ec2

import "io"

type sparseFile struct{ io.ReadCloser }

// openSparse finds no holes outside Linux: the disk is read as a stream.
func openSparse(path string, size int64) *sparseFile { return nil }

func (s *sparseFile) nextData(off int64) (int64, error) { return off, nil }
func (s *sparseFile) skipTo(off int64) error            { return nil }
