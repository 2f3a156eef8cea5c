package httpapi

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"

	"github.com/cloudupload/cloudupload"
)

// testKey is one RSA key for all tests (generation is slow).
var testKey = func() []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}()

// start serves a Server over a fake manager holding a few jobs.
func start(t *testing.T, cfg Config) (*httptest.Server, *fakeManager) {
	ts, m, _ := startServer(t, cfg)
	return ts, m
}

func startServer(t *testing.T, cfg Config) (*httptest.Server, *fakeManager, *Server) {
	t.Helper()
	m := newFake(t.TempDir())
	base := cloudupload.Job{Created: 1700000000, User: "alice", Target: "mirror", Project: "home:alice",
		Repository: "images", Package: "jeos", Arch: "x86_64", Filename: "jeos.x86_64.raw.xz", Size: 1048576}
	for _, j := range []struct {
		id      int64
		state   cloudupload.State
		details string
	}{
		{1, cloudupload.StateCreated, "waiting to receive image"},
		{2, cloudupload.StateUploading, "uploading"},
		{3, cloudupload.StateSucceeded, "ami-0123456789abcdef0"},
		{10, cloudupload.StateFailed, "killed"},
		{66, cloudupload.StateUploading, "uploading"},
	} {
		job := base
		job.ID, job.State, job.Details = j.id, j.state, j.details
		if j.id == 1 {
			job.Size = 5 // the PUTs send 5 bytes
		}
		if j.state == cloudupload.StateUploading {
			job.Pid = 4242
		}
		m.add(job)
	}
	if err := m.appendLog(2, "step 1\nstep 2\n"); err != nil {
		t.Fatal(err)
	}
	if err := m.appendLog(3, "done\n"); err != nil {
		t.Fatal(err)
	}
	cfg.Manager = m
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.LogPoll == 0 {
		cfg.LogPoll = 10 * time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, m, s
}

type request struct {
	method, path string
	header       map[string]string
	body         string
}

// do sends req and returns the response as "<status line>\nContent-Type: …\n\n<body>".
func do(t *testing.T, ts *httptest.Server, req request) (string, []byte) {
	t.Helper()
	r, err := http.NewRequest(req.method, ts.URL+req.path, strings.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	if req.body == "" {
		r.Body, r.ContentLength = http.NoBody, 0
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	resp, err := ts.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, []byte(fmt.Sprintf("%s\nContent-Type: %s\n\n%s", resp.Status, resp.Header.Get("Content-Type"), body))
}

func skeleton(fields map[string]string) string {
	var b strings.Builder
	b.WriteString("<clouduploadjob>\n")
	for _, f := range []string{"user", "target", "project", "repository", "package", "arch", "filename", "size", "details"} {
		if v, ok := fields[f]; ok {
			fmt.Fprintf(&b, "  <%s>%s</%s>\n", f, v, f)
		}
	}
	b.WriteString("</clouduploadjob>\n")
	return b.String()
}

func goodSkeleton() map[string]string {
	return map[string]string{"user": "bob", "target": "mirror", "project": "P", "repository": "R",
		"package": "K", "arch": "x86_64", "filename": "img.raw.xz", "size": "5",
		"details": hex.EncodeToString([]byte(`{"tree":"t"}`))}
}

const createQuery = "/cloudupload?project=home:alice&repository=images&arch=x86_64&package=jeos&filename=jeos.raw.xz&user=alice&target=mirror"

// TestRoutes answers each route and each error once; the whole response
// (status line, content type, body) is compared with a golden file.
func TestRoutes(t *testing.T) {
	ts, m := start(t, Config{PublicKey: testKey})
	noSize := goodSkeleton()
	delete(noSize, "size")
	for _, c := range []struct {
		name   string
		req    request
		status string
	}{
		{"hello", request{"GET", "/", nil, ""}, "200 OK"},
		{"list-all", request{"GET", "/cloudupload", nil, ""}, "200 OK"},
		{"list-names", request{"GET", "/cloudupload?name=3&name=999&name=1", nil, ""}, "200 OK"},
		{"list-unknown-names", request{"GET", "/cloudupload?name=999&name=007", nil, ""}, "200 OK"},
		{"list-bad-param", request{"GET", "/cloudupload?names=1", nil, ""}, "400 unknown parameter 'names'"},
		{"list-not-number", request{"GET", "/cloudupload?name=3&name=abc", nil, ""}, "400 not a number: 'abc'"},
		{"list-empty-name", request{"GET", "/cloudupload?name=", nil, ""}, "400 number is empty"},
		{"job", request{"GET", "/cloudupload/2", nil, ""}, "200 OK"},
		{"job-unknown", request{"GET", "/cloudupload/999", nil, ""}, "404 no such job"},
		{"job-next", request{"GET", "/cloudupload/next", nil, ""}, "404 no such job"},
		{"job-plus", request{"GET", "/cloudupload/+2", nil, ""}, "404 no such job"},
		{"job-leading-zero", request{"GET", "/cloudupload/02", nil, ""}, "404 no such job"},
		{"job-long", request{"GET", "/cloudupload/1234567890123456789", nil, ""}, "404 no such job"},
		{"job-slash", request{"GET", "/cloudupload/2/", nil, ""}, "400 unknown request: GET:/cloudupload/2/"},
		{"delete", request{"DELETE", "/cloudupload/5", nil, ""}, "400 unknown request: DELETE:/cloudupload/5"},
		{"unknown-path", request{"GET", "/build/x", nil, ""}, "400 unknown request: GET:/build/x"},
		{"create", request{"POST", createQuery, map[string]string{"Content-Type": "application/octet-stream"}, `{"tree":"demo"}`}, "200 OK"},
		{"create-missing-param", request{"POST", strings.Replace(createQuery, "&user=alice", "", 1), nil, "{}"}, "400 parameter 'user' is missing"},
		{"create-twice-param", request{"POST", createQuery + "&user=bob", nil, "{}"}, "400 parameter 'user' set multiple times"},
		{"create-unknown-param", request{"POST", createQuery + "&foo=1", nil, "{}"}, "400 unknown parameter 'foo'"},
		{"create-bad-name", request{"POST", strings.Replace(createQuery, "package=jeos", "package=..", 1), nil, "{}"}, `400 package ".." must not start with '.'`},
		{"create-unknown-target", request{"POST", strings.Replace(createQuery, "target=mirror", "target=unknown", 1), nil, "{}"}, `400 target "unknown" is not known`},
		{"create-no-image", request{"POST", strings.Replace(createQuery, "jeos.raw.xz", "missing.raw.xz", 1), nil, "{}"}, "404 image not found: home:alice/images/x86_64/jeos/missing.raw.xz"},
		{"create-too-large", request{"POST", createQuery, nil, strings.Repeat("x", MaxTargetData+1)}, "413 target data is larger than 10 MiB"},
		{"skeleton", request{"POST", "/cloudupload", map[string]string{"Content-Type": "text/xml"}, skeleton(goodSkeleton())}, "200 OK"},
		{"skeleton-missing-size", request{"POST", "/cloudupload", map[string]string{"Content-Type": "application/xml"}, skeleton(noSize)}, "400 size is missing from job skeleton"},
		{"skeleton-not-xml", request{"POST", "/cloudupload", nil, "hello"}, "400 job skeleton is not valid XML"},
		{"skeleton-too-large", request{"POST", "/cloudupload", map[string]string{"Content-Type": "text/xml"}, strings.Repeat("<a/>", MaxSkeleton/4+1)}, "413 job skeleton is larger than 1 MiB"},
		{"skeleton-siblings", request{"POST", "/cloudupload", map[string]string{"Content-Type": "text/xml"}, "<clouduploadjob>" + strings.Repeat("<a/>", 1000) + "</clouduploadjob>"}, "400 job skeleton has more than 64 elements"},
		{"put", request{"PUT", "/cloudupload/1", nil, "12345"}, "200 OK"},
		{"put-again", request{"PUT", "/cloudupload/1", nil, "12345"}, "400 job is not in created state"},
		{"put-unknown", request{"PUT", "/cloudupload/999", nil, "12345"}, "404 no such job"},
		{"put-next", request{"PUT", "/cloudupload/next", nil, "12345"}, "404 no such job"},
		{"kill", request{"POST", "/cloudupload/2?cmd=kill", nil, ""}, "200 OK"},
		{"kill-final", request{"POST", "/cloudupload/3?cmd=kill", nil, ""}, "200 OK"},
		{"kill-form", request{"POST", "/cloudupload/2", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "command=kill"}, "200 OK"},
		{"kill-unknown", request{"POST", "/cloudupload/999?cmd=kill", nil, ""}, "404 no such job"},
		{"kill-other-command", request{"POST", "/cloudupload/2?cmd=restart", nil, ""}, `400 unknown command "restart"`},
		{"kill-no-command", request{"POST", "/cloudupload/2", nil, ""}, "200 OK"},
		{"kill-no-command-unknown", request{"POST", "/cloudupload/999", nil, ""}, "404 no such job"},
		{"kill-internal", request{"POST", "/cloudupload/66?cmd=kill", nil, ""}, "500 internal error"},
		{"log", request{"GET", "/cloudupload/3/_log", nil, ""}, "200 OK"},
		{"log-nostream", request{"GET", "/cloudupload/2/_log?nostream=1&start=0", nil, ""}, "200 OK"},
		{"log-start-end", request{"GET", "/cloudupload/2/_log?nostream=1&start=2&end=9", nil, ""}, "200 OK"},
		{"log-negative-start", request{"GET", "/cloudupload/2/_log?nostream=1&start=-7", nil, ""}, "200 OK"},
		{"log-queued", request{"GET", "/cloudupload/1/_log?nostream=1", nil, ""}, "200 OK"},
		{"log-entry-queued", request{"GET", "/cloudupload/1/_log?view=entry", nil, ""}, "200 OK"},
		{"log-start-out-of-range", request{"GET", "/cloudupload/2/_log?nostream=1&start=15", nil, ""}, "400 start out of range: 15"},
		{"log-bad-start", request{"GET", "/cloudupload/2/_log?nostream=1&start=x", nil, ""}, `400 start must be a byte offset, not "x"`},
		{"log-unknown", request{"GET", "/cloudupload/999/_log", nil, ""}, "404 no such job"},
		{"log-next", request{"GET", "/cloudupload/next/_log", nil, ""}, "404 no such job"},
		{"pubkey-info", request{"GET", "/cloudupload/_pubkey?view=info", nil, ""}, "200 OK"},
		{"pubkey-bad-view", request{"GET", "/cloudupload/_pubkey?view=x", nil, ""}, "400 unsupported view 'x'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, resp := do(t, ts, c.req)
			if status != c.status {
				t.Errorf("status %q, want %q", status, c.status)
			}
			// The public key and the log's mtime vary; everything else is golden.
			if c.name != "pubkey-info" {
				testutil.Golden(t, c.name+".txt", resp)
			}
		})
	}
	if got := string(m.data[67]); got != `{"tree":"demo"}` { // the created job
		t.Errorf("target data %q", got)
	}
	if got := string(m.data[68]); got != `{"tree":"t"}` { // the skeleton's job
		t.Errorf("skeleton target data %q", got)
	}
	if m.image[1] != 5 {
		t.Errorf("PUT received %d bytes", m.image[1])
	}
}

func TestPubkey(t *testing.T) {
	ts, _ := start(t, Config{PublicKey: testKey})
	resp, err := http.Get(ts.URL + "/cloudupload/_pubkey")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain" || !bytes.Equal(body, testKey) {
		t.Errorf("%s %q %q", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	info, err := PubkeyInfo(testKey)
	if err != nil || info.Algo != "rsa" || info.KeySize != 2048 || len(info.Fingerprint) != 79 || !strings.HasSuffix(strings.ReplaceAll(info.Fingerprint, " ", ""), info.KeyID) {
		t.Errorf("%+v %v", info, err)
	}
	ts2, _ := start(t, Config{})
	if status, _ := do(t, ts2, request{"GET", "/cloudupload/_pubkey", nil, ""}); status != "404 no public key configured" {
		t.Errorf("without key: %s", status)
	}
	if _, err := New(Config{PublicKey: []byte("nope")}); err == nil {
		t.Error("New accepted a bad public key")
	}
}

func TestLogEntry(t *testing.T) {
	ts, _ := start(t, Config{})
	_, resp := do(t, ts, request{"GET", "/cloudupload/2/_log?view=entry", nil, ""})
	if !bytes.Contains(resp, []byte(`<entry name="_log" size="14" mtime="`)) {
		t.Errorf("%s", resp)
	}
}

func TestToken(t *testing.T) {
	ts, m := start(t, Config{Token: "s3cret"})
	for _, c := range []struct {
		req    request
		status string
	}{
		{request{"POST", "/cloudupload/2?cmd=kill", nil, ""}, "401 authorization required"},
		{request{"POST", "/cloudupload/2?cmd=kill", map[string]string{"Authorization": "Bearer wrong"}, ""}, "401 authorization required"},
		{request{"PUT", "/cloudupload/1", map[string]string{"Authorization": "Basic czNjcmV0"}, "12345"}, "401 authorization required"},
		{request{"POST", createQuery, nil, "{}"}, "401 authorization required"},
		{request{"GET", "/cloudupload/2", nil, ""}, "200 OK"},
		{request{"GET", "/cloudupload/2/_log?nostream=1", nil, ""}, "200 OK"},
		{request{"PUT", "/cloudupload/1", map[string]string{"Authorization": "Bearer s3cret"}, "12345"}, "200 OK"},
		{request{"POST", "/cloudupload/2?cmd=kill", map[string]string{"Authorization": "bearer s3cret"}, ""}, "200 OK"},
	} {
		if status, _ := do(t, ts, c.req); status != c.status {
			t.Errorf("%s %s %v: %q, want %q", c.req.method, c.req.path, c.req.header, status, c.status)
		}
	}
	if len(m.killed) != 1 {
		t.Errorf("killed %v", m.killed)
	}
	_, resp := do(t, ts, request{"POST", "/cloudupload/2?cmd=kill", nil, ""})
	testutil.Golden(t, "unauthorized.txt", resp)
}

// TestPutLength checks the body of a PUT against the job's size, as OBS
// did: a chunked body is accepted and counted, a Content-Length that
// differs (none at all included) is refused with 400 before the body is
// read, and a body that ends short fails the job.
func TestPutLength(t *testing.T) {
	ts, m := start(t, Config{})
	for id := int64(20); id < 24; id++ {
		m.add(cloudupload.Job{ID: id, State: cloudupload.StateCreated, Size: 5, Origin: cloudupload.OriginPut})
	}
	raw := func(req string) (string, []byte) {
		t.Helper()
		conn, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, req)
		conn.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return "", nil
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.Status, []byte(fmt.Sprintf("%s\nContent-Type: %s\n\n%s", resp.Status, resp.Header.Get("Content-Type"), body))
	}
	status, resp := raw("PUT /cloudupload/20 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n123\r\n2\r\n45\r\n0\r\n\r\n")
	testutil.Golden(t, "put-chunked.txt", resp)
	if j, _ := m.Get(20); status != "200 OK" || j.State != cloudupload.StateScheduled || m.image[20] != 5 {
		t.Errorf("chunked PUT: %s, job %s with %d bytes", status, j.State, m.image[20])
	}
	status, resp = raw("PUT /cloudupload/21 HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n12345678")
	testutil.Golden(t, "put-wrong-size.txt", resp)
	if j, _ := m.Get(21); status != "400 the request announces 8 bytes, expected 5" || j.State != cloudupload.StateFailed || m.image[21] != 0 {
		t.Errorf("PUT of the wrong size: %s, job %s with %d bytes read", status, j.State, m.image[21])
	}
	status, _ = raw("PUT /cloudupload/22 HTTP/1.1\r\nHost: x\r\n\r\n")
	if j, _ := m.Get(22); status != "400 the request announces 0 bytes, expected 5" || j.State != cloudupload.StateFailed {
		t.Errorf("PUT without a body: %s, job %s", status, j.State)
	}
	// A body shorter than its Content-Length: the client gives up.
	raw("PUT /cloudupload/23 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n123")
	if j, _ := m.Get(23); j.State != cloudupload.StateFailed {
		t.Errorf("state %s after a short PUT", j.State)
	}
}

// TestLogStream follows a running job's log while it grows and ends once
// the job is final and everything was sent.
func TestLogStream(t *testing.T) {
	ts, m := start(t, Config{})
	resp, err := http.Get(ts.URL + "/cloudupload/1/_log") // queued: no log yet
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.TransferEncoding == nil || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("%s %v", resp.Status, resp.TransferEncoding)
	}
	br := bufio.NewReader(resp.Body)
	m.setState(1, cloudupload.StateUploading, "uploading")
	var want strings.Builder
	for i := range 5 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		if err := m.appendLog(1, line); err != nil {
			t.Fatal(err)
		}
		// Each line arrives while the job still runs.
		got, err := br.ReadString('\n')
		if err != nil || got != line {
			t.Fatalf("read %q, %v; want %q", got, err, line)
		}
	}
	// The last words are written just before the job becomes final.
	m.appendLog(1, "bye\n")
	m.setState(1, cloudupload.StateSucceeded, "ok")
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye\n" {
		t.Errorf("rest %q, %v", rest, err)
	}

	// start and end apply while streaming too.
	m.setState(2, cloudupload.StateUploading, "uploading")
	resp2, err := http.Get(ts.URL + "/cloudupload/2/_log?start=-7&end=12")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if string(b) != "step " {
		t.Errorf("start=-7&end=12: %q", b)
	}
}

