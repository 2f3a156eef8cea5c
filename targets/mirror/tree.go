package mirror

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload/internal/atomicfile"
)

// CompareIDs orders build ids naturally: runs of digits compare as numbers
// (so build 10 follows build 9, and timestamps compare by time), anything
// else byte by byte; ids that are equal that way (e.g. "01" and "1") fall
// back to plain string order. It returns -1, 0 or +1.
func CompareIDs(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if isDigit(a[i]) && isDigit(b[j]) {
			si := i
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			sj := j
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			x := strings.TrimLeft(a[si:i], "0")
			y := strings.TrimLeft(b[sj:j], "0")
			if len(x) != len(y) {
				return sign(len(x) - len(y))
			}
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
			continue
		}
		if a[i] != b[j] {
			return sign(int(a[i]) - int(b[j]))
		}
		i++
		j++
	}
	switch {
	case i < len(a):
		return 1
	case j < len(b):
		return -1
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// Build is a published build directory of a series.
type Build struct {
	ID        string
	Dir       string // absolute
	Result    string // "success", "fail", or "" when the marker is missing
	Retention string // class, "" when none was recorded
	Kept      bool   // holds a KEEP marker
	Published time.Time
}

// ListBuilds returns the builds of the series directory dir, oldest first
// (CompareIDs order). A build is a visible directory holding a MANIFEST;
// other entries (links, hidden staging and trash directories, nested
// series) are not builds.
func ListBuilds(dir string) ([]Build, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var builds []Build
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, ok, err := readBuild(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if ok {
			builds = append(builds, b)
		}
	}
	sort.Slice(builds, func(i, j int) bool { return CompareIDs(builds[i].ID, builds[j].ID) < 0 })
	return builds, nil
}

// newestBuild returns the build of the series directory dir whose id orders
// last, reading only as much as it needs to.
func newestBuild(dir string) (Build, bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Build{}, false
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(i, j int) bool { return CompareIDs(names[i], names[j]) > 0 })
	for _, name := range names {
		if b, ok, err := readBuild(filepath.Join(dir, name)); err == nil && ok {
			return b, true
		}
	}
	return Build{}, false
}

func readBuild(dir string) (Build, bool, error) {
	b := Build{ID: filepath.Base(dir), Dir: dir}
	st, err := os.Stat(filepath.Join(dir, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return b, false, nil
	} else if err != nil {
		return b, false, err
	}
	b.Published = st.ModTime()
	if t, err := time.Parse(BuildIDFormat, idTimestamp(b.ID)); err == nil {
		b.Published = t
	}
	b.Result = readWord(filepath.Join(dir, ResultName))
	b.Retention = readWord(filepath.Join(dir, RetentionName))
	if _, err := os.Lstat(filepath.Join(dir, KeepName)); err == nil {
		b.Kept = true
	}
	return b, true, nil
}

// idTimestamp returns the leading %Y%m%dT%H%M%SZ part of a build id.
func idTimestamp(id string) string {
	if len(id) >= len(BuildIDFormat) {
		return id[:len(BuildIDFormat)]
	}
	return id
}

func readWord(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Links returns the symlinks of the series directory dir that point at a
// sibling: link name → target build id.
func Links(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	links := map[string]string{}
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink == 0 || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		links[e.Name()] = filepath.Clean(t)
	}
	return links, nil
}

// Manifest maps a file's path relative to the build directory to its sha256.
type Manifest map[string][32]byte

// readManifest reads a MANIFEST in sha256sum format.
func readManifest(path string) (Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := Manifest{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		var h [32]byte
		if !ok || hex.DecodedLen(len(sum)) != 32 {
			return nil, fmt.Errorf("%s: malformed line", path)
		}
		if _, err := hex.Decode(h[:], []byte(sum)); err != nil {
			return nil, fmt.Errorf("%s: malformed line", path)
		}
		m[name] = h
	}
	return m, sc.Err()
}

// Lock is a held series lock.
type Lock struct{ f *os.File }

// LockSeries takes the exclusive lock of the series directory dir (flock on
// dir/.lock), waiting while another publication or prune holds it, until
// ctx is done. Waiters are queued by the kernel (a blocking flock), so a
// busy prune cannot starve a publication.
func LockSeries(ctx context.Context, dir string) (*Lock, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open series lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		return &Lock{f: f}, nil
	}
	got := make(chan error, 1)
	go func() {
		var err error
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock series: %w", err)
		}
		return &Lock{f: f}, nil
	case <-ctx.Done():
		// The waiting flock cannot be interrupted: release the lock as soon
		// as it is granted.
		go func() {
			<-got
			f.Close()
		}()
		return nil, fmt.Errorf("wait for series lock: %w", ctx.Err())
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() error { return l.f.Close() }

// syncDir makes dir's entries durable; see package atomicfile.
var syncDir = atomicfile.SyncDir
