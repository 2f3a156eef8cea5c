package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beevik/etree"

	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/internal/pgtest"
	"github.com/cloudupload/cloudupload/internal/testutil"
)

func TestMain(m *testing.M) {
	backend.RunShimIfRequested()
	code := m.Run()
	pgtest.StopAll()
	os.RemoveAll(keysDir)
	os.Exit(code)
}

// testUploader is the uploader of the end-to-end tests: a shell script with
// OBS's argv. The target data is a word saying what to do:
//
//	instant  write the image's size as result, exit 0
//	fail     write a reason as result, exit 1
//	slow     print "tick N" lines until the file "release" appears in
//	         $RELEASE_DIR, then succeed
//	progress report 1 MiB more of 200 MiB in $CLOUDUPLOAD_PROGRESS_FILE
//	         and print "step N" every 0.1 s until "release" appears, then
//	         report all of it and succeed
//
// It speaks the project's protocol: `validate` accepts the targets test and
// mirror and refuses others as the real uploader does (exit 2, one line on
// stderr).
const testUploader = `#!/bin/sh
if [ "$1" = protocol ]; then
	echo "cloudupload-uploader 1"; exit 0
fi
if [ "$1" = validate ]; then
	cat >/dev/null
	case "$2" in
	test|mirror) exit 0 ;;
	*) echo "target \"$2\" is not known" >&2; exit 2 ;;
	esac
fi
user=$1 target=$2 image=$3 data=$4 filename=$5 result=$6
echo "uploading $filename for $user to $target${CLOUDUPLOAD_CLIENT:+ (client $CLOUDUPLOAD_CLIENT)}"
case "$(cat "$data")" in
instant) wc -c <"$image" | tr -d ' ' >"$result"; exit 0 ;;
fail) echo "the cloud said no" >"$result"; exit 1 ;;
slow)
	i=0
	while [ ! -e "$RELEASE_DIR/release" ]; do
		i=$((i+1)); echo "tick $i"; sleep 0.05
	done
	echo "released"; echo ok >"$result"; exit 0 ;;
progress)
	report() {
		printf '{"done":%d,"total":%d}\n' "$1" 209715200 >"$CLOUDUPLOAD_PROGRESS_FILE.tmp"
		mv "$CLOUDUPLOAD_PROGRESS_FILE.tmp" "$CLOUDUPLOAD_PROGRESS_FILE"
	}
	i=0
	while [ ! -e "$RELEASE_DIR/release" ]; do
		[ $i -lt 199 ] && i=$((i+1))
		echo "step $i"; report $((i*1048576)); sleep 0.1
	done
	report 209715200; echo ok >"$result"; exit 0 ;;
esac
echo "unknown mode" >"$result"; exit 3
`

// keysDir holds testKeys' pair; TestMain removes it.
var keysDir string

// testKeys is one key pair for the tests that do not test generation,
// made once per test binary.
var testKeys = sync.OnceValues(func() (string, string) {
	dir, err := os.MkdirTemp("", "cloudupload-keys")
	if err != nil {
		panic(err)
	}
	keysDir = dir
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, pub := filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
	return pub, priv
})

// env is one daemon under test with its directories.
type env struct {
	t         testing.TB
	main      *Main
	url       string
	state     string
	buildRoot string
	release   string
	args      []string
}

// start runs a daemon on 127.0.0.1:0 with a temporary state dir, a build
// root holding one 1 MiB image, and the test uploader.
func start(t testing.TB, extra ...string) *env {
	t.Helper()
	dir := t.TempDir()
	testutil.StopStrays(t, dir)
	e := &env{t: t, state: filepath.Join(dir, "state"), buildRoot: filepath.Join(dir, "build"), release: filepath.Join(dir, "release")}
	os.MkdirAll(e.release, 0o755)
	t.Setenv("RELEASE_DIR", e.release)
	img := filepath.Join(e.buildRoot, "home:alice", "images", "x86_64", "jeos", "jeos.raw")
	os.MkdirAll(filepath.Dir(img), 0o755)
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	uploader := filepath.Join(dir, "uploader")
	if err := os.WriteFile(uploader, []byte(testUploader), 0o755); err != nil {
		t.Fatal(err)
	}
	pub, priv := testKeys()
	e.args = []string{"--listen", "127.0.0.1:0", "--state-dir", e.state, "--uploader", uploader, "--kill-grace", "2s",
		"--pubkey", pub, "--privkey", priv, "--log-level", "debug"}
	if !slices.Contains(extra, "--repserver") {
		e.args = append(e.args, "--build-root", e.buildRoot)
	}
	e.args = append(e.args, extra...)
	e.restart()
	return e
}

