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
)

// TempMarker is part of the name of every temporary file of a write
// (".<name>.tmp-<random>"), so leftovers of a crash can be recognised and
// removed (see IsTemp).
const TempMarker = ".tmp-"

// WriteFile replaces path with data, with permissions perm.
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+TempMarker+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes the entries of dir (creations, renames, removals) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
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
