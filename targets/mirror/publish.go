package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/buildinfo"
	"github.com/cloudupload/cloudupload/targets"
)

// Publish publishes the file src under the name filename as described by o
// and returns the result: "<tree>:<series>/<build_id>/[<area>/]<filename>".
// See the package comment for the steps and guarantees.
func Publish(ctx context.Context, o *Options, src, filename string, log *targets.Log) (string, error) {
	if log == nil {
		log = targets.NewLog(io.Discard)
	}
	return publish(ctx, o, log, func(staging string, prev *dedupIndex) (*staged, error) {
		fileDir := staging
		rel := filename
		if o.Area != "" {
			fileDir = filepath.Join(staging, o.Area)
			rel = o.Area + "/" + filename
			if err := os.Mkdir(fileDir, 0o755); err != nil {
				return nil, err
			}
		}
		dst := filepath.Join(fileDir, filename)
		sum, size, err := copyFile(ctx, src, dst, log, filename)
		if err != nil {
			return nil, err
		}
		st := &staged{sums: map[string][32]byte{rel: sum}, rel: rel, size: size}
		// Dedup before the copy is fsynced: when the newest build has this
		// file, the copy is replaced by a hard link to its copy and dropped
		// while (mostly) still in the page cache. No lock is needed: a link
		// to a file that prune removes afterwards keeps its content, and a
		// failed link just keeps the copy.
		deduped := prev.link(dst, sum, size, log)
		if !deduped {
			if err := syncFile(dst); err != nil {
				return nil, err
			}
			// Under the lock, a build published meanwhile may hold the
			// file: dedup again (the copy is already on disk: this only
			// saves space).
			st.again = func(prev *dedupIndex) { prev.link(dst, sum, size, log) }
		}
		if o.BuildInfo != nil {
			if err := writeBuildInfo(staging, path.Dir(rel), o.BuildInfo, st.sums, log); err != nil {
				return nil, err
			}
			if bi, _ := buildinfo.Parse(o.BuildInfo); bi.Match(filename) == nil {
				log.Printf("warning: BUILD-INFO.txt has no block for %s: downloads of it will be denied", filename)
			}
		}
		if o.Area != "" {
			st.dirs = append(st.dirs, fileDir)
		}
		return st, nil
	})
}

// staged is what a fill function of publish put in the staging directory.
type staged struct {
	sums  map[string][32]byte // MANIFEST: path relative to the build → sha256
	rel   string              // the result's path below the build directory ("" for the build)
	size  int64               // bytes published, for the log
	dirs  []string            // directories below the staging directory to fsync before the rename
	again func(*dedupIndex)   // called under the lock with a build published meanwhile; may be nil
}