// restart starts (again) the daemon on the same state dir.
func (e *env) restart() {
	e.t.Helper()
	m := NewMain()
	m.Stderr = io.Discard
	if t, ok := e.t.(*testing.T); ok {
		m.Stderr = &testWriter{t: t}
	}
	if err := m.ParseFlags(e.args); err != nil {
		e.t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.main, e.url = m, "http://"+m.Addr()
	e.t.Cleanup(func() {
		if e.main == m {
			m.Close()
		}
	})
}

// testWriter sends the daemon's log to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (e *env) do(method, path, ctype, body string, hdr ...string) (int, string, string) {
	e.t.Helper()
	code, status, b, _ := e.doFull(method, path, ctype, body, hdr...)
	return code, status, b
}

const query = "/cloudupload?project=home:alice&repository=images&arch=x86_64&package=jeos&filename=jeos.raw&user=alice&target=test"

// jobField reads one element of a job document.
func jobField(t testing.TB, doc, field string) string {
	t.Helper()
	d := etree.NewDocument()
	if err := d.ReadFromString(doc); err != nil || d.Root() == nil {
		t.Fatalf("not a document: %q", doc)
	}
	if field == "name" {
		return d.Root().SelectAttrValue("name", "")
	}
	if el := d.Root().SelectElement(field); el != nil {
		return el.Text()
	}
	return ""
}

// create submits a job with target data mode and returns its name.
func (e *env) create(mode string) string {
	e.t.Helper()
	code, status, body := e.do("POST", query, "application/octet-stream", mode)
	if code != 200 {
		e.t.Fatalf("create: %s %s", status, body)
	}
	if s := jobField(e.t, body, "state"); s != "created" && s != "receiving" {
		e.t.Errorf("created job in state %s", s)
	}
	return jobField(e.t, body, "name")
}

