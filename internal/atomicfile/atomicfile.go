// Package atomicfile writes files so that a crash at any moment leaves either
// the old content or the new one, never a mix: a temporary file in the same
// directory is written and synced, renamed over the target, and the
// directory is synced. The daemon's job store, its key pair, the uploader's
// result file and the mirror target all write through it.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// syncs counts the fsyncs of this package (files and directories), for
// benchmarks that count a job's writes (Syncs).
var syncs atomic.Int64

// Syncs is the number of fsyncs this process made through this package.
func Syncs() int64 { return syncs.Load() }

// TempMarker is part of the name of every temporary file of a write
// (".<name>.tmp-<random>"), so leftovers of a crash can be recognised and
// removed (see IsTemp).
const TempMarker = ".tmp-"

// WriteFile replaces path with data, with permissions perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir, err := replace(path, data, perm, true)
	if err != nil {
		return err
	}
	return SyncDir(dir)
}

// replace writes data to a temporary file beside path (synced when sync is
// set) and renames it over path; it returns path's directory.
func replace(path string, data []byte, perm os.FileMode, sync bool) (dir string, err error) {
	dir = filepath.Dir(path)
	tmp, err := stage(path, data, perm, sync)
	if err != nil {
		return dir, err
	}
	if err = os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
	}
	return dir, err
}

// Stage writes data, with permissions perm, to a new temporary file beside
// path, without syncing it, and returns the temporary file's name:
// renaming it over path then replaces path at once. It is for writers that
// make the change durable by other means (the daemon's job journal) and
// must not show it before they have. A leftover is recognised by IsTemp.
func Stage(path string, data []byte, perm os.FileMode) (string, error) {
	return stage(path, data, perm, false)
}

func stage(path string, data []byte, perm os.FileMode, sync bool) (tmp string, err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+TempMarker+"*")
	if err != nil {
		return "", err
	}
	tmp = f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return "", err
	}
	if _, err = f.Write(data); err != nil {
		return "", err
	}
	if sync {
		syncs.Add(1)
		if err = f.Sync(); err != nil {
			return "", err
		}
	}
	if err = f.Close(); err != nil {
		return "", err
	}
	return tmp, nil
}

// SyncDir makes the entries of dir (creations, renames, removals) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	syncs.Add(1)
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// IsTemp reports whether a directory entry name is a temporary file left by
// an interrupted WriteFile.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, TempMarker)
}

// Cause returns err without the file names that os errors carry
// (*os.PathError, *os.LinkError, *os.SyscallError keep their operation and
// cause), for messages that people read in a job's log or details, where
// server paths must not appear.
func Cause(err error) error {
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	case errors.As(err, &le):
		return fmt.Errorf("%s: %w", le.Op, le.Err)
	}
	return err
}

// Replace replaces path with data as WriteFile does but without syncing:
// a reader sees the old content or the new one, never a mix, but a crash may
// lose the write. It is for small advisory files rewritten often (an
// uploader's progress), where an fsync per write would cost more than the
// information is worth.
func Replace(path string, data []byte, perm os.FileMode) error {
	_, err := replace(path, data, perm, false)
	return err
}