// publish makes the staging directory, has fill put the build's files in
// it (given the newest build of the series for dedup, or nil), adds RESULT
// and RETENTION, and then under the series lock writes the MANIFEST, renames
// the build into place and moves the links. Until the rename, any failure
// removes the staging directory and changes nothing else.
func publish(ctx context.Context, o *Options, log *targets.Log, fill func(staging string, prev *dedupIndex) (*staged, error)) (string, error) {
	st, err := os.Stat(o.Tree.Dir)
	if err != nil || !st.IsDir() {
		return "", cloudupload.Errorf(cloudupload.EINTERNAL, "mirror tree %s is not available on the server", o.Tree.Name)
	}
	seriesDir := filepath.Join(o.Tree.Dir, filepath.FromSlash(o.Series))
	// A series must not lie inside a build (directly or through a link such
	// as latest): publishing there would change a published build.
	segs := strings.Split(o.Series, "/")
	for i := range segs {
		prefix := strings.Join(segs[:i+1], "/")
		if _, err := os.Stat(filepath.Join(o.Tree.Dir, filepath.FromSlash(prefix), ManifestName)); err == nil {
			return "", cloudupload.Errorf(cloudupload.EINVALID, "series %s lies inside the build %s", o.Series, prefix)
		}
	}
	if err := mkdirAllSync(o.Tree.Dir, segs); err != nil {
		return "", fmt.Errorf("create series %s: %w", o.Series, err)
	}
	staging, err := os.MkdirTemp(seriesDir, ".staging-"+o.BuildID+"-")
	if err != nil {
		return "", fmt.Errorf("create staging directory: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			if err := os.RemoveAll(staging); err != nil {
				log.Printf("could not remove staging directory %s: %v", filepath.Base(staging), err)
			}
		}
	}()
	if err := os.Chmod(staging, 0o755); err != nil {
		return "", err
	}

	// 1. The build's files.
	var prev *dedupIndex
	if b, ok := newestBuild(seriesDir); ok {
		prev = loadDedup(b)
	}
	s, err := fill(staging, prev)
	if err != nil {
		return "", err
	}

	// 2. The result marker, the retention class.
	if s.sums[ResultName], err = writeSmall(filepath.Join(staging, ResultName), []byte(o.Result+"\n")); err != nil {
		return "", err
	}
	if o.Retention != "" {
		if s.sums[RetentionName], err = writeSmall(filepath.Join(staging, RetentionName), []byte(o.Retention+"\n")); err != nil {
			return "", err
		}
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("publication cancelled: %w", err)
	}

	// 3. Under the series lock: pick the id, dedup, MANIFEST, rename, links.
	lock, err := LockSeries(ctx, seriesDir)
	if err != nil {
		return "", err
	}
	defer lock.Unlock()

	// A build id given and already published with the very same files is
	// a re-run (after a lost node, a restart): published once, the links
	// still move forward.
	id, again := o.BuildID, false
	if !o.DefaultID {
		if again, err = samePublished(filepath.Join(seriesDir, id), s.sums); err != nil {
			return "", err
		}
	}
	if !again {
		if id, err = freeID(seriesDir, o); err != nil {
			return "", err
		}
	}
	if s.again != nil && !again {
		if b, ok := newestBuild(seriesDir); ok && (prev == nil || b.ID != prev.build.ID) {
			s.again(loadDedup(b))
		}
	}
	for _, l := range o.Links {
		st, err := os.Lstat(filepath.Join(seriesDir, l))
		if err == nil && st.Mode()&fs.ModeSymlink == 0 {
			return "", cloudupload.Errorf(cloudupload.EINVALID, "links: %s in series %s exists and is not a link", l, o.Series)
		}
	}
	result := fmt.Sprintf("%s:%s/%s", o.Tree.Name, o.Series, id)
	if s.rel != "" {
		result += "/" + s.rel
	}
	if again {
		log.Printf("build %s is already published with the same files (this is a re-run): nothing to move", id)
	} else {
		if err := writeManifest(staging, s.sums); err != nil {
			return "", err
		}
		for _, d := range s.dirs {
			if err := syncDir(d); err != nil {
				return "", err
			}
		}
		if err := syncDir(staging); err != nil {
			return "", err
		}
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("publication cancelled: %w", err)
		}
		final := filepath.Join(seriesDir, id)
		if err := os.Rename(staging, final); err != nil {
			return "", fmt.Errorf("move build %s into place: %w", id, err)
		}
		committed = true
		if err := syncDir(seriesDir); err != nil {
			return "", err
		}
		log.Printf("published %s (%s, result %s)", result, targets.MiB(s.size), o.Result)
	}

	// 4. Links: only for a successful build, only forward.
	if o.Result != "success" {
		if len(o.Links) > 0 {
			log.Printf("links %s left alone: the build did not succeed", strings.Join(o.Links, ", "))
		}
		return result, nil
	}
	for _, l := range o.Links {
		moved, old, err := moveLink(seriesDir, l, id)
		switch {
		case err != nil:
			return "", fmt.Errorf("build %s is published but link %s could not be updated: %w", id, l, err)
		case moved && old != "":
			log.Printf("link %s: %s -> %s", l, old, id)
		case moved:
			log.Printf("link %s -> %s", l, id)
		case old == id:
			log.Printf("link %s -> %s already", l, id)
		default:
			log.Printf("link %s stays at %s, which is newer than %s", l, old, id)
		}
	}
	if err := syncDir(seriesDir); err != nil {
		return "", err
	}
	return result, nil
}