func TestParseID(t *testing.T) {
	for s, want := range map[string]int64{"1": 1, "0": 0, "42": 42, "999999999999999999": 999999999999999999} {
		if id, ok := ParseID(s); !ok || id != want {
			t.Errorf("ParseID(%q) = %d, %v", s, id, ok)
		}
	}
	for _, s := range []string{"", "+1", "-1", "01", "1e3", "0x10", "1 ", " 1", "1000000000000000000", "١", "next", "_pubkey"} {
		if id, ok := ParseID(s); ok {
			t.Errorf("ParseID(%q) = %d, accepted", s, id)
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"1", "007", "+3", "999999999999999999", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseID(s)
		if !ok {
			return
		}
		if id < 0 || fmt.Sprint(id) != s {
			t.Fatalf("ParseID(%q) = %d: not the one name of the id", s, id)
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"name=1&name=2", "start=-5&end=3&nostream=1", "a=%zz", "cmd=kill;x", "view=entry&view=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := parseQuery(raw, "name", "start", "end", "nostream", "view", "cmd")
		if err != nil {
			if cloudupload.ErrorCode(err) != cloudupload.EINVALID {
				t.Fatalf("code %q", cloudupload.ErrorCode(err))
			}
			return
		}
		for k := range q {
			switch k {
			case "name", "start", "end", "nostream", "view", "cmd":
			default:
				t.Fatalf("accepted parameter %q", k)
			}
		}
		if v, ok := q["start"]; ok {
			if n, err := parseOffset("start", v, true); err == nil {
				if m, err := strconv.ParseInt(v[0], 10, 64); err != nil || m != n {
					t.Fatalf("start %q parsed as %d", v[0], n)
				}
			}
		}
		if v, ok := q["end"]; ok {
			if n, err := parseOffset("end", v, false); err == nil && n < 0 {
				t.Fatalf("end %q parsed as %d", v[0], n)
			}
		}
	})
}

// TestStopStreams: at shutdown, log streams end after sending what the log
// holds, and new ones answer at once.
func TestStopStreams(t *testing.T) {
	ts, _, s := startServer(t, Config{})
	resp, err := http.Get(ts.URL + "/cloudupload/2/_log") // job 2 is uploading
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "step 1\n" {
		t.Fatalf("%q %v", line, err)
	}
	s.StopStreams()
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "step 2\n" {
		t.Errorf("rest %q, %v", rest, err)
	}
	resp2, err := http.Get(ts.URL + "/cloudupload/2/_log")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if string(b) != "step 1\nstep 2\n" {
		t.Errorf("after stop: %q", b)
	}
}

func TestPubkeyInfoDocument(t *testing.T) {
	ts, _ := start(t, Config{PublicKey: testKey})
	_, resp := do(t, ts, request{"GET", "/cloudupload/_pubkey?view=info", nil, ""})
	info, _ := PubkeyInfo(testKey)
	want := fmt.Sprintf("200 OK\nContent-Type: text/xml\n\n<pubkey keyid=%q algo=\"rsa\" keysize=\"2048\" fingerprint=%q>%s</pubkey>\n", info.KeyID, info.Fingerprint, testKey)
	if string(resp) != want {
		t.Errorf("got\n%s\nwant\n%s", resp, want)
	}
}

// TestLogStreamArchived: a job that had no log when the stream began and
// whose log moved when it ended (archived) is still streamed whole.
func TestLogStreamArchived(t *testing.T) {
	ts, m := start(t, Config{})
	m.archive = true
	resp, err := http.Get(ts.URL + "/cloudupload/1/_log") // created, no log yet
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m.setState(1, cloudupload.StateUploading, "uploading")
	p, _ := m.LogPath(1)
	os.WriteFile(p, []byte("first\n"), 0o644)
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "first\n" || err != nil {
		t.Fatalf("%q %v", line, err)
	}
	// The log grows, then the job ends and its log is archived elsewhere.
	os.WriteFile(p, []byte("first\nsecond\n"), 0o644)
	m.setState(1, cloudupload.StateSucceeded, "ok")
	os.Rename(p, filepath.Join(m.dir, "done-1.log"))
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" {
		t.Errorf("rest %q", rest)
	}

	// The job ends before the stream ever saw its log.
	m.add(cloudupload.Job{ID: 5, State: cloudupload.StateScheduled})
	resp3, err := http.Get(ts.URL + "/cloudupload/5/_log")
	if err != nil {
		t.Fatal(err)
	}
	defer resp3.Body.Close()
	time.Sleep(30 * time.Millisecond) // let the stream poll at least once (not a timing assertion)
	os.WriteFile(filepath.Join(m.dir, "done-5.log"), []byte("all of it\n"), 0o644)
	m.setState(5, cloudupload.StateFailed, "boom")
	if b, _ := io.ReadAll(resp3.Body); string(b) != "all of it\n" {
		t.Errorf("log of a job archived before the stream saw it: %q", b)
	}
}

