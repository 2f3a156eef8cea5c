package mirror

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/buildinfo"
	"github.com/cloudupload/cloudupload/targets"
)

// tarSuffixes are the archive names "unpack" accepts; the compression is
// the one uploader/image.OpenStream decodes from the same name.
var tarSuffixes = []string{".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tar.zstd", ".tzst"}

// IsTarName reports whether filename names a tar archive that unpack can
// read.
func IsTarName(filename string) bool {
	name := strings.ToLower(filename)
	for _, s := range tarSuffixes {
		if strings.HasSuffix(name, s) && len(name) > len(s) {
			return true
		}
	}
	return false
}

// Limits on an archive: the number of entries (every entry costs some
// memory until the MANIFEST is written) and the length of a path in it.
const (
	MaxArchiveEntries = 100_000
	maxArchivePath    = 4096
	maxSegment        = 255
)

// PublishArchive publishes the tree of the tar archive r (already
// decompressed; name is the archive's file name, for messages) as the build
// described by o: below <build_id>/[<area>/], with the MANIFEST listing every
// regular file, files unchanged since the newest build hard-linked to its
// copies, RESULT, RETENTION and the links as Publish does. It returns
// "<tree>:<series>/<build_id>[/<area>]".
//
// Every entry is checked before it is written, and everything is written
// into the hidden staging directory, so a refused entry or a failure leaves
// nothing visible. Refused, with the entry's name: absolute paths, ".."
// segments, hidden names (a leading '.'), names with control characters or
// not UTF-8, entries below a symlink or a file, an entry given twice, hard
// links, devices, FIFOs and any type other than file, directory and
// symlink, symlinks that are absolute or reach outside the archive's tree,
// at the root of a build without area the names the target writes itself
// (MANIFEST, RESULT, RETENTION, KEEP), files holding more data than the
// archive (sparse entries), a BUILD-INFO.txt that does not parse (the error
// names the entry and the line). Symlinks are published but are not in the
// MANIFEST (sha256sum -c would follow them).
func PublishArchive(ctx context.Context, o *Options, r io.Reader, name string, log *targets.Log) (string, error) {
	if log == nil {
		log = targets.NewLog(io.Discard)
	}
	return publish(ctx, o, log, func(staging string, prev *dedupIndex) (*staged, error) {
		u := &unpacker{ctx: ctx, name: name, area: o.Area, root: staging, prev: prev, log: log,
			kinds: map[string]byte{}, sums: map[string][32]byte{}, infos: map[string]*buildinfo.BuildInfo{},
			buf: make([]byte, 1<<20)}
		if o.Area != "" {
			u.root = filepath.Join(staging, o.Area)
			if err := os.Mkdir(u.root, 0o755); err != nil {
				return nil, err
			}
			u.dirs = append(u.dirs, u.root)
		}
		if err := u.run(r); err != nil {
			return nil, err
		}
		if o.BuildInfo != nil {
			if err := writeBuildInfo(staging, o.Area, o.BuildInfo, u.sums, log); err != nil {
				return nil, err
			}
			bi, _ := buildinfo.Parse(o.BuildInfo)
			u.infos[""] = bi
		}
		u.warnUnmatched()
		return &staged{sums: u.sums, rel: o.Area, size: u.written, dirs: u.dirs}, nil
	})
}

// Kinds of the entries an unpacker has written.
const (
	kindDir  = 'd'
	kindFile = 'f'
	kindLink = 'l'
)

// unpacker writes one archive's tree below root.
type unpacker struct {
	ctx  context.Context
	name string // the archive's file name
	area string // "" or the area: prefix of MANIFEST paths
	root string // where the archive's tree goes
	prev *dedupIndex
	log  *targets.Log

	in      *countingReader
	kinds   map[string]byte                 // archive path → kind
	sums    map[string][32]byte             // MANIFEST: build path → sha256
	infos   map[string]*buildinfo.BuildInfo // archive directory → its BUILD-INFO.txt
	dirs    []string                        // directories made, to fsync
	unsync  []string                        // files written and not deduped, to fsync
	written int64                           // bytes of regular files
	files   int
	links   int
	deduped int
	buf     []byte
}

