package download

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/cloudupload/cloudupload/buildinfo"
)

// maxLinkHops bounds how many symlinks one resolution follows (as the
// kernel's ELOOP limit).
const maxLinkHops = 40

// errRefused is a path that exists but must not be served: hidden, a
// BUILD-INFO.txt, or reached through a symlink leaving the tree. It is
// answered like a missing file, so it reveals nothing.
var errRefused = errors.New("refused")

// resolved is a request path resolved inside a tree.
type resolved struct {
	rel  string      // canonical, slash-separated, relative to the tree root, "." for the root; no symlinks
	info fs.FileInfo // of rel (not a symlink)
}

// resolve turns the segments of a request path into the canonical path
// inside root, following symlinks lexically one segment at a time with
// Lstat and Readlink relative to root. A link that is absolute or climbs
// above the tree, a hidden segment (".lock", ".staging-*", "." and ".."
// included) anywhere on the way, and BUILD-INFO.txt as the final name are
// refused. Opening the result through the same os.Root keeps even a link
// swapped in after this check inside the tree.
func resolve(root *os.Root, segs []string) (resolved, error) {
	out := make([]string, 0, len(segs))
	pending := segs
	hops := 0
	var last fs.FileInfo // of path.Join(out...), nil when out changed without a Lstat
	for len(pending) > 0 {
		s := pending[0]
		pending = pending[1:]
		switch {
		case s == "" || s == ".":
			continue
		case s == "..":
			if len(out) == 0 {
				return resolved{}, errRefused
			}
			out = out[:len(out)-1]
			last = nil
			continue
		case strings.HasPrefix(s, "."):
			return resolved{}, errRefused
		}
		cand := path.Join(path.Join(out...), s)
		fi, err := root.Lstat(cand)
		if err != nil {
			return resolved{}, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			out = append(out, s)
			last = fi
			continue
		}
		if hops++; hops > maxLinkHops {
			return resolved{}, errRefused
		}
		target, err := root.Readlink(cand)
		if err != nil {
			return resolved{}, err
		}
		if path.IsAbs(target) {
			return resolved{}, errRefused
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	rel := path.Join(out...)
	if rel == "" {
		rel = "."
	}
	if path.Base(rel) == buildinfo.FileName {
		return resolved{}, errRefused
	}
	fi := last
	if fi == nil {
		var err error
		if fi, err = root.Lstat(rel); err != nil {
			return resolved{}, err
		}
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return resolved{}, errRefused
	}
	return resolved{rel: rel, info: fi}, nil
}