// wait polls the job until it is final and returns its document.
func (e *env) wait(name string) string {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, body := e.do("GET", "/cloudupload/"+name, "", "")
		if code != 200 {
			e.t.Fatalf("GET job %s: %d %s", name, code, body)
		}
		if s := jobField(e.t, body, "state"); s == "succeeded" || s == "failed" {
			return body
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s not final after 30s: %s", name, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEndToEnd(t *testing.T) {
	e := start(t)
	if code, _, body := e.do("GET", "/", "", ""); code != 200 || body != "<hello name=\"Cloud Upload Server\" />\n" {
		t.Errorf("hello: %d %q", code, body)
	}
	name := e.create("instant")
	final := e.wait(name)
	if jobField(t, final, "state") != "succeeded" || jobField(t, final, "details") != "1048576" || jobField(t, final, "size") != "1048576" {
		t.Errorf("final job:\n%s", final)
	}
	code, _, log := e.do("GET", "/cloudupload/"+name+"/_log?nostream=1&start=0", "", "")
	if code != 200 || !strings.Contains(log, "uploading jeos.raw for alice to test\n") {
		t.Errorf("log: %d %q", code, log)
	}
	if _, _, entry := e.do("GET", "/cloudupload/"+name+"/_log?view=entry", "", ""); !strings.Contains(entry, fmt.Sprintf(`<entry name="_log" size="%d" mtime="`, len(log))) {
		t.Errorf("entry: %q", entry)
	}

	failed := e.create("fail")
	if doc := e.wait(failed); jobField(t, doc, "state") != "failed" || jobField(t, doc, "details") != "the cloud said no" {
		t.Errorf("failing job:\n%s", doc)
	}

	// The list: all jobs in numeric order, or those asked in that order.
	_, _, list := e.do("GET", "/cloudupload", "", "")
	if strings.Count(list, "<clouduploadjob ") != 2 || strings.Index(list, `name="`+name+`"`) > strings.Index(list, `name="`+failed+`"`) {
		t.Errorf("list:\n%s", list)
	}
	_, _, list = e.do("GET", "/cloudupload?name="+failed+"&name=999&name="+name, "", "")
	if strings.Count(list, "<clouduploadjob ") != 2 || strings.Index(list, `name="`+name+`"`) < strings.Index(list, `name="`+failed+`"`) {
		t.Errorf("list by name:\n%s", list)
	}

	// Errors: a missing image creates no job, an unknown target is refused
	// with the uploader's message, unknown ids are 404 everywhere.
	if _, status, _ := e.do("POST", strings.Replace(query, "jeos.raw", "nope.raw", 1), "", "instant"); status != "404 image not found: home:alice/images/x86_64/jeos/nope.raw" {
		t.Errorf("missing image: %s", status)
	}
	if _, status, _ := e.do("POST", strings.Replace(query, "target=test", "target=azure", 1), "", "{}"); status != `400 target "azure" is not known` {
		t.Errorf("unknown target: %s", status)
	}
	if _, _, list := e.do("GET", "/cloudupload", "", ""); strings.Count(list, "<clouduploadjob ") != 2 {
		t.Errorf("refused requests created jobs:\n%s", list)
	}
	for _, r := range [][2]string{{"GET", "/cloudupload/999"}, {"GET", "/cloudupload/999/_log"}, {"POST", "/cloudupload/999?cmd=kill"},
		{"PUT", "/cloudupload/999"}, {"GET", "/cloudupload/next"}, {"GET", "/cloudupload/next-id"}} {
		if _, status, _ := e.do(r[0], r[1], "", "x"); status != "404 no such job" {
			t.Errorf("%s %s: %s", r[0], r[1], status)
		}
	}
	if _, status, _ := e.do("POST", "/cloudupload/"+name+"?cmd=kill", "", ""); status != "200 OK" {
		t.Errorf("kill of a final job: %s", status)
	}

	// Restart: the jobs are still there, ids are not reused.
	e.main.Close()
	e.restart()
	if _, _, list := e.do("GET", "/cloudupload", "", ""); strings.Count(list, "<clouduploadjob ") != 2 {
		t.Errorf("after restart:\n%s", list)
	}
	if again := e.create("instant"); again == name || again == failed {
		t.Errorf("id %s reused", again)
	}
}

// TestPut is the internal route: skeleton, then PUT of the image.
func TestPut(t *testing.T) {
	e := start(t)
	skel := "<clouduploadjob>\n  <user>bob</user>\n  <target>test</target>\n  <project>P</project>\n  <repository>R</repository>\n" +
		"  <package>K</package>\n  <arch>x86_64</arch>\n  <filename>img.raw</filename>\n  <size>5</size>\n  <details>" + hex.EncodeToString([]byte("instant")) + "</details>\n</clouduploadjob>\n"
	code, status, body := e.do("POST", "/cloudupload", "text/xml", skel)
	if code != 200 || jobField(t, body, "state") != "created" {
		t.Fatalf("skeleton: %s %s", status, body)
	}
	name := jobField(t, body, "name")
	if _, status, body := e.do("PUT", "/cloudupload/"+name, "application/octet-stream", "12345"); status != "200 OK" || body != "<status code=\"ok\" />\n" {
		t.Fatalf("PUT: %s %q", status, body)
	}
	if doc := e.wait(name); jobField(t, doc, "details") != "5" {
		t.Errorf("after PUT:\n%s", doc)
	}
	if _, status, _ := e.do("PUT", "/cloudupload/"+name, "", "12345"); status != "400 job is not in created state" {
		t.Errorf("second PUT: %s", status)
	}
}

// TestStreamAndKill follows a running job's log as it grows, kills the job
// and sees the stream end.
func TestStreamAndKill(t *testing.T) {
	e := start(t)
	name := e.create("slow")
	resp, err := http.Get(e.url + "/cloudupload/" + name + "/_log")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	seen := map[string]bool{}
	for len(seen) < 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early: %v (seen %v)", err, seen)
		}
		if strings.HasPrefix(line, "tick ") {
			seen[line] = true
		}
	}
	// Other ways to read a running log: nostream answers at once.
	if code, _, log := e.do("GET", "/cloudupload/"+name+"/_log?nostream=1&start=-8", "", ""); code != 200 || len(log) != 8 {
		t.Errorf("nostream tail: %d %q", code, log)
	}
	if _, _, doc := e.do("GET", "/cloudupload/"+name, "", ""); jobField(t, doc, "state") != "uploading" || jobField(t, doc, "pid") == "" {
		t.Errorf("running job:\n%s", doc)
	}
	if _, status, body := e.do("POST", "/cloudupload/"+name, "application/x-www-form-urlencoded", "command=kill"); status != "200 OK" || body != "<status code=\"ok\" />\n" {
		t.Fatalf("kill: %s %q", status, body)
	}
	if _, _, doc := e.do("GET", "/cloudupload/"+name, "", ""); jobField(t, doc, "state") != "failed" || jobField(t, doc, "details") != "killed" {
		t.Errorf("killed job:\n%s", doc)
	}
	if _, err := io.ReadAll(br); err != nil {
		t.Errorf("stream: %v", err)
	}

	// A job that waits for a slot streams nothing until it runs, then its
	// whole log.
	e2 := start(t, "--max-uploads", "1")
	first := e2.create("slow")
	queued := e2.create("instant")
	code, _, log := e2.do("GET", "/cloudupload/"+queued+"/_log?nostream=1", "", "")
	if code != 200 || log != "" {
		t.Errorf("queued log: %d %q", code, log)
	}
	done := make(chan string)
	go func() {
		resp, err := http.Get(e2.url + "/cloudupload/" + queued + "/_log")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	os.WriteFile(filepath.Join(e2.release, "release"), nil, 0o644)
	if log := <-done; !strings.Contains(log, "uploading jeos.raw for alice to test\n") {
		t.Errorf("streamed log of the queued job: %q", log)
	}
	if doc := e2.wait(first); jobField(t, doc, "state") != "succeeded" {
		t.Errorf("first:\n%s", doc)
	}
}