// countingReader counts the bytes of the (decompressed) archive read so far.
type countingReader struct {
	r        io.Reader
	n        int64
	progress *targets.Progress
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.progress.Add(int64(n))
	return n, err
}

func (u *unpacker) refuse(entry, format string, args ...any) error {
	return cloudupload.Errorf(cloudupload.EINVALID, "archive %s: entry %q %s", u.name, entry, fmt.Sprintf(format, args...))
}

func (u *unpacker) run(r io.Reader) error {
	u.in = &countingReader{r: r, progress: u.log.Progress("unpack "+u.name, 0)}
	tr := tar.NewReader(u.in)
	entries := 0
	for {
		if err := u.ctx.Err(); err != nil {
			return fmt.Errorf("unpack cancelled: %w", err)
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if cerr := u.ctx.Err(); cerr != nil {
				return fmt.Errorf("unpack cancelled: %w", cerr)
			}
			return cloudupload.Errorf(cloudupload.EINVALID, "archive %s is not a readable tar archive: %v", u.name, err)
		}
		if entries++; entries > MaxArchiveEntries {
			return cloudupload.Errorf(cloudupload.EINVALID, "archive %s has more than %d entries", u.name, MaxArchiveEntries)
		}
		if err := u.entry(h, tr); err != nil {
			return err
		}
	}
	// Read the stream to its end, so that a decompressor checks its
	// trailer (xz's and zstd's checksums come last).
	if _, err := io.Copy(io.Discard, u.in); err != nil {
		if cerr := u.ctx.Err(); cerr != nil {
			return fmt.Errorf("unpack cancelled: %w", cerr)
		}
		return cloudupload.Errorf(cloudupload.EINVALID, "archive %s: %v", u.name, err)
	}
	u.in.progress.Done()
	if u.files == 0 {
		return cloudupload.Errorf(cloudupload.EINVALID, "archive %s holds no file", u.name)
	}
	if err := u.syncFiles(); err != nil {
		return err
	}
	u.log.Printf("unpacked %d files (%s), %d directories, %d symlinks; %d files unchanged since the previous build (hard-linked)",
		u.files, targets.MiB(u.written), len(u.dirs), u.links, u.deduped)
	return nil
}

// entry checks and writes one archive entry.
func (u *unpacker) entry(h *tar.Header, tr *tar.Reader) error {
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil // pax global header: metadata only
	}
	rel, err := u.cleanName(h.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		if h.Typeflag == tar.TypeDir {
			return nil // "./": the root itself
		}
		return u.refuse(h.Name, "has no name")
	}
	// Kinds that never become files, refused before anything is made.
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
	case tar.TypeLink:
		return u.refuse(h.Name, "is a hard link (to %q): a build holds only files, directories and symlinks", h.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return u.refuse(h.Name, "is a device: a build holds only files, directories and symlinks")
	case tar.TypeFifo:
		return u.refuse(h.Name, "is a FIFO: a build holds only files, directories and symlinks")
	default:
		return u.refuse(h.Name, "has type %q (%s): a build holds only files, directories and symlinks", h.Typeflag, typeName(h.Typeflag))
	}
	if u.area == "" && !strings.Contains(rel, "/") && contains(reserved, rel) && rel != BuildInfoName {
		return u.refuse(h.Name, "takes a name the mirror target writes itself (%s); publish with \"area\" to keep it", rel)
	}
	if k, ok := u.kinds[rel]; ok {
		if k == kindDir && h.Typeflag == tar.TypeDir {
			return nil
		}
		return u.refuse(h.Name, "appears twice in the archive")
	}
	if err := u.parents(h.Name, rel); err != nil {
		return err
	}
	dst := filepath.Join(u.root, filepath.FromSlash(rel))
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
		u.kinds[rel] = kindDir
		u.dirs = append(u.dirs, dst)
	case tar.TypeSymlink:
		if err := u.checkLink(h.Name, rel, h.Linkname); err != nil {
			return err
		}
		if err := os.Symlink(h.Linkname, dst); err != nil {
			return err
		}
		u.kinds[rel] = kindLink
		u.links++
	case tar.TypeReg:
		if path.Base(rel) == BuildInfoName {
			return u.buildInfo(h, tr, rel, dst)
		}
		if err := u.file(h, tr, rel, dst); err != nil {
			return err
		}
	}
	return nil
}