// writeBuildInfo writes text (which must parse) as BUILD-INFO.txt in the
// directory dir of the build (relative, "" for the build's root) and adds
// it to sums; a BUILD-INFO.txt already there is an error.
func writeBuildInfo(staging, dir string, text []byte, sums map[string][32]byte, log *targets.Log) error {
	bi, err := buildinfo.Parse(text)
	if err != nil {
		return cloudupload.Errorf(cloudupload.EINVALID, "build_info does not parse: %v", err)
	}
	for _, w := range bi.Warnings() {
		log.Printf("BUILD-INFO.txt: %s", w)
	}
	rel := path.Join(dir, BuildInfoName)
	if _, ok := sums[rel]; ok {
		return cloudupload.Errorf(cloudupload.EINVALID, "build_info is given and the archive holds %s too: give one of them", rel)
	}
	sums[rel], err = writeSmall(filepath.Join(staging, filepath.FromSlash(rel)), text)
	return err
}

// mkdirAllSync creates root/segs… as needed, fsyncing the parent of each
// directory it creates so that a new series survives a crash.
func mkdirAllSync(root string, segs []string) error {
	dir := root
	for _, seg := range segs {
		parent := dir
		dir = filepath.Join(dir, seg)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		} else if err != nil {
			return err
		}
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}

// freeID returns the build id to use: o.BuildID, or for a generated id that
// is taken, the first free "<id>.N". A given id that exists is an error.
func freeID(seriesDir string, o *Options) (string, error) {
	id := o.BuildID
	for n := 2; ; n++ {
		_, err := os.Lstat(filepath.Join(seriesDir, id))
		if errors.Is(err, fs.ErrNotExist) {
			return id, nil
		} else if err != nil {
			return "", err
		}
		if !o.DefaultID {
			return "", cloudupload.Errorf(cloudupload.ECONFLICT, "build %s already exists in series %s", id, o.Series)
		}
		if n > 1000 {
			return "", cloudupload.Errorf(cloudupload.ECONFLICT, "no free build id for %s in series %s", o.BuildID, o.Series)
		}
		id = fmt.Sprintf("%s.%d", o.BuildID, n)
	}
}

// copyFile copies src to dst (new, 0644) and returns its sha256 and size,
// without fsync (see syncFile). It stops soon after ctx is cancelled.
func copyFile(ctx context.Context, src, dst string, log *targets.Log, what string) (sum [32]byte, n int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return sum, 0, fmt.Errorf("open image: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return sum, 0, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return sum, 0, fmt.Errorf("create %s: %w", filepath.Base(dst), err)
	}
	defer func() {
		if out != nil {
			out.Close()
		}
	}()
	h := sha256.New()
	progress := log.Progress("copy "+what, st.Size())
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return sum, n, fmt.Errorf("copy %s cancelled: %w", what, err)
		}
		k, rerr := in.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := out.Write(buf[:k]); err != nil {
				return sum, n, fmt.Errorf("write %s: %w", what, err)
			}
			n += int64(k)
			progress.Add(int64(k))
		}
		if rerr == io.EOF {
			break
		} else if rerr != nil {
			return sum, n, fmt.Errorf("read image: %w", rerr)
		}
	}
	err = out.Close()
	out = nil
	if err != nil {
		return sum, n, fmt.Errorf("close %s: %w", what, err)
	}
	progress.Done()
	copy(sum[:], h.Sum(nil))
	return sum, n, nil
}

func writeSmall(path string, data []byte) ([32]byte, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return [32]byte{}, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return [32]byte{}, fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return sha256.Sum256(data), nil
}