func TestToken(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600)
	e := start(t, "--token-file", tokenFile)
	if _, status, _ := e.do("POST", query, "", "instant"); status != "401 authorization required" {
		t.Errorf("without token: %s", status)
	}
	if code, _, body := e.do("POST", query, "", "instant", "Authorization", "Bearer s3cret"); code != 200 {
		t.Errorf("with token: %d %s", code, body)
	}
	if code, _, _ := e.do("GET", "/cloudupload", "", ""); code != 200 {
		t.Errorf("GET with a token configured: %d", code)
	}
}

// TestGeneratedKeys: without --pubkey/--privkey a key pair is generated in
// the state dir at first start and kept.
func TestGeneratedKeys(t *testing.T) {
	state := t.TempDir()
	pub, priv, generated, err := loadKeys(state, "", "")
	if err != nil || !generated {
		t.Fatal(err, generated)
	}
	fi, err := os.Stat(priv)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key: %v %v", fi.Mode(), err)
	}
	block, _ := pem.Decode(pub)
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil || k.(*rsa.PublicKey).Size()*8 != KeyBits {
		t.Errorf("public key: %v", err)
	}
	pub2, priv2, generated2, err := loadKeys(state, "", "")
	if err != nil || generated2 || string(pub2) != string(pub) || priv2 != priv {
		t.Errorf("second start: generated %v, same %v, %v", generated2, string(pub2) == string(pub), err)
	}
	// Only a private key: the public key is derived.
	pub3, _, _, err := loadKeys(t.TempDir(), "", priv)
	if err != nil || string(pub3) != string(pub) {
		t.Errorf("derived public key differs: %v", err)
	}

	e := start(t)
	_, _, body := e.do("GET", "/cloudupload/_pubkey", "", "")
	pubPath, _ := testKeys()
	want, _ := os.ReadFile(pubPath)
	if body != string(want) {
		t.Errorf("served key differs")
	}
	if _, _, info := e.do("GET", "/cloudupload/_pubkey?view=info", "", ""); !strings.Contains(info, `algo="rsa" keysize="2048" fingerprint="`) {
		t.Errorf("info: %q", info)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	cfg := filepath.Join(dir, "server.conf")
	os.WriteFile(cfg, []byte(`# test config
listen = 127.0.0.1:9999
max-uploads = 8
mirror = a=`+dir+`/a
mirror = b = `+dir+`/b
kill-grace = 5s
`), 0o644)
	m := NewMain()
	m.Stderr = io.Discard
	if err := m.ParseFlags([]string{"--config", cfg, "--max-uploads", "3"}); err != nil {
		t.Fatal(err)
	}
	c := m.Config
	if c.Listen != "127.0.0.1:9999" || c.MaxUploads != 3 || c.KillGrace != 5*time.Second || c.Mirrors.String() != "a="+dir+"/a,b="+dir+"/b" || c.MaxUploadsPerUser != 2 {
		t.Errorf("%+v", c)
	}
	m = NewMain()
	m.Stderr = io.Discard
	if err := m.ParseFlags([]string{"--config", cfg, "--mirror", "c=" + dir + "/c"}); err != nil || m.Config.Mirrors.String() != "c="+dir+"/c" {
		t.Errorf("mirror on the command line: %v %v", m.Config.Mirrors, err)
	}
	for content, want := range map[string]string{
		"nope = 1\n":           `unknown key "nope"`,
		"listen\n":             "line 1: want `key = value`",
		"max-uploads = x\n":    "max-uploads: parse error",
		"config = other\n":     `unknown key "config"`,
		"mirror = =x\n":        "want NAME=DIR",
		"max-uploads = 0\n":    "--max-uploads must be at least 1",
		"log-level = chatty\n": "--log-level",
		"repserver = http://x\nbuild-root = /b\n": "not both",
		"mirror = d=/nonexistent\n":               "--mirror d=/nonexistent: the directory does not exist",
		"mirror = d=" + cfg + "\n":                "--mirror d=" + cfg + ": not a directory",
	} {
		os.WriteFile(cfg, []byte(content), 0o644)
		m := NewMain()
		m.Stderr = io.Discard
		if err := m.ParseFlags([]string{"--config", cfg}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", content, err, want)
		}
	}
}

// TestRepServer fetches the image from a repository server over HTTP.
func TestRepServer(t *testing.T) {
	img := []byte(strings.Repeat("image data ", 100000))
	var asked []string
	var mu sync.Mutex
	rep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.EscapedPath())
		mu.Unlock()
		if r.URL.Path != "/build/home:alice/images/x86_64/jeos/jeos.raw" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(img))
	}))
	defer rep.Close()
	e := start(t, "--repserver", rep.URL)
	name := e.create("instant")
	if doc := e.wait(name); jobField(t, doc, "state") != "succeeded" || jobField(t, doc, "details") != strconv.Itoa(len(img)) {
		t.Errorf("job:\n%s", doc)
	}
	if _, status, _ := e.do("POST", strings.Replace(query, "jeos.raw", "nope.raw", 1), "", "instant"); status != "404 image not found: home:alice/images/x86_64/jeos/nope.raw" {
		t.Errorf("missing image: %s", status)
	}
	if _, _, list := e.do("GET", "/cloudupload", "", ""); strings.Count(list, "<clouduploadjob ") != 1 {
		t.Errorf("list:\n%s", list)
	}
}
