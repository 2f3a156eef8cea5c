package download

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sync"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload/buildinfo"
)

// maxCached bounds the parsed BUILD-INFO.txt files kept in memory; the
// cache is emptied when it is full (a re-parse is cheap, a bound is not
// optional).
const maxCached = 4096

// fileKey identifies one version of a BUILD-INFO.txt: a rewrite (even one
// that restores the mtime) changes the inode or the ctime.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func keyOf(fi fs.FileInfo) fileKey {
	k := fileKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.dev, k.ino = uint64(st.Dev), st.Ino
		k.ctime = time.Unix(st.Ctim.Unix()).UnixNano()
	}
	return k
}

// dirPolicy is what a directory's BUILD-INFO.txt says, parsed once per
// version of the file.
type dirPolicy struct {
	key fileKey
	bi  *buildinfo.BuildInfo // nil when the directory has none (open)
	err error                // it does not parse: the whole directory is denied
}

type policyCache struct {
	log *slog.Logger // told once per version of a file that does not parse
	mu  sync.Mutex
	m   map[string]*dirPolicy // key: tree name + "\x00" + directory
}

// policy returns the policy of directory dir of a tree: one Stat of its
// BUILD-INFO.txt, and a read only when that file changed.
func (c *policyCache) policy(tree string, root *os.Root, dir string) *dirPolicy {
	name := path.Join(dir, buildinfo.FileName)
	fi, err := root.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return &dirPolicy{}
	}
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", name)
	}
	if err != nil {
		return &dirPolicy{err: err}
	}
	k := keyOf(fi)
	id := tree + "\x00" + dir
	c.mu.Lock()
	p := c.m[id]
	c.mu.Unlock()
	if p != nil && p.key == k {
		return p
	}
	p = &dirPolicy{key: k}
	p.bi, p.err = readBuildInfo(root, name)
	if p.err != nil {
		p.err = fmt.Errorf("%s/%s: %w", tree, name, p.err)
		if c.log != nil {
			c.log.Warn("directory denied: its BUILD-INFO.txt does not parse", "tree", tree, "dir", dir, "err", p.err)
		}
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]*dirPolicy)
	}
	c.m[id] = p
	c.mu.Unlock()
	return p
}

func readBuildInfo(root *os.Root, name string) (*buildinfo.BuildInfo, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, buildinfo.MaxSize+1))
	if err != nil {
		return nil, err
	}
	return buildinfo.Parse(data)
}

// Licence is one licence text a file needs accepted.
type Licence struct {
	Digest      string // hex SHA-256 of the text: what an acceptance names
	Text        string // as written in BUILD-INFO.txt (HTML)
	Theme       string
	CollectData bool // Collect-User-Data: yes
}

// LicenceDigest returns the digest that identifies a licence text.
func LicenceDigest(text string) string {
	s := sha256.Sum256([]byte(text))
	return hex.EncodeToString(s[:])
}

// rule is what a file needs: nothing (open), or licences to accept and
// groups (one per protected block with Auth-Groups) to belong to.
type rule struct {
	denied   string     // non-empty: refused outright, why (for the log)
	licences []Licence  // every one must be accepted
	groups   [][]string // for each: the user must be in one of them
}

func (r rule) open() bool { return r.denied == "" && len(r.licences) == 0 && len(r.groups) == 0 }

// ruleFor applies a directory's policy to the file name in it ("" for the
// listing, which is open when no block matches it explicitly).
func ruleFor(p *dirPolicy, name string) rule {
	if p.err != nil {
		return rule{denied: "BUILD-INFO.txt does not parse: " + p.err.Error()}
	}
	if p.bi == nil {
		return rule{}
	}
	blocks := p.bi.Match(name)
	if len(blocks) == 0 {
		if name == "" {
			return rule{}
		}
		return rule{denied: "no block of BUILD-INFO.txt matches it"}
	}
	var r rule
	seen := map[string]bool{}
	for _, b := range blocks {
		if b.IsOpen() {
			continue
		}
		text, _ := b.Get(buildinfo.LicenseText)
		groups := b.Groups()
		if text == "" && len(groups) == 0 {
			return rule{denied: fmt.Sprintf("the protected block of line %d has neither License-Text nor Auth-Groups", b.Line)}
		}
		if len(groups) > 0 {
			r.groups = append(r.groups, groups)
		}
		if text != "" {
			d := LicenceDigest(text)
			if seen[d] {
				continue
			}
			seen[d] = true
			theme, _ := b.Get(buildinfo.Theme)
			collect, _ := b.Get(buildinfo.CollectUserData)
			r.licences = append(r.licences, Licence{Digest: d, Text: text, Theme: theme, CollectData: collect == "yes"})
		}
	}
	return r
}
