package client

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// TarArchive is a directory planned as a tar stream whose exact size is
// known before a byte is written, so that it can be sent with a
// Content-Length without a temporary copy. Entries are the directory's
// files, subdirectories and symbolic links, named relative to it (the
// directory itself is not an entry), in lexical order, with their
// permission bits and modification time (whole seconds); owners are not
// recorded. Other kinds of files (devices, FIFOs, sockets) are refused.
type TarArchive struct {
	dir     string
	entries []tarEntry
	size    int64
	files   int
	bytes   int64
}

type tarEntry struct {
	hdr  *tar.Header
	path string // on disk
}

// TarDir plans the archive of dir: it walks the tree once and records each
// entry's header and size. The archive's size is then
// sum(header blocks) + sum(content rounded up to 512) + 1024 (the two zero
// blocks that end an archive); headers are measured by encoding them, so
// long names (PAX records) and large files are counted exactly.
func TarDir(dir string) (*TarArchive, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	a := &TarArchive{dir: dir, size: 2 * blockSize}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: int64(info.Mode().Perm()),
			ModTime: info.ModTime().Truncate(time.Second)}
		switch m := info.Mode(); {
		case m.IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
			a.files++
			a.bytes += info.Size()
		case m.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case m&fs.ModeSymlink != 0:
			if hdr.Linkname, err = os.Readlink(path); err != nil {
				return err
			}
			hdr.Typeflag = tar.TypeSymlink
		default:
			return fmt.Errorf("%s is a %s: only files, directories and symbolic links can be pushed", path, kind(m))
		}
		n, err := headerSize(hdr)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		a.size += n + roundUp(hdr.Size)
		a.entries = append(a.entries, tarEntry{hdr: hdr, path: path})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

const blockSize = 512

func roundUp(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

// headerSize is the number of bytes tar.Writer writes for hdr before the
// entry's content: one block, plus a PAX or GNU long-name entry when the
// header needs one.
func headerSize(hdr *tar.Header) (int64, error) {
	var c countWriter
	if err := tar.NewWriter(&c).WriteHeader(hdr); err != nil {
		return 0, err
	}
	return c.n, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// Size is the exact length of the archive in bytes.
func (a *TarArchive) Size() int64 { return a.size }

// Files is the number of regular files in the archive.
func (a *TarArchive) Files() int { return a.files }

// ContentBytes is the total size of the regular files.
func (a *TarArchive) ContentBytes() int64 { return a.bytes }

// ErrChanged is wrapped by the error of WriteTo when a file's size is not
// the one planned: the archive would not have the announced length.
var ErrChanged = errors.New("changed while being pushed")

// WriteTo writes the archive to w, reading each file as it goes. A file
// whose size differs from the one TarDir saw (or that grows or shrinks
// while it is read) fails with an error wrapping ErrChanged and naming the
// file; nothing is written past the point where the archive went wrong.
func (a *TarArchive) WriteTo(w io.Writer) (int64, error) {
	c := &countWriter{}
	tw := tar.NewWriter(io.MultiWriter(w, c))
	buf := make([]byte, copyBuffer)
	for _, e := range a.entries {
		if err := tw.WriteHeader(e.hdr); err != nil {
			return c.n, fmt.Errorf("%s: %w", e.path, err)
		}
		if e.hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := copyFile(tw, e.path, e.hdr.Size, buf); err != nil {
			return c.n, err
		}
	}
	if err := tw.Close(); err != nil {
		return c.n, err
	}
	if c.n != a.size {
		return c.n, fmt.Errorf("archive of %s is %d bytes, not the %d announced: %w", a.dir, c.n, a.size, ErrChanged)
	}
	return c.n, nil
}

// copyBuffer is the size of the reads of files and of the pipe of Reader:
// large enough that a stream costs few system calls and goroutine switches.
const copyBuffer = 1 << 20

// copyFile copies exactly size bytes of the file at path to w through buf
// and checks that there is no more.
func copyFile(w io.Writer, path string, size int64, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return err
	} else if fi.Size() != size {
		return changed(path, size, fi.Size())
	}
	// Hide w's ReadFrom, if any, so that buf is used for every file
	// instead of a buffer allocated per file.
	_, err = io.CopyBuffer(struct{ io.Writer }{w}, ExactReader(f, size, path), buf)
	return err
}

func changed(name string, planned, now int64) error {
	return fmt.Errorf("%s: %w (%d bytes when planned, %d now)", name, ErrChanged, planned, now)
}

// ExactReader reads r, which must hold exactly size bytes: fewer or more
// fail the read with an error wrapping ErrChanged and naming name. It is
// how a file is sent whose size was announced before it was read.
func ExactReader(r io.Reader, size int64, name string) io.Reader {
	return &exactReader{r: r, left: size, size: size, name: name}
}

type exactReader struct {
	r          io.Reader
	left, size int64
	name       string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		// Announced size reached: the file must end here.
		var one [1]byte
		if n, _ := io.ReadFull(e.r, one[:]); n > 0 {
			return 0, changed(e.name, e.size, e.size+1)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, changed(e.name, e.size, e.size-e.left)
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// Reader returns the archive as a stream, written by a goroutine as it is
// read. Reads are buffered (1 MiB), so that a reader taking small pieces
// (an HTTP transport) does not make the writer switch for each. Close it
// when done, whether or not it was read to the end, so that the goroutine
// ends.
func (a *TarArchive) Reader() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		_, err := a.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	return struct {
		io.Reader
		io.Closer
	}{bufio.NewReaderSize(pr, copyBuffer), pr}
}