// cleanName returns the entry's path relative to the archive's root ("" for
// the root), or why it is refused.
func (u *unpacker) cleanName(name string) (string, error) {
	n := name
	for strings.HasPrefix(n, "./") {
		n = n[2:]
	}
	n = strings.TrimSuffix(n, "/")
	switch {
	case n == "" || n == ".":
		return "", nil
	case strings.HasPrefix(n, "/"):
		return "", u.refuse(name, "is an absolute path")
	case len(n) > maxArchivePath:
		return "", u.refuse(name[:64]+"…", "is longer than %d bytes", maxArchivePath)
	case !utf8.ValidString(n):
		return "", u.refuse(name, "is not valid UTF-8")
	}
	for _, seg := range strings.Split(n, "/") {
		switch {
		case seg == "..":
			return "", u.refuse(name, "leaves the build ('..')")
		case seg == "" || seg == ".":
			return "", u.refuse(name, "has an empty or '.' segment")
		case strings.HasPrefix(seg, "."):
			return "", u.refuse(name, "is hidden (%q starts with '.'): the download server never serves hidden names", seg)
		case len(seg) > maxSegment:
			return "", u.refuse(name, "has a name longer than %d bytes", maxSegment)
		case strings.ContainsAny(seg, "\\"):
			return "", u.refuse(name, "contains a backslash")
		}
		for _, r := range seg {
			if r < 0x20 || r == 0x7f {
				return "", u.refuse(name, "contains a control character")
			}
		}
	}
	return n, nil
}

// parents makes the directories above rel that the archive did not list,
// and refuses an entry below a file or a symlink (writing through a symlink
// could leave the build).
func (u *unpacker) parents(name, rel string) error {
	dir := path.Dir(rel)
	if dir == "." {
		return nil
	}
	segs := strings.Split(dir, "/")
	for i := range segs {
		p := strings.Join(segs[:i+1], "/")
		switch u.kinds[p] {
		case kindDir:
			continue
		case kindLink:
			return u.refuse(name, "lies below the symlink %q", p)
		case kindFile:
			return u.refuse(name, "lies below the file %q", p)
		}
		d := filepath.Join(u.root, filepath.FromSlash(p))
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		u.kinds[p] = kindDir
		u.dirs = append(u.dirs, d)
	}
	return nil
}

