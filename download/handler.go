package download

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload/internal/credfile"
	"github.com/cloudupload/cloudupload/targets/mirror"
)

// SyncWriter is an append-only file: Write then Sync makes a record durable.
type SyncWriter interface {
	io.Writer
	Sync() error
}

// Config is what a Handler serves and how it authenticates.
type Config struct {
	Trees []mirror.Tree // served at /<Name>/

	// Users authenticates bearer tokens and HTTP Basic passwords; nil
	// means no user can authenticate that way.
	Users *credfile.Reloader
	// TrustProxy is the address (or network) of an SSO proxy whose
	// UserHeader and GroupsHeader are believed; the zero value trusts no
	// one. The headers default to oauth2-proxy's X-Forwarded-User and
	// X-Forwarded-Groups.
	TrustProxy   netip.Prefix
	UserHeader   string
	GroupsHeader string

	// CookieKey signs the licence cookie and the Accept forms; at least
	// 32 bytes. A new key forgets every acceptance.
	CookieKey []byte
	// UserData receives one JSON line per accepted Collect-User-Data
	// licence, synced before the download starts; nil refuses such
	// licences.
	UserData SyncWriter
	// ThemeCSS is the operator's stylesheet added to every page, e.g.
	// rules for body.theme-<name> (a licence page's Theme); trusted.
	ThemeCSS string
	// AccessLog receives one line per request (see accesslog.go); nil
	// logs none.
	AccessLog io.Writer
	Log       *slog.Logger
}

// Handler serves mirror trees: listings, files, licence pages. It is an
// http.Handler safe for concurrent use.
type Handler struct {
	cfg      Config
	trees    map[string]*tree
	names    []string
	policies policyCache
	udMu     sync.Mutex
	alMu     sync.Mutex
}

type tree struct {
	name string
	root *os.Root
}

// New opens the trees (each must be an existing directory) and returns the
// handler; Close releases them.
func New(cfg Config) (*Handler, error) {
	if len(cfg.CookieKey) < 32 {
		return nil, errors.New("the cookie key must have at least 32 bytes")
	}
	if cfg.UserHeader == "" {
		cfg.UserHeader = "X-Forwarded-User"
	}
	if cfg.GroupsHeader == "" {
		cfg.GroupsHeader = "X-Forwarded-Groups"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, trees: map[string]*tree{}, policies: policyCache{log: cfg.Log}}
	for _, t := range cfg.Trees {
		if _, dup := h.trees[t.Name]; dup {
			h.Close()
			return nil, fmt.Errorf("mirror %s is configured twice", t.Name)
		}
		root, err := os.OpenRoot(t.Dir)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("mirror %s: %w", t.Name, err)
		}
		h.trees[t.Name] = &tree{name: t.Name, root: root}
		h.names = append(h.names, t.Name)
	}
	return h, nil
}

