package download

import (
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func expect(t *testing.T, resp *http.Response, body string, code int, bodyHas string) {
	t.Helper()
	if resp.StatusCode != code {
		t.Errorf("%s %s: status %d, want %d; body %q", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, code, body)
	}
	if !strings.Contains(body, bodyHas) {
		t.Errorf("%s %s: body %q lacks %q", resp.Request.Method, resp.Request.URL.Path, body, bodyHas)
	}
}

func TestOpenFiles(t *testing.T) {
	f := newFixture(t, nil)
	resp, body := f.do(t, "GET", "/t/open/a.img")
	expect(t, resp, body, 200, "0123456789abcdef")
	etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if etag == "" || lm == "" || resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("headers: %v", resp.Header)
	}
	resp, body = f.do(t, "HEAD", "/t/open/a.img")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 16 {
		t.Errorf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}
	resp, body = f.do(t, "GET", "/t/open/a.img", "Range: bytes=2-5")
	expect(t, resp, body, 206, "2345")
	if body != "2345" || resp.Header.Get("Content-Range") != "bytes 2-5/16" {
		t.Errorf("range: %q %q", body, resp.Header.Get("Content-Range"))
	}
	resp, body = f.do(t, "GET", "/t/open/a.img", "Range: bytes=10-", "If-Range: "+etag)
	if resp.StatusCode != 206 || body != "abcdef" {
		t.Errorf("If-Range matching: %d %q", resp.StatusCode, body)
	}
	resp, body = f.do(t, "GET", "/t/open/a.img", "Range: bytes=10-", `If-Range: "stale"`)
	if resp.StatusCode != 200 || len(body) != 16 {
		t.Errorf("If-Range stale: %d %q, want the whole file", resp.StatusCode, body)
	}
	resp, _ = f.do(t, "GET", "/t/open/a.img", "If-None-Match: "+etag)
	if resp.StatusCode != 304 {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	resp, _ = f.do(t, "GET", "/t/open/a.img", "If-Modified-Since: "+lm)
	if resp.StatusCode != 304 {
		t.Errorf("If-Modified-Since: %d", resp.StatusCode)
	}
	resp, body = f.do(t, "GET", "/t/open/notes.txt")
	expect(t, resp, body, 200, "plain notes")
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("notes.txt type %q", ct)
	}
	resp, body = f.do(t, "GET", "/t/kernel/latest/vmlinux.img")
	expect(t, resp, body, 200, "new build")
	resp, _ = f.do(t, "GET", "/t/open")
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/t/open/" {
		t.Errorf("directory without slash: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = f.do(t, "DELETE", "/t/open/a.img")
	if resp.StatusCode != 405 {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
}

// rawGet sends a request line as written, so that ".." and "%2e" reach
// the server uncleaned.
func rawGet(t *testing.T, f *fixture, target string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	var code int
	fmt.Sscanf(b.String(), "HTTP/1.1 %d", &code)
	return code, b.String()
}

func TestRefused(t *testing.T) {
	f := newFixture(t, nil)
	for _, p := range []string{
		"/t/open/.lock", "/t/open/.staging-1-abc/secret.img", "/t/open/.staging-1-abc/",
		"/t/open/lock-link", "/t/escape/secret.txt", "/t/escape/", "/t/open/escape.txt", "/t/open/abs.txt",
		"/t/prot/BUILD-INFO.txt", "/t/open/bi.txt", "/t/open/loop", "/t/nope", "/x/", "/t/open/a.img/",
	} {
		resp, body := f.do(t, "GET", p)
		if resp.StatusCode != 404 || strings.Contains(body, "secret") || strings.Contains(body, "Format-Version") {
			t.Errorf("GET %s: %d %q, want 404", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/t/../outside/secret.txt", "/t/%2e%2e/outside/secret.txt", "/t/open/../../outside/secret.txt", "/t/open/%2e%2e/%2e%2e/outside/secret.txt"} {
		if code, resp := rawGet(t, f, p); code != 404 || strings.Contains(resp, "outside secret") {
			t.Errorf("raw GET %s: %d", p, code)
		}
	}
	// ".." inside the tree resolves, and the policy of the real directory applies.
	if code, _ := rawGet(t, f, "/t/open/../prot/one.img"); code != 403 {
		t.Errorf("/t/open/../prot/one.img: %d, want 403 (licence)", code)
	}
	// A link into a protected directory carries that directory's licence.
	resp, body := f.do(t, "GET", "/t/open/prot-link.img")
	expect(t, resp, body, 403, AcceptHeader)
	resp, body = f.do(t, "GET", "/t/open/?format=json")
	expect(t, resp, body, 200, "a.img")
	for _, hidden := range []string{".lock", ".staging", "escape.txt", "abs.txt", "lock-link", "bi.txt", "loop", "BUILD-INFO"} {
		if strings.Contains(body, hidden) {
			t.Errorf("listing shows %s:\n%s", hidden, body)
		}
	}
	resp, body = f.do(t, "GET", "/t/")
	expect(t, resp, body, 200, "kernel/")
	if strings.Contains(body, "escape") {
		t.Errorf("root listing shows the escaping link:\n%s", body)
	}
}

// TestSymlinkRace flips a link between a file in the tree and one outside
// while requests run: the outside content must never be served.
func TestSymlinkRace(t *testing.T) {
	f := newFixture(t, nil)
	link := filepath.Join(f.dir, "open/flip.txt")
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		targets := []string{"notes.txt", "../../outside/secret.txt", "../escape/secret.txt"}
		for i := 0; !stop.Load(); i++ {
			tmp := link + ".tmp"
			os.Remove(tmp)
			os.Symlink(targets[i%len(targets)], tmp)
			os.Rename(tmp, link)
		}
	}()
	served := 0
	for i := 0; i < 300; i++ {
		resp, body := f.do(t, "GET", "/t/open/flip.txt")
		if strings.Contains(body, "outside secret") {
			t.Fatalf("served a file outside the tree (status %d)", resp.StatusCode)
		}
		if resp.StatusCode == 200 {
			served++
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d of 300 requests served the in-tree target", served)
}

func TestListing(t *testing.T) {
	f := newFixture(t, nil)
	resp, body := f.do(t, "GET", "/t/open/", "Accept: text/html")
	expect(t, resp, body, 200, "<table>")
	if strings.Contains(body, `<b>&"x`) || !strings.Contains(body, "&lt;b&gt;&amp;&#34;x y?#.img") {
		t.Errorf("odd name not escaped in the page:\n%s", body)
	}
	if !strings.Contains(body, `href="./%3Cb%3E&amp;%22x%20y%3F%23.img"`) {
		t.Errorf("odd name not escaped in its link:\n%s", body)
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("no CSP on the page")
	}
	// the odd name downloads through the link the listing gave
	resp, body = f.do(t, "GET", "/t/open/%3Cb%3E&%22x%20y%3F%23.img")
	expect(t, resp, body, 200, "odd name")

	resp, body = f.do(t, "GET", "/t/kernel/")
	expect(t, resp, body, 200, `href="./latest/"`)
	if !strings.Contains(body, "→ 20261102T000000Z") {
		t.Errorf("latest not shown as a link:\n%s", body)
	}
	if i, j := strings.Index(body, "20261101T000000Z/"), strings.Index(body, "20261102T000000Z/"); i < 0 || j < i {
		t.Errorf("builds not sorted:\n%s", body)
	}

	for _, hdr := range []string{"Accept: application/json", "X-None: 1"} {
		path := "/t/prot/"
		if hdr == "X-None: 1" {
			path += "?format=json"
		}
		resp, body = f.do(t, "GET", path, hdr)
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: type %q", hdr, resp.Header.Get("Content-Type"))
		}
		var ls Listing
		if err := json.Unmarshal([]byte(body), &ls); err != nil {
			t.Fatal(err)
		}
		access := map[string]string{}
		for _, e := range ls.Entries {
			access[e.Name] = e.Access
		}
		want := map[string]string{"README": "open", "data.tar": "licence", "one.img": "licence", "two.img": "licence", "team.bin": "groups", "unmatched.dat": "denied"}
		if fmt.Sprint(access) != fmt.Sprint(want) {
			t.Errorf("access = %v, want %v", access, want)
		}
		if l, ok := ls.Licences[LicenceDigest(eulaText)]; !ok || l.Theme != "ACME" || l.Text != eulaText {
			t.Errorf("licences = %+v", ls.Licences)
		}
	}
	resp, body = f.do(t, "GET", "/", "Accept: application/json")
	expect(t, resp, body, 200, `"trees":["t"]`)
}

func TestProtectedForScripts(t *testing.T) {
	f := newFixture(t, nil)
	digest := LicenceDigest(eulaText)
	resp, body := f.do(t, "GET", "/t/prot/one.img")
	expect(t, resp, body, 403, AcceptHeader+": "+digest)
	if resp.Header.Get(AcceptHeader) != digest {
		t.Errorf("%s header = %q", AcceptHeader, resp.Header.Get(AcceptHeader))
	}
	resp, body = f.do(t, "GET", "/t/prot/one.img", AcceptHeader+": "+strings.ToUpper(digest))
	expect(t, resp, body, 200, "content of one.img")
	resp, body = f.do(t, "GET", "/t/prot/two.img?"+AcceptParam+"="+digest)
	expect(t, resp, body, 200, "content of two.img")
	resp, body = f.do(t, "GET", "/t/prot/one.img", AcceptHeader+": "+LicenceDigest("another"))
	expect(t, resp, body, 403, "")
	resp, body = f.do(t, "GET", "/t/prot/one.img", "Range: bytes=0-6", AcceptHeader+": "+digest)
	expect(t, resp, body, 206, "content")

	resp, body = f.do(t, "GET", "/t/prot/README")
	expect(t, resp, body, 200, "content of README")
	resp, body = f.do(t, "GET", "/t/prot/unmatched.dat", AcceptHeader+": "+digest, "Authorization: Bearer "+f.alice)
	expect(t, resp, body, 403, "not published")

	// Collect-User-Data: the record is on disk before the answer.
	dd := LicenceDigest(dataText)
	resp, body = f.do(t, "GET", "/t/prot/data.tar", AcceptHeader+": "+dd)
	expect(t, resp, body, 403, EmailHeader)
	resp, body = f.do(t, "GET", "/t/prot/data.tar", AcceptHeader+": "+dd, NameHeader+": Ann Example", EmailHeader+": not-an-address")
	expect(t, resp, body, 403, "not an e-mail address")
	resp, body = f.do(t, "GET", "/t/prot/data.tar", AcceptHeader+": "+dd, NameHeader+": Ann Example", EmailHeader+": ann@example.org")
	expect(t, resp, body, 200, "content of data.tar")
	rec, _ := os.ReadFile(f.userData)
	var got userData
	if err := json.Unmarshal(rec, &got); err != nil || got.Name != "Ann Example" || got.Email != "ann@example.org" || got.Licence != dd || got.Path != "/t/prot/data.tar" {
		t.Errorf("user data %q: %+v %v", rec, got, err)
	}
	log := f.access.String()
	if !strings.Contains(log, `"GET /t/prot/one.img HTTP/1.1" 200 18 "-" "Go-http-client/1.1" licence=accepted:explicit`) {
		t.Errorf("access log:\n%s", log)
	}
	if !strings.Contains(log, `"GET /t/prot/one.img HTTP/1.1" 403`) || !strings.Contains(log, "licence=required") {
		t.Errorf("access log lacks the refusal:\n%s", log)
	}
}

func TestGroups(t *testing.T) {
	f := newFixture(t, nil)
	resp, body := f.do(t, "GET", "/t/prot/team.bin")
	expect(t, resp, body, 401, "team-x")
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	resp, body = f.do(t, "GET", "/t/prot/team.bin", "Authorization: Bearer "+f.alice)
	expect(t, resp, body, 200, "content of team.bin")
	resp, body = f.do(t, "GET", "/t/prot/team.bin", "Authorization: Bearer "+f.bob)
	expect(t, resp, body, 403, "bob is not a member of team-x")
	resp, body = f.do(t, "GET", "/t/prot/team.bin", "Authorization: Bearer wrong")
	expect(t, resp, body, 401, "not valid")
	resp, body = f.do(t, "GET", "/t/open/a.img", "Authorization: Bearer wrong")
	expect(t, resp, body, 200, "0123") // open files ignore credentials
	req, _ := http.NewRequest("GET", f.srv.URL+"/t/prot/team.bin", nil)
	req.SetBasicAuth("alice", f.alice)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("basic auth: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	req.SetBasicAuth("bob", f.alice)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("basic auth with another's token: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	// The proxy's headers count from the trusted address only.
	resp, body = f.do(t, "GET", "/t/prot/team.bin", "X-Forwarded-User: carol", "X-Forwarded-Groups: team-z, team-x")
	expect(t, resp, body, 200, "content of team.bin")
	if !strings.Contains(f.access.String(), " - carol [") {
		t.Errorf("access log lacks the proxy's user:\n%s", f.access.String())
	}
	req, _ = http.NewRequest("GET", f.srv.URL+"/t/prot/team.bin", nil)
	req.Header.Set("X-Forwarded-User", "dave")
	req.Header.Add("X-Forwarded-Groups", "team-z")
	req.Header.Add("X-Forwarded-Groups", "team-x")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("groups in several headers: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	g := newFixture(t, func(c *Config) { c.TrustProxy = netip.MustParsePrefix("192.0.2.1/32") })
	resp, body = g.do(t, "GET", "/t/prot/team.bin", "X-Forwarded-User: carol", "X-Forwarded-Groups: team-x")
	expect(t, resp, body, 401, "")
	log := f.access.String() + g.access.String()
	for _, tok := range []string{f.alice, f.bob} {
		if strings.Contains(log, tok) {
			t.Errorf("access log holds a token:\n%s", log)
		}
	}
}

func TestBadBuildInfo(t *testing.T) {
	f := newFixture(t, nil)
	for _, p := range []string{"/t/bad/", "/t/bad/file.img"} {
		resp, body := f.do(t, "GET", p, AcceptHeader+": "+LicenceDigest(eulaText))
		expect(t, resp, body, 403, "not published")
	}
	resp, body := f.do(t, "GET", "/t/?format=json")
	expect(t, resp, body, 200, `"bad"`)
	if l := f.log.String(); strings.Count(l, "does not parse") != 1 || !strings.Contains(l, "t/bad/BUILD-INFO.txt: line 1: Format-Version field not found") {
		t.Errorf("the operator is not told once, with the line:\n%s", l)
	}
}

// TestBrowserFlowHTTP walks the licence page with a cookie jar: decline,
// accept, the second file of the same licence, a forged cookie, a forged
// form.
func TestBrowserFlowHTTP(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ThemeCSS = "body.theme-acme main{border-top:4px solid #c00}" })
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(p string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", f.srv.URL+p, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp, mustRead(t, resp)
	}
	resp, page := get("/t/prot/one.img")
	expect(t, resp, page, 403, "ACME end-user licence")
	if !strings.Contains(page, `<style>body.theme-acme main{border-top:4px solid #c00}</style>`) {
		t.Errorf("the theme stylesheet is not in the page:\n%s", page)
	}
	if !strings.Contains(page, `<body class="theme-acme">`) || strings.Contains(page, "<script>") || !strings.Contains(page, "&lt;script&gt;") || strings.Contains(page, `href="javascript`) {
		t.Errorf("licence page not safe or without theme:\n%s", page)
	}
	form := formValues(t, page)
	post := func(p string, v url.Values) (*http.Response, string) {
		resp, err := c.PostForm(f.srv.URL+p, v)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp, mustRead(t, resp)
	}
	form.Set("action", "decline")
	resp, body := post("/t/prot/one.img", form)
	expect(t, resp, body, 200, "Licence declined")
	if len(jar.Cookies(resp.Request.URL)) != 0 {
		t.Error("declining set a cookie")
	}
	bad := url.Values{"licences": form["licences"], "token": {"00"}, "expires": form["expires"], "action": {"accept"}}
	resp, body = post("/t/prot/one.img", bad)
	expect(t, resp, body, 403, "form")
	form.Set("action", "accept")
	resp, body = post("/t/prot/two.img", form) // a form for another file
	expect(t, resp, body, 403, "form")
	resp, body = post("/t/prot/one.img", form)
	expect(t, resp, body, 200, "content of one.img")
	resp, body = get("/t/prot/two.img")
	expect(t, resp, body, 200, "content of two.img")
	resp, body = get("/t/prot/data.tar") // another licence: asked again
	expect(t, resp, body, 403, "Data licence")
	if !strings.Contains(body, `name="email"`) {
		t.Error("the user-data licence page does not ask for an e-mail address")
	}
	df := formValues(t, body)
	df.Set("action", "accept")
	df.Set("name", "Bo")
	resp, body = post("/t/prot/data.tar", df)
	expect(t, resp, body, 400, "e-mail address is required")
	df.Set("email", "bo@example.org")
	resp, body = post("/t/prot/data.tar", df)
	expect(t, resp, body, 200, "content of data.tar")
	if rec, _ := os.ReadFile(f.userData); !strings.Contains(string(rec), `"email":"bo@example.org"`) {
		t.Errorf("user data: %q", rec)
	}
	resp, body = get("/t/prot/one.img") // both licences in the cookie now
	expect(t, resp, body, 200, "content of one.img")

	// A cookie signed with another key counts for nothing.
	other := newFixture(t, func(c *Config) { c.CookieKey = []byte(strings.Repeat("o", 32)) })
	u, _ := url.Parse(f.srv.URL)
	ck := jar.Cookies(u)
	if len(ck) != 1 {
		t.Fatalf("cookies: %v", ck)
	}
	resp, body = other.do(t, "GET", "/t/prot/one.img", "Cookie: "+CookieName+"="+ck[0].Value)
	expect(t, resp, body, 403, "")

	// A changed licence text is a new licence.
	bi := strings.Replace(buildInfoProt, "ACME end-user licence", "ACME end-user licence v2", 1)
	write(t, filepath.Join(f.dir, "prot/BUILD-INFO.txt"), bi)
	resp, body = get("/t/prot/one.img")
	expect(t, resp, body, 403, "licence v2")
}

func mustRead(t *testing.T, resp *http.Response) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="(\w+)" value="([^"]*)">`)

func formValues(t *testing.T, page string) url.Values {
	t.Helper()
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	if v.Get("token") == "" {
		t.Fatalf("no form in:\n%s", page)
	}
	return v
}

// TestPolicyCache: one parse per version of a BUILD-INFO.txt.
func TestPolicyCache(t *testing.T) {
	f := newFixture(t, nil)
	tr := f.h.trees["t"]
	p1 := f.h.policies.policy("t", tr.root, "prot")
	p2 := f.h.policies.policy("t", tr.root, "prot")
	if p1 != p2 || p1.bi == nil {
		t.Fatal("the second request parsed again")
	}
	// Same size, same mtime, new content: the inode or ctime differs.
	st, _ := os.Stat(filepath.Join(f.dir, "prot/BUILD-INFO.txt"))
	tmp := filepath.Join(f.dir, "prot/.bi.tmp")
	write(t, tmp, strings.Replace(buildInfoProt, "README", "READ.M", 1))
	os.Chtimes(tmp, st.ModTime(), st.ModTime())
	if err := os.Rename(tmp, filepath.Join(f.dir, "prot/BUILD-INFO.txt")); err != nil {
		t.Fatal(err)
	}
	p3 := f.h.policies.policy("t", tr.root, "prot")
	if p3 == p1 || ruleFor(p3, "README").denied == "" {
		t.Error("a rewritten BUILD-INFO.txt was not read again")
	}
	if p := f.h.policies.policy("t", tr.root, "open"); p.bi != nil || p.err != nil {
		t.Errorf("directory without BUILD-INFO.txt: %+v", p)
	}
}

// TestProtectedListing: a block matching the listing itself (here "*", as
// the mirror target writes by default) puts the listing under its licence;
// accepting it on the directory's page opens the listing.
func TestProtectedListing(t *testing.T) {
	f := newFixture(t, nil)
	text := "<p>whole build</p>"
	write(t, filepath.Join(f.dir, "whole/BUILD-INFO.txt"), "Format-Version: 0.5\n\nFiles-Pattern: *\nLicense-Type: protected\nLicense-Text: "+text+"\n")
	write(t, filepath.Join(f.dir, "whole/x.img"), "x")
	resp, body := f.do(t, "GET", "/t/whole/?format=json")
	expect(t, resp, body, 403, AcceptHeader+": "+LicenceDigest(text))
	resp, body = f.do(t, "GET", "/t/whole/?format=json", AcceptHeader+": "+LicenceDigest(text))
	expect(t, resp, body, 200, `"x.img"`)

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	req, _ := http.NewRequest("GET", f.srv.URL+"/t/whole/", nil)
	req.Header.Set("Accept", "text/html")
	r1, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page := mustRead(t, r1)
	r1.Body.Close()
	expect(t, r1, page, 403, "whole build")
	form := formValues(t, page)
	form.Set("action", "accept")
	r2, err := c.PostForm(f.srv.URL+"/t/whole/", form)
	if err != nil {
		t.Fatal(err)
	}
	listing := mustRead(t, r2)
	r2.Body.Close()
	expect(t, r2, listing, 200, "Index of /t/whole/")
}