// checkLink refuses a symlink at rel whose target is absolute or may reach
// outside the archive's tree. Only leading ".." segments are accepted: a
// ".." after a name could climb out through another symlink ("d/.." where d
// points at the root), and the kernel resolves a relative target from the
// link's own directory, which lies depth directories below the root.
func (u *unpacker) checkLink(name, rel, target string) error {
	switch {
	case target == "":
		return u.refuse(name, "is a symlink with no target")
	case strings.HasPrefix(target, "/"):
		return u.refuse(name, "is a symlink to the absolute path %q, which leaves the build", target)
	case len(target) > maxArchivePath || !utf8.ValidString(target) || strings.ContainsFunc(target, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return u.refuse(name, "is a symlink with a malformed target")
	}
	depth := strings.Count(rel, "/")
	up, down := 0, false
	for _, seg := range strings.Split(target, "/") {
		switch {
		case seg == "" || seg == ".":
		case seg == "..":
			if down {
				return u.refuse(name, "is a symlink to %q: '..' after a name may leave the build", target)
			}
			if up++; up > depth {
				return u.refuse(name, "is a symlink to %q, which leaves the build", target)
			}
		default:
			down = true
		}
	}
	return nil
}

// file writes a regular file, hashed on the way, and dedups it against the
// previous build.
func (u *unpacker) file(h *tar.Header, tr *tar.Reader, rel, dst string) error {
	mode := os.FileMode(0o644)
	if h.Mode&0o111 != 0 {
		mode = 0o755
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	hash := sha256.New()
	var n int64
	err = func() error {
		for {
			if err := u.ctx.Err(); err != nil {
				return fmt.Errorf("unpack cancelled: %w", err)
			}
			k, rerr := tr.Read(u.buf)
			if k > 0 {
				n += int64(k)
				// A regular entry's data is in the archive: more written
				// than read means a sparse entry expanding holes.
				if u.written+n > u.in.n {
					return u.refuse(h.Name, "holds more data than the archive (a sparse file?)")
				}
				hash.Write(u.buf[:k])
				if _, err := f.Write(u.buf[:k]); err != nil {
					return fmt.Errorf("write %s: %w", rel, err)
				}
			}
			if rerr == io.EOF {
				return nil
			}
			if rerr != nil {
				if cerr := u.ctx.Err(); cerr != nil {
					return fmt.Errorf("unpack cancelled: %w", cerr)
				}
				return cloudupload.Errorf(cloudupload.EINVALID, "archive %s: entry %q cannot be read: %v", u.name, h.Name, rerr)
			}
		}
	}()
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", rel, cerr)
	}
	if err != nil {
		return err
	}
	if !h.ModTime.IsZero() {
		os.Chtimes(dst, h.ModTime, h.ModTime)
	}
	var sum [32]byte
	hash.Sum(sum[:0])
	u.kinds[rel] = kindFile
	u.sums[path.Join(u.area, rel)] = sum
	u.written += n
	u.files++
	if u.prev.link(dst, sum, n, nil) {
		u.deduped++
	} else {
		u.unsync = append(u.unsync, dst)
	}
	return nil
}

// buildInfo reads a BUILD-INFO.txt entry, which must parse, and writes it.
func (u *unpacker) buildInfo(h *tar.Header, tr *tar.Reader, rel, dst string) error {
	if h.Size > buildinfo.MaxSize {
		return u.refuse(h.Name, "is larger than %d bytes", buildinfo.MaxSize)
	}
	text, err := io.ReadAll(io.LimitReader(tr, buildinfo.MaxSize+1))
	if err != nil {
		return cloudupload.Errorf(cloudupload.EINVALID, "archive %s: entry %q cannot be read: %v", u.name, h.Name, err)
	}
	bi, err := buildinfo.Parse(text)
	if err != nil {
		return u.refuse(h.Name, "does not parse: %v", err)
	}
	for _, w := range bi.Warnings() {
		u.log.Printf("%s: %s", rel, w)
	}
	sum, err := writeSmall(dst, text)
	if err != nil {
		return err
	}
	u.kinds[rel] = kindFile
	u.sums[path.Join(u.area, rel)] = sum
	u.infos[path.Dir(rel)] = bi
	u.written += int64(len(text))
	u.files++
	return nil
}

// warnUnmatched logs the files that a BUILD-INFO.txt of their directory
// does not cover: the download server will deny them.
func (u *unpacker) warnUnmatched() {
	var denied []string
	for rel, k := range u.kinds {
		dir := path.Dir(rel)
		if dir == "." {
			dir = ""
		}
		bi := u.infos[dir]
		if k != kindFile || bi == nil || path.Base(rel) == BuildInfoName {
			continue
		}
		if bi.Match(path.Base(rel)) == nil {
			denied = append(denied, rel)
		}
	}
	if len(denied) == 0 {
		return
	}
	sort.Strings(denied)
	more := ""
	if len(denied) > 5 {
		more = fmt.Sprintf(" and %d more", len(denied)-5)
		denied = denied[:5]
	}
	u.log.Printf("warning: the BUILD-INFO.txt of their directory has no block for %s%s: downloads of them will be denied", strings.Join(denied, ", "), more)
}

// syncFiles fsyncs the files written and not deduped, a few at a time (the
// file system can then commit them together).
func (u *unpacker) syncFiles() error {
	const workers = 8
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	work := make(chan string)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := syncFile(p); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, p := range u.unsync {
		work <- p
	}
	close(work)
	wg.Wait()
	return first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func typeName(t byte) string {
	switch t {
	case tar.TypeGNUSparse:
		return "GNU sparse file"
	case tar.TypeCont:
		return "contiguous file"
	case tar.TypeGNULongName, tar.TypeGNULongLink:
		return "GNU long name"
	}
	return "unknown"
}