// TestBodyBudget: request bodies held in memory together stay within
// MaxBuffered; a request that finds no room in time is answered 503, and
// the room comes back when a body is done with.
func TestBodyBudget(t *testing.T) {
	ts, _, s := startServer(t, Config{MaxBuffered: 300 << 10})
	s.bodyWait = 200 * time.Millisecond
	// A create whose 200 KiB body stalls holds 204 KiB of the budget.
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{", createQuery, 200<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.budget.mu.Lock()
		free := s.budget.free
		s.budget.mu.Unlock()
		if free < 300<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stalled create did not take its share of the budget")
		}
		time.Sleep(5 * time.Millisecond)
	}
	body := strings.Repeat(" ", 150<<10) + "{}"
	if status, _ := do(t, ts, request{"POST", createQuery, nil, body}); status != "503 the server is busy, try again later" {
		t.Errorf("create while the budget is taken: %s", status)
	}
	// Small bodies still fit.
	if status, _ := do(t, ts, request{"POST", createQuery, nil, "{}"}); status != "200 OK" {
		t.Errorf("small create: %s", status)
	}
	conn.Close() // the stalled body fails; its share is released
	for {
		status, _ := do(t, ts, request{"POST", createQuery, nil, body})
		if status == "200 OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the stalled create ended: %s", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every way a body ends gives its share back.
	for _, req := range []request{
		{"POST", "/cloudupload", nil, "<clouduploadjob><a/></clouduploadjob>"}, // refused skeleton
		{"POST", "/cloudupload", nil, skeleton(goodSkeleton())},                // created
		{"POST", strings.Replace(createQuery, "target=mirror", "target=unknown", 1), nil, "{}"},
		{"POST", "/cloudupload/2", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "cmd=x"},
	} {
		do(t, ts, req)
	}
	if s.budget.free != 300<<10 {
		t.Errorf("budget %d bytes free after all bodies ended, want %d", s.budget.free, 300<<10)
	}
}