// writeManifest writes dir/MANIFEST in `sha256sum` format, sorted by path.
func writeManifest(dir string, sums map[string][32]byte) error {
	_, err := writeSmall(filepath.Join(dir, ManifestName), manifestText(sums))
	return err
}

// samePublished reports whether the build directory dir exists with a
// MANIFEST listing exactly sums.
func samePublished(dir string, sums map[string][32]byte) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read the manifest of %s: %w", filepath.Base(dir), err)
	}
	return bytes.Equal(b, manifestText(sums)), nil
}

// manifestText is the MANIFEST listing sums.
func manifestText(sums map[string][32]byte) []byte {
	paths := make([]string, 0, len(sums))
	for p := range sums {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	for _, p := range paths {
		s := sums[p]
		b.WriteString(hex.EncodeToString(s[:]) + "  " + p + "\n")
	}
	return []byte(b.String())
}

// dedupIndex finds the files of a published build by sha256, from its
// MANIFEST (read once).
type dedupIndex struct {
	build Build
	bySum map[[32]byte][]string // sha256 → paths relative to the build, sorted
}

// loadDedup reads the MANIFEST of build b; nil when it cannot be read.
func loadDedup(b Build) *dedupIndex {
	m, err := readManifest(filepath.Join(b.Dir, ManifestName))
	if err != nil {
		return nil
	}
	d := &dedupIndex{build: b, bySum: make(map[[32]byte][]string, len(m))}
	for name, s := range m {
		if strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
			continue
		}
		d.bySum[s] = append(d.bySum[s], name)
	}
	for _, names := range d.bySum {
		sort.Strings(names)
	}
	return d
}

// link replaces the staged file path by a hard link to a file of the build
// with the same sha256 and size, and reports whether it did. Failing that,
// the copy stays: dedup only saves space. A nil index links nothing; a nil
// log logs nothing.
func (d *dedupIndex) link(path string, sum [32]byte, size int64, log *targets.Log) bool {
	if d == nil {
		return false
	}
	for _, name := range d.bySum[sum] {
		old := filepath.Join(d.build.Dir, filepath.FromSlash(name))
		st, err := os.Lstat(old)
		if err != nil || !st.Mode().IsRegular() || st.Size() != size {
			continue
		}
		tmp := path + ".dedup"
		if err := os.Link(old, tmp); err != nil {
			if log != nil {
				log.Printf("dedup: cannot hard-link to build %s: %v", d.build.ID, err)
			}
			return false
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return false
		}
		if log != nil {
			log.Printf("dedup: %s is unchanged since build %s: hard-linked to its copy", filepath.Base(path), d.build.ID)
		}
		return true
	}
	return false
}

// syncFile fsyncs the file at path.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Base(path), err)
	}
	return nil
}

// moveLink points seriesDir/name at build id unless it already points at a
// newer build (CompareIDs). The link is replaced atomically: a symlink under
// a temporary name renamed over it. It returns whether it moved and the
// build it pointed at before.
func moveLink(seriesDir, name, id string) (moved bool, old string, err error) {
	path := filepath.Join(seriesDir, name)
	if t, err := os.Readlink(path); err == nil {
		old = t
		if !strings.Contains(t, "/") && CompareIDs(t, id) >= 0 {
			if _, err := os.Stat(filepath.Join(seriesDir, t)); err == nil {
				return false, old, nil
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, "", err
	}
	tmp, err := tempName(seriesDir, ".link-"+name+"-")
	if err != nil {
		return false, old, err
	}
	if err := os.Symlink(id, tmp); err != nil {
		return false, old, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, old, err
	}
	return true, old, nil
}

// tempName returns an unused name in dir starting with prefix.
func tempName(dir, prefix string) (string, error) {
	f, err := os.CreateTemp(dir, prefix)
	if err != nil {
		return "", err
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", err
	}
	return name, nil
}
