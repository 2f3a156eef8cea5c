package download

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzResolve: whatever the request path, what resolve returns is inside
// the tree once every link is followed by the kernel, has no hidden
// segment and is not a BUILD-INFO.txt.
func FuzzResolve(f *testing.F) {
	dir, _ := makeTree(f)
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		f.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer root.Close()
	for _, s := range []string{"open/a.img", "escape/secret.txt", "open/../prot/one.img", "kernel/latest/vmlinux.img",
		"open/escape.txt", "open/.lock", "open/lock-link", "open/bi.txt", "../outside", "open/loop", "open/prot-link.img", "./open//a.img"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		res, err := resolve(root, strings.Split(p, "/"))
		if err != nil {
			return
		}
		if res.rel != "." {
			for _, seg := range strings.Split(res.rel, "/") {
				if seg == "" || strings.HasPrefix(seg, ".") {
					t.Fatalf("%q resolved to %q", p, res.rel)
				}
			}
		}
		if filepath.Base(res.rel) == "BUILD-INFO.txt" {
			t.Fatalf("%q resolved to a BUILD-INFO.txt", p)
		}
		real, err := filepath.EvalSymlinks(filepath.Join(dir, res.rel))
		if err != nil {
			t.Fatalf("%q resolved to %q, which the kernel cannot: %v", p, res.rel, err)
		}
		if real != realDir && !strings.HasPrefix(real, realDir+"/") {
			t.Fatalf("%q resolved to %q outside the tree", p, real)
		}
	})
}

// FuzzCookie: a cookie value never panics the reader, and only the
// payload the handler signed gives digests (a fuzzer cannot forge the
// HMAC; it can only re-encode the signed payload).
func FuzzCookie(f *testing.F) {
	h := &Handler{cfg: Config{CookieKey: []byte(strings.Repeat("k", 32))}}
	now := time.Unix(1_800_000_000, 0)
	good := h.licenceCookie(httpRequest(), nil, []string{LicenceDigest("a"), LicenceDigest("b")}, now).Value
	if got := h.readCookie(good, now); len(got) != 2 {
		f.Fatalf("own cookie gave %d digests", len(got))
	}
	if got := h.readCookie(good, now.Add(cookieLife+time.Hour)); got != nil {
		f.Fatal("an expired cookie counts")
	}
	payload := func(v string) string {
		p, _, _ := strings.Cut(v, ".")
		b, _ := base64.RawURLEncoding.DecodeString(p)
		return string(b)
	}
	f.Add(good)
	f.Add("")
	f.Add("a.b")
	f.Add(good[:len(good)-2])
	f.Fuzz(func(t *testing.T, v string) {
		if got := h.readCookie(v, now); len(got) > 0 && payload(v) != payload(good) {
			t.Fatalf("unsigned value %q accepted", v)
		}
	})
}