// Close releases the trees.
func (h *Handler) Close() error {
	for _, t := range h.trees {
		t.root.Close()
	}
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lw := &logWriter{ResponseWriter: w, status: http.StatusOK, start: time.Now(), licence: "-"}
	defer h.logAccess(lw, r)
	w = lw
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		httpError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	p := r.URL.Path
	if !strings.HasPrefix(p, "/") {
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	if p == "/" {
		if r.Method == http.MethodPost {
			httpError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		h.serveIndex(w, r)
		return
	}
	segs := strings.Split(p[1:], "/")
	t := h.trees[segs[0]]
	if t == nil {
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	if len(segs) == 1 {
		redirectSlash(w, r)
		return
	}
	res, err := resolve(t.root, segs[1:])
	if err != nil {
		if !errors.Is(err, errRefused) && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			h.cfg.Log.Warn("resolve", "tree", t.name, "path", p, "err", err)
		}
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	id := h.identify(r)
	lw.user = id.user
	if res.info.IsDir() {
		if !strings.HasSuffix(p, "/") {
			redirectSlash(w, r)
			return
		}
		if r.Method == http.MethodPost {
			h.acceptForm(w, r, lw, id, t, res.rel, "")
			return
		}
		if !h.authorize(w, r, lw, id, t, res.rel, "") {
			return
		}
		h.serveListing(w, r, t, res.rel)
		return
	}
	if strings.HasSuffix(p, "/") {
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	dir, name := path.Split(res.rel)
	dir = path.Clean("./" + dir)
	if r.Method == http.MethodPost {
		h.acceptForm(w, r, lw, id, t, dir, name)
		return
	}
	if !h.authorize(w, r, lw, id, t, dir, name) {
		return
	}
	h.serveFile(w, r, t, res)
}

// authorize decides a request for name in dir ("" for the listing of
// dir) and answers it when it is not allowed: 403 when denied, 401 when a
// group is required and nobody (or a wrong token) is authenticated, the
// licence page (403) when a licence is not accepted.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, lw *logWriter, id identity, t *tree, dir, name string) bool {
	rule := ruleFor(h.policies.policy(t.name, t.root, dir), name)
	if rule.open() {
		lw.licence = "open"
		return true
	}
	if rule.denied != "" {
		lw.licence = "denied"
		httpError(w, http.StatusForbidden, "forbidden: this file is not published for download")
		return false
	}
	if id.bad {
		lw.licence = "bad-credentials"
		w.Header().Set("WWW-Authenticate", `Basic realm="cloudupload", charset="UTF-8"`)
		httpError(w, http.StatusUnauthorized, "unauthorized: the token is not valid")
		return false
	}
	for _, groups := range rule.groups {
		if id.inAny(groups) {
			continue
		}
		lw.licence = "groups"
		if id.user == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="cloudupload", charset="UTF-8"`)
			httpError(w, http.StatusUnauthorized, "unauthorized: this file is for members of "+strings.Join(groups, " or ")+"; log in or send a token")
			return false
		}
		httpError(w, http.StatusForbidden, "forbidden: "+id.user+" is not a member of "+strings.Join(groups, " or "))
		return false
	}
	acc := h.acceptances(r)
	var missing []Licence
	var records []userData
	how := "cookie"
	for _, l := range rule.licences {
		if acc.explicit[l.Digest] {
			how = "explicit"
			if l.CollectData {
				nm, em, err := checkUserData(r.Header.Get(NameHeader), r.Header.Get(EmailHeader))
				if err != nil {
					lw.licence = "missing-user-data"
					httpError(w, http.StatusForbidden, "forbidden: this licence collects user data: send "+NameHeader+" and "+EmailHeader+" ("+err.Error()+")")
					return false
				}
				records = append(records, h.userRecord(r, id, l, nm, em))
			}
			continue
		}
		if !acc.has(l.Digest) {
			missing = append(missing, l)
		}
	}
	if len(missing) > 0 {
		lw.licence = "required"
		h.licencePage(w, r, missing, "", http.StatusForbidden)
		return false
	}
	if len(records) > 0 {
		if err := h.recordUserData(records); err != nil {
			h.cfg.Log.Error("user data not recorded", "err", err)
			httpError(w, http.StatusServiceUnavailable, "the acceptance could not be recorded; try again later")
			return false
		}
	}
	lw.licence = "accepted:" + how
	if len(rule.licences) == 0 {
		lw.licence = "groups-ok"
	}
	w.Header().Set("Cache-Control", "private")
	return true
}

func (h *Handler) userRecord(r *http.Request, id identity, l Licence, name, email string) userData {
	return userData{
		Time: time.Now().UTC().Format(time.RFC3339), Path: r.URL.Path, Licence: l.Digest,
		Name: name, Email: email, User: id.user, Remote: r.RemoteAddr,
	}
}

// mimeTypes completes the system's table for what mirror trees hold.
var mimeTypes = map[string]string{
	".img": "application/octet-stream", ".iso": "application/x-iso9660-image",
	".qcow2": "application/octet-stream", ".raw": "application/octet-stream",
	".vhd": "application/octet-stream", ".vmdk": "application/octet-stream",
	".xz": "application/x-xz", ".zst": "application/zstd", ".gz": "application/gzip",
	".bz2": "application/x-bzip2", ".rpm": "application/x-rpm", ".deb": "application/vnd.debian.binary-package",
	".log": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
}

func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, t *tree, res resolved) {
	f, err := t.root.Open(res.rel)
	if err != nil {
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	hd := w.Header()
	ext := strings.ToLower(path.Ext(res.rel))
	ct := mimeTypes[ext]
	if ct == "" {
		ct = mime.TypeByExtension(ext)
	}
	if ct != "" {
		hd.Set("Content-Type", ct)
	}
	k := keyOf(fi)
	hd.Set("ETag", fmt.Sprintf(`"%x-%x-%x"`, k.ino, k.size, k.mtime))
	// A published HTML file must not run in this origin.
	hd.Set("Content-Security-Policy", "sandbox")
	http.ServeContent(w, r, path.Base(res.rel), fi.ModTime(), f)
}

func redirectSlash(w http.ResponseWriter, r *http.Request) {
	u := r.URL.EscapedPath() + "/"
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	http.Redirect(w, r, u, http.StatusMovedPermanently)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Del("ETag")
	w.Header().Del("Last-Modified")
	http.Error(w, msg, code)
}

// secure reports whether the client reached us over TLS (directly, or
// through the trusted proxy saying so).
func (h *Handler) secure(r *http.Request) bool {
	return r.TLS != nil || (h.fromProxy(r) && r.Header.Get("X-Forwarded-Proto") == "https")
}
