package download

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload/internal/credfile"
	"github.com/cloudupload/cloudupload/internal/testutil"
	"github.com/cloudupload/cloudupload/targets/mirror"
)

const (
	eulaText = "<p>ACME end-user licence</p>\n<p>Do not redistribute. <script>alert(1)</script> <a href=\"javascript:x\">x</a></p>"
	dataText = "<p>Data licence: we record who downloads.</p>"
)

// buildInfoProt is the BUILD-INFO.txt of prot/: a licence for images, an
// open README, a group-only file, a licence collecting user data, and
// nothing for the rest.
var buildInfoProt = `Format-Version: 0.5

Files-Pattern: *.img
License-Type: protected
Theme: ACME
License-Text: <p>ACME end-user licence</p>
 <p>Do not redistribute. <script>alert(1)</script> <a href="javascript:x">x</a></p>

Files-Pattern: README
License-Type: open

Files-Pattern: team.bin
License-Type: protected
Auth-Groups: team-x

Files-Pattern: data.tar
License-Type: protected
Collect-User-Data: yes
License-Text: <p>Data licence: we record who downloads.</p>
`

// fixture is a mirror tree on disk, shaped as the mirror target publishes
// it, with everything the server must refuse, and a server on loopback.
type fixture struct {
	dir, outside string
	h            *Handler
	srv          *httptest.Server
	access, log  *testutil.SyncBuffer
	userData     string
	alice, bob   string // tokens
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t testing.TB, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func makeTree(t testing.TB) (dir, outside string) {
	base := t.TempDir()
	dir, outside = filepath.Join(base, "tree"), filepath.Join(base, "outside")
	write(t, filepath.Join(outside, "secret.txt"), "outside secret")
	write(t, filepath.Join(dir, "open/a.img"), "0123456789abcdef")
	write(t, filepath.Join(dir, "open/notes.txt"), "plain notes\n")
	write(t, filepath.Join(dir, "open/<b>&\"x y?#.img"), "odd name")
	write(t, filepath.Join(dir, "open/.lock"), "")
	write(t, filepath.Join(dir, "open/.staging-1-abc/secret.img"), "staged")
	write(t, filepath.Join(dir, "prot/BUILD-INFO.txt"), buildInfoProt)
	for _, f := range []string{"one.img", "two.img", "README", "team.bin", "unmatched.dat", "data.tar"} {
		write(t, filepath.Join(dir, "prot", f), "content of "+f)
	}
	write(t, filepath.Join(dir, "bad/BUILD-INFO.txt"), "Files-Pattern: *\nLicense-Type: open\n")
	write(t, filepath.Join(dir, "bad/file.img"), "bad dir file")
	write(t, filepath.Join(dir, "kernel/20261101T000000Z/vmlinux.img"), "old build")
	write(t, filepath.Join(dir, "kernel/20261102T000000Z/vmlinux.img"), "new build")
	symlink(t, "20261102T000000Z", filepath.Join(dir, "kernel/latest"))
	symlink(t, "../outside", filepath.Join(dir, "escape"))
	symlink(t, "../../outside/secret.txt", filepath.Join(dir, "open/escape.txt"))
	symlink(t, filepath.Join(outside, "secret.txt"), filepath.Join(dir, "open/abs.txt"))
	symlink(t, ".lock", filepath.Join(dir, "open/lock-link"))
	symlink(t, "../prot/BUILD-INFO.txt", filepath.Join(dir, "open/bi.txt"))
	symlink(t, "../prot/one.img", filepath.Join(dir, "open/prot-link.img"))
	symlink(t, "loop", filepath.Join(dir, "open/loop"))
	return dir, outside
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	f := &fixture{access: &testutil.SyncBuffer{}, log: &testutil.SyncBuffer{}, alice: "alice-secret-token", bob: "bob-secret-token"}
	f.dir, f.outside = makeTree(t)
	users := filepath.Join(t.TempDir(), "users")
	write(t, users, "alice sha256="+credfile.HashToken(f.alice)+" groups=team-x,team-y\nbob sha256="+credfile.HashToken(f.bob)+"\n")
	rl, err := credfile.NewReloader(users)
	if err != nil {
		t.Fatal(err)
	}
	f.userData = filepath.Join(t.TempDir(), "user-data.log")
	ud, err := os.OpenFile(f.userData, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ud.Close() })
	cfg := Config{
		Trees:      []mirror.Tree{{Name: "t", Dir: f.dir}},
		Users:      rl,
		TrustProxy: netip.MustParsePrefix("127.0.0.1/32"),
		CookieKey:  []byte(strings.Repeat("k", 32)),
		UserData:   ud,
		AccessLog:  f.access,
		Log:        slog.New(slog.NewTextHandler(f.log, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	f.h, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(func() { f.srv.Close(); f.h.Close() })
	return f
}

// get sends a request with headers given as "Name: value" strings.
func (f *fixture) do(t testing.TB, method, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func httpRequest() *http.Request {
	r, _ := http.NewRequest("GET", "http://127.0.0.1/", nil)
	return r
}
