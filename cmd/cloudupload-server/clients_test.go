package main

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/credfile"
	"github.com/cloudupload/cloudupload/internal/testutil"
)

// clientsServer is the real server binary with a --clients file and the
// shared --token-file.
type clientsServer struct {
	t       *testing.T
	p       *serverProcess
	clients string // the clients file
}

const (
	kernelToken = "kernel-token-1"
	opsToken    = "ops-token-2"
	sharedToken = "shared-token-3"
)

func startClients(t *testing.T, extra ...string) *clientsServer {
	bin := buildServer(t)
	dir := t.TempDir()
	s := &clientsServer{t: t, clients: filepath.Join(dir, "clients")}
	s.write("# pushing clients\n" +
		"ci-kernel  sha256=" + credfile.HashToken(kernelToken) + "  target=mirror  tree=snapshots  series=kernel-hwpacks,android  user=ci\n" +
		"ops        sha256=" + credfile.HashToken(opsToken) + "\n")
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte(sharedToken+"\n"), 0o600)
	args := append([]string{"--clients", s.clients, "--token-file", token, "--log-level", "info"}, extra...)
	s.p = startProcessIn(t, bin, dir, args...)
	return s
}

func (s *clientsServer) write(content string) {
	if err := os.WriteFile(s.clients, []byte(content), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// do sends a request with token (none when "") and returns the status line
// and body.
func (s *clientsServer) do(method, path, token, body string) (string, string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.p.url+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, string(b)
}

// create asks for a job of user to target with target data.
func (s *clientsServer) create(token, user, target, data string) (string, string) {
	s.t.Helper()
	q := url.Values{"project": {"home:ci"}, "repository": {"images"}, "arch": {"x86_64"}, "package": {"jeos"},
		"filename": {"jeos.raw"}, "user": {user}, "target": {target}}
	return s.do("POST", "/cloudupload?"+q.Encode(), token, data)
}

func TestClientsAllowed(t *testing.T) {
	s := startClients(t, "--build-root", buildRootWithImage(t))
	for _, data := range []string{
		`{"tree":"snapshots","series":"kernel-hwpacks"}`,
		`{"tree":"snapshots","series":"kernel-hwpacks/arm64/lt-qcom"}`,
		`{"tree":"snapshots","series":"android"}`,
	} {
		status, doc := s.create(kernelToken, "ci", "mirror", data)
		if status != "200 OK" {
			t.Fatalf("%s: %s %s", data, status, doc)
		}
		if c := jobField(t, doc, "client"); c != "ci-kernel" {
			t.Errorf("job document names client %q, want ci-kernel:\n%s", c, doc)
		}
		// The element comes after every one of OBS's.
		if i, j := strings.Index(doc, "<client>"), strings.Index(doc, "<filename>"); i < j {
			t.Errorf("<client> before OBS's elements:\n%s", doc)
		}
		name := jobField(t, doc, "name")
		state, _ := waitFinal(t, s.p.url, name)
		_ = state // the test uploader does not know this target data: only the record matters
		_, log := s.do("GET", "/cloudupload/"+name+"/_log?nostream=1", "", "")
		if !strings.Contains(log, "(client ci-kernel)") {
			t.Errorf("job log does not name the client:\n%s", log)
		}
		if _, again := s.do("GET", "/cloudupload/"+name, "", ""); jobField(t, again, "client") != "ci-kernel" {
			t.Errorf("stored job lost its client:\n%s", again)
		}
	}
	if !strings.Contains(s.p.log.String(), "client=ci-kernel") {
		t.Errorf("daemon log does not name the client:\n%s", s.p.log.String())
	}
	// An unrestricted client and the shared token may publish anywhere.
	if status, doc := s.create(opsToken, "alice", "test", "instant"); status != "200 OK" || jobField(t, doc, "client") != "ops" {
		t.Errorf("ops: %s %s", status, doc)
	}
	status, doc := s.create(sharedToken, "alice", "test", "instant")
	if status != "200 OK" || strings.Contains(doc, "<client>") {
		t.Errorf("shared token: %s %s", status, doc)
	}
	for _, tok := range []string{kernelToken, opsToken, sharedToken} {
		if strings.Contains(s.p.log.String(), tok) {
			t.Errorf("a token appears in the daemon's log")
		}
	}
}

func TestClientsRefused(t *testing.T) {
	s := startClients(t, "--build-root", buildRootWithImage(t))
	cases := []struct{ user, target, data, want string }{
		{"ci", "test", `{"tree":"snapshots","series":"android"}`, "403 client ci-kernel may not publish to target test"},
		{"alice", "mirror", `{"tree":"snapshots","series":"android"}`, "403 client ci-kernel may not create jobs for user alice"},
		{"ci", "mirror", `{"tree":"public","series":"android"}`, "403 client ci-kernel may not publish to tree public"},
		{"ci", "mirror", `{"series":"android"}`, "403 client ci-kernel may publish only to tree snapshots: the target data names no tree"},
		{"ci", "mirror", `{"tree":"snapshots","series":"foo"}`, "403 client ci-kernel may not publish to series foo"},
		{"ci", "mirror", `{"tree":"snapshots","series":"kernel-hwpacks-evil"}`, "403 client ci-kernel may not publish to series kernel-hwpacks-evil"},
		{"ci", "mirror", `{"tree":"snapshots","series":"android/../foo"}`, "403 client ci-kernel may not publish to series android/../foo"},
		{"ci", "mirror", `{"tree":"snapshots"}`, "403 client ci-kernel may publish only to series kernel-hwpacks, android (and below): the target data must name its series"},
		{"ci", "mirror", `not json`, "403 client ci-kernel may publish only to tree snapshots, series kernel-hwpacks, android: the target data is not a JSON object naming them"},
	}
	for _, c := range cases {
		if status, body := s.create(kernelToken, c.user, c.target, c.data); status != c.want {
			t.Errorf("%s %s %s: %s %s, want %s", c.user, c.target, c.data, status, body, c.want)
		}
	}
	if status, _ := s.create("", "ci", "mirror", `{"tree":"snapshots","series":"android"}`); status != "401 authorization required" {
		t.Errorf("no token: %s", status)
	}
	if status, _ := s.create("not-a-client", "ci", "mirror", `{"tree":"snapshots","series":"android"}`); status != "401 authorization required" {
		t.Errorf("unknown token: %s", status)
	}
	if status, body := s.do("GET", "/cloudupload", "", ""); status != "200 OK" {
		t.Errorf("reads are open by default: %s %s", status, body)
	}

	// A client changes only its own jobs; the shared token any.
	_, doc := s.create(opsToken, "alice", "test", "slow")
	name := jobField(t, doc, "name")
	if status, _ := s.do("POST", "/cloudupload/"+name+"?cmd=kill", kernelToken, ""); status != "403 client ci-kernel may not change job "+name+": another client created it" {
		t.Errorf("kill of another client's job: %s", status)
	}
	if status, _ := s.do("POST", "/cloudupload/"+name+"?cmd=kill", opsToken, ""); status != "200 OK" {
		t.Errorf("kill of its own job: %s", status)
	}
	_, doc = s.create(opsToken, "alice", "test", "slow")
	if status, _ := s.do("POST", "/cloudupload/"+jobField(t, doc, "name")+"?cmd=kill", sharedToken, ""); status != "200 OK" {
		t.Errorf("kill with the shared token: %s", status)
	}
}

func TestClientsPrivateReads(t *testing.T) {
	s := startClients(t, "--private-reads")
	if status, _ := s.do("GET", "/cloudupload", "", ""); status != "401 authorization required" {
		t.Errorf("GET without a client: %s", status)
	}
	for _, tok := range []string{kernelToken, sharedToken} {
		if status, _ := s.do("GET", "/cloudupload", tok, ""); status != "200 OK" {
			t.Errorf("GET with a token: %s", status)
		}
	}
}

// SIGHUP re-reads the clients file; a file that does not parse keeps the
// previous one.
func TestClientsReloadOnSIGHUP(t *testing.T) {
	s := startClients(t)
	const newToken = "new-token-4"
	s.write("new sha256=" + credfile.HashToken(newToken) + " target=test\n")
	if err := s.p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s.p.log, "credential file reloaded")
	if status, _ := s.do("GET", "/cloudupload", "", ""); status != "200 OK" {
		t.Fatalf("server down after SIGHUP: %s", status)
	}
	if status, doc := s.create(newToken, "alice", "test", "instant"); status != "400 this server has no image source configured" {
		// Past the credential and scope checks: the request reached the job manager.
		t.Errorf("new client: %s %s", status, doc)
	}
	if status, _ := s.create(newToken, "alice", "mirror", "{}"); status != "403 client new may not publish to target mirror" {
		t.Errorf("new client's scope: %s", status)
	}
	if status, _ := s.create(kernelToken, "ci", "mirror", `{"tree":"snapshots","series":"android"}`); status != "401 authorization required" {
		t.Errorf("removed client: %s", status)
	}

	s.write("broken line without a hash\n")
	s.p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, s.p.log, "keeping the previous one")
	if !strings.Contains(s.p.log.String(), "clients:1:") {
		t.Errorf("the log does not say where the file is wrong:\n%s", s.p.log.String())
	}
	if status, _ := s.create(newToken, "alice", "mirror", "{}"); status != "403 client new may not publish to target mirror" {
		t.Errorf("after a bad reload the previous clients must stay: %s", status)
	}
	if status, _ := s.create(sharedToken, "alice", "test", "instant"); status != "400 this server has no image source configured" {
		t.Errorf("shared token after reloads: %s", status)
	}
}

func waitLog(t *testing.T, log *testutil.SyncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // generous: the test machines are shared and loaded
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", want, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// buildRootWithImage is a build root holding home:ci/images/x86_64/jeos/jeos.raw.
func buildRootWithImage(t *testing.T) string {
	root := t.TempDir()
	img := filepath.Join(root, "home:ci", "images", "x86_64", "jeos", "jeos.raw")
	os.MkdirAll(filepath.Dir(img), 0o755)
	os.WriteFile(img, []byte("image"), 0o644)
	return root
}

func TestPrivateReadsNeedsACredential(t *testing.T) {
	m := NewMain()
	m.Stderr = io.Discard
	if err := m.ParseFlags([]string{"--private-reads"}); err == nil || !strings.Contains(err.Error(), "--private-reads needs --token-file or --clients") {
		t.Fatalf("err = %v", err)
	}
	if err := m.ParseFlags([]string{"--private-reads", "--clients", "/nonexistent"}); err != nil {
		t.Fatalf("with --clients: %v", err) // the file is read by Run
	}
}
