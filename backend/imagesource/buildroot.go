package imagesource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/cloudupload/cloudupload"
)

// copyChunk is how much is copied between two checks of the context. The
// copy itself goes through the kernel (copy_file_range) when it can.
const copyChunk = 64 << 20

// BuildRoot fetches images from a local build tree: the image of a job is
// DIR/<project>/<repository>/<arch>/<package>/<filename>. The file is opened
// through an os.Root, so neither the names nor a symbolic link in the tree
// can lead outside DIR. Fetch copies the file; it does not hard-link it (the
// job's copy must not change when the build tree does).
type BuildRoot struct {
	dir string
}

// NewBuildRoot returns the fetcher of build tree dir, which must be a directory.
func NewBuildRoot(dir string) (*BuildRoot, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("build root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("build root %s is not a directory", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("build root: %w", err)
	}
	return &BuildRoot{dir: abs}, nil
}

// open opens the image of j and checks it is a regular file.
func (b *BuildRoot) open(j cloudupload.Job) (*os.File, fs.FileInfo, error) {
	segs, err := checkNames(j)
	if err != nil {
		return nil, nil, err
	}
	root, err := os.OpenRoot(b.dir)
	if err != nil {
		return nil, nil, &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "the build root cannot be read", Err: err}
	}
	defer root.Close()
	f, err := root.Open(path.Join(segs...))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || isEscape(err) {
			// An escaping link is reported as a missing image: the tree
			// holds no such image.
			return nil, nil, &cloudupload.Error{Code: cloudupload.ENOTFOUND, Message: cloudupload.ErrorMessage(notFound(j)), Err: err}
		}
		return nil, nil, &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "the image cannot be read", Err: err}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "the image cannot be read", Err: err}
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, notFound(j)
	}
	return f, fi, nil
}

// isEscape reports whether err is os.Root refusing a path outside the root.
func isEscape(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

// Stat implements backend.Fetcher.
func (b *BuildRoot) Stat(ctx context.Context, j cloudupload.Job) (int64, error) {
	f, fi, err := b.open(j)
	if err != nil {
		return 0, err
	}
	f.Close()
	return fi.Size(), nil
}

// Fetch implements backend.Fetcher: it copies the whole image into dst and
// returns its size. It does not resume after offset: a local copy is cheap,
// and the build tree may hold a rebuilt image by now, whose head would not
// match what dst holds.
func (b *BuildRoot) Fetch(ctx context.Context, j cloudupload.Job, dst *os.File, offset int64) (int64, error) {
	f, _, err := b.open(j)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := dst.Truncate(0); err != nil {
		return 0, err
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		// io.CopyN hands dst an *io.LimitedReader over an *os.File,
		// which os.File.ReadFrom copies inside the kernel.
		c, err := io.CopyN(dst, f, copyChunk)
		n += c
		if err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "copying the image failed", Err: err}
		}
	}
}
