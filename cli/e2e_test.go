package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/cli"
	"github.com/cloudupload/cloudupload/client"
	"github.com/cloudupload/cloudupload/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// bin holds cloudupload-server, clouduploader and cloudupload, built once
// per test binary.
var bin struct {
	once sync.Once
	dir  string
	err  error
}

func buildCommands(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		if bin.dir, bin.err = os.MkdirTemp("", "cloudupload-cli-test"); bin.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", bin.dir+"/", "github.com/cloudupload/cloudupload/cmd/cloudupload-server",
			"github.com/cloudupload/cloudupload/cmd/clouduploader", "github.com/cloudupload/cloudupload/cmd/cloudupload")
		if out, err := cmd.CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.dir
}

// env is a real cloudupload-server with the real clouduploader, a build
// root holding one image and a mirror tree "demo", and the built client.
type env struct {
	t      testing.TB
	bin    string
	url    string
	root   string // build root
	mirror string
	home   string // the client's HOME: no config file unless a test writes one
	image  []byte // build root's P/R/x86_64/K/img.raw

	history testutil.SyncBuffer // the client's runs, shown when the test fails
	env     []string            // for every run of the client
}

func start(t testing.TB, serverArgs ...string) *env {
	t.Helper()
	e := &env{t: t, bin: buildCommands(t)}
	dir := t.TempDir()
	e.root, e.mirror, e.home = filepath.Join(dir, "build"), filepath.Join(dir, "mirror"), filepath.Join(dir, "home")
	for _, d := range []string{e.mirror, e.home, filepath.Join(e.root, "P/R/x86_64/K")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.image = bytes.Repeat([]byte("cloudupload image\n"), 100000)
	if err := os.WriteFile(filepath.Join(e.root, "P/R/x86_64/K/img.raw"), e.image, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--mirror", "demo=" + e.mirror, "--kill-grace", "5s"}, serverArgs...)
	e.url = testutil.StartDaemon(t, e.bin, e.root, nil, args...).URL
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client runs:\n%s", e.history.String())
		}
		// Before the daemon stops (cleanups run last first): let every
		// job end, as uploaders outlive a stopped daemon and would
		// still write in the state directory while it is removed.
		e.settle()
	})
	return e
}

// settle waits up to 30 s until no job is unfinished.
func (e *env) settle() {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var jobs []client.Job
		// --config: whatever config file the test left behind.
		r := e.run("", nil, "list", "--config", os.DevNull, "--json", "--state", "active")
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &jobs) == nil && len(jobs) == 0 {
			return
		}
	}
	e.t.Error("jobs still unfinished 30 s after the test")
}

// result is one run of bin/cloudupload.
type result struct {
	code           int
	stdout, stderr string
}

// run runs bin/cloudupload with args, CLOUDUPLOAD_URL set to the server,
// stdin and extra environment variables.
func (e *env) run(stdin string, extraEnv []string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "cloudupload"), args...)
	cmd.Env = append([]string{"CLOUDUPLOAD_URL=" + e.url, "HOME=" + e.home, "USER=tester", "PATH=" + os.Getenv("PATH")}, e.env...)
	cmd.Env = append(cmd.Env, extraEnv...) // the last value of a variable wins
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("cloudupload %v: %v", args, err)
	}
	e.history.Write(fmt.Appendf(nil, "cloudupload %s: exit %d\nstdout:\n%s\nstderr:\n%s\n", strings.Join(args, " "), r.code, r.stdout, r.stderr))
	return r
}

// ok runs the client and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run("", nil, args...)
	if r.code != 0 {
		e.t.Fatalf("cloudupload %v: exit %d: %s", args, r.code, r.stderr)
	}
	return r
}

// dataFile writes target data to a file and returns its path.
func (e *env) dataFile(data string) string {
	e.t.Helper()
	p := filepath.Join(e.t.TempDir(), "data.json")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func decodeJob(t testing.TB, s string) client.Job {
	t.Helper()
	var j client.Job
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		t.Fatalf("not a JSON job: %v\n%s", err, s)
	}
	return j
}

// published returns the path in the mirror tree of a mirror job's result
// "demo:<path>".
func (e *env) published(j client.Job) string {
	e.t.Helper()
	p, ok := strings.CutPrefix(j.Details, "demo:")
	if !ok {
		e.t.Fatalf("job %d details %q is not a publication in demo", j.ID, j.Details)
	}
	return filepath.Join(e.mirror, filepath.FromSlash(p))
}

// TestSubmitFollowListShow: submit by the build-root route and follow the
// real uploader's log to the end; the image is in the mirror tree; list
// (table, filters, JSON) and show (text, JSON) describe the job.
func TestSubmitFollowListShow(t *testing.T) {
	e := start(t)
	data := e.dataFile(`{"tree": "demo", "series": "cli/submit"}`)
	r := e.ok("submit", "--target", "mirror", "--data", data, "-f", "P/R/x86_64/K/img.raw")
	if !strings.Contains(r.stdout, "uploader succeeded") || !strings.Contains(r.stdout, "published demo:cli/submit/") {
		t.Errorf("submit -f did not print the uploader's log:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "job 1 succeeded") {
		t.Errorf("submit -f did not say how the job ended:\n%s", r.stderr)
	}

	job := decodeJob(t, e.ok("show", "1", "--json").stdout)
	if job.ID != 1 || job.State != "succeeded" || job.User != "tester" || job.Target != "mirror" ||
		job.Project != "P" || job.Filename != "img.raw" || job.Size != int64(len(e.image)) {
		t.Errorf("show --json: %+v", job)
	}
	if got, err := os.ReadFile(e.published(job)); err != nil || !bytes.Equal(got, e.image) {
		t.Errorf("published image: %v (%d bytes, want %d)", err, len(got), len(e.image))
	}
	show := e.ok("show", "1").stdout
	for _, want := range []string{"state     succeeded", "details   " + job.Details, "build     P/R/x86_64/K", "size      1.7 MiB (1800000 bytes)"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}

	// A second job by another user, from stdin, not followed.
	r = e.run(`{"tree": "demo", "series": "cli/other"}`, nil, "submit", "--target", "mirror", "--data", "-", "--user", "other", "P/R/x86_64/K/img.raw")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "job 2 ") {
		t.Fatalf("submit: exit %d, %q", r.code, r.stdout)
	}
	e.ok("wait", "2")

	table := e.ok("list").stdout
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.HasPrefix(lines[1], "1 ") || !strings.Contains(lines[2], "other") {
		t.Errorf("list:\n%s", table)
	}
	if got := e.ok("list", "--user", "other").stdout; strings.Count(got, "\n") != 2 || !strings.Contains(got, "2   ") {
		t.Errorf("list --user other:\n%s", got)
	}
	var jobs []client.Job
	if err := json.Unmarshal([]byte(e.ok("list", "--json", "--state", "failed").stdout), &jobs); err != nil || len(jobs) != 0 {
		t.Errorf("list --state failed: %v %+v", err, jobs)
	}
	if err := json.Unmarshal([]byte(e.ok("list", "--json", "--state", "finished", "--target", "mirror").stdout), &jobs); err != nil || len(jobs) != 2 {
		t.Errorf("list --state finished: %v %+v", err, jobs)
	}
	if err := json.Unmarshal([]byte(e.ok("list", "--json", "2").stdout), &jobs); err != nil || len(jobs) != 1 || jobs[0].ID != 2 {
		t.Errorf("list 2: %v %+v", err, jobs)
	}
	if got := e.ok("log", "1").stdout; !strings.HasSuffix(got, "uploader succeeded after "+lastWord(got)) {
		t.Errorf("log 1:\n%s", got)
	}
}

// lastWord is the last word of the text, to compare a line whose end is a
// duration.
func lastWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1] + "\n"
}

// TestPushFile sends a file by the source-server route (skeleton + PUT).
func TestPushFile(t *testing.T) {
	e := start(t)
	src := filepath.Join(t.TempDir(), "appliance.x86_64.raw")
	img := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 300000)
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.ok("push", "--target", "mirror", "--data", e.dataFile(`{"tree": "demo"}`), "--json", src)
	job := decodeJob(t, r.stdout)
	if job.Filename != "appliance.x86_64.raw" || job.Project != "home:tester" || job.Package != "appliance" || job.Size != int64(len(img)) {
		t.Errorf("pushed job: %+v", job)
	}
	if !strings.Contains(r.stderr, "sent 2.0 MiB") {
		t.Errorf("push did not report what it sent:\n%s", r.stderr)
	}
	if r := e.run("", nil, "wait", "--json", job.Name()); r.code != 0 {
		t.Fatalf("wait: exit %d", r.code)
	} else {
		job = decodeJob(t, r.stdout)
	}
	if got, err := os.ReadFile(e.published(job)); err != nil || !bytes.Equal(got, img) {
		t.Errorf("published image: %v (%d bytes, want %d)", err, len(got), len(img))
	}
}

// TestWaitExitStatus: wait exits 0 for a job that succeeded and 1 for one
// that failed (the mirror target refuses a build id that exists), with the
// final job as JSON.
func TestWaitExitStatus(t *testing.T) {
	e := start(t)
	data := e.dataFile(`{"tree": "demo", "series": "cli/wait", "build_id": "b1"}`)
	e.ok("submit", "--target", "mirror", "--data", data, "P/R/x86_64/K/img.raw")
	if r := e.run("", nil, "wait", "1"); r.code != 0 || !strings.Contains(r.stderr, "job 1 succeeded") {
		t.Errorf("wait for a job that succeeds: exit %d, %q", r.code, r.stderr)
	}
	// The same build id with other files fails (the same files again would
	// be a re-run that succeeds).
	other := e.dataFile(`{"tree": "demo", "series": "cli/wait", "build_id": "b1", "result": "fail"}`)
	e.ok("submit", "--target", "mirror", "--data", other, "P/R/x86_64/K/img.raw")
	r := e.run("", nil, "wait", "--json", "2")
	if r.code != 1 {
		t.Errorf("wait for a job that fails: exit %d, want 1", r.code)
	}
	if j := decodeJob(t, r.stdout); j.State != "failed" || !strings.Contains(j.Details, "b1") {
		t.Errorf("failed job: %+v", j)
	}
	// Several jobs: exit 1 when one failed, the jobs as a JSON array.
	r = e.run("", nil, "wait", "--json", "1", "2")
	var jobs []client.Job
	if err := json.Unmarshal([]byte(r.stdout), &jobs); r.code != 1 || err != nil || len(jobs) != 2 || jobs[0].State != "succeeded" || jobs[1].State != "failed" {
		t.Errorf("wait 1 2: exit %d, %v, %+v", r.code, err, jobs)
	}
	if r := e.run("", nil, "wait", "1", "1"); r.code != 0 || strings.Count(r.stderr, "job 1 succeeded") != 2 {
		t.Errorf("wait 1 1: exit %d, %q", r.code, r.stderr)
	}
	if r := e.run("", nil, "log", "-f", "2"); r.code != 1 || !strings.Contains(r.stderr, "job 2 failed") {
		t.Errorf("log -f of a failed job: exit %d, %q", r.code, r.stderr)
	}
	if r := e.run("", nil, "wait", "77"); r.code != 3 || r.stderr != "cloudupload: job 77: no such job (HTTP 404)\n" {
		t.Errorf("wait for an unknown job: exit %d, %q", r.code, r.stderr)
	}
}

// receivingJob creates a job by the skeleton route and starts its PUT,
// sending 4 KiB of its 1 MiB: the job stays receiving until the test
// writes the rest to the returned pipe (or closes it).
func (e *env) receivingJob(c *client.Client) (client.Job, *io.PipeWriter) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	job, err := c.Skeleton(ctx, "tester", "mirror", client.Build{Project: "P", Repository: "R", Arch: "x86_64", Package: "K", Filename: "slow.raw"},
		1<<20, []byte(`{"tree": "demo"}`))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	putDone := make(chan error, 1)
	go func() { putDone <- c.Put(ctx, job.ID, pr, 1<<20) }()
	t.Cleanup(func() { pw.CloseWithError(io.ErrUnexpectedEOF); <-putDone })
	pw.Write(make([]byte, 4096))
	waitFor(t, func() bool { j, _ := c.Get(ctx, job.ID); return j.State == "receiving" })
	return job, pw
}

// TestKill kills a job while its image is still being received: wait and
// log -f, started before, end with status 1, and the job is failed, killed.
func TestKill(t *testing.T) {
	e := start(t)
	c, err := client.New(e.url, "")
	if err != nil {
		t.Fatal(err)
	}
	job, _ := e.receivingJob(c)

	type bg struct {
		name string
		done chan result
	}
	var waiting []bg
	for _, args := range [][]string{{"wait", job.Name()}, {"log", "-f", job.Name()}} {
		b := bg{strings.Join(args, " "), make(chan result, 1)}
		go func() { b.done <- e.run("", nil, args...) }()
		waiting = append(waiting, b)
	}
	time.Sleep(500 * time.Millisecond) // both are waiting
	r := e.ok("kill", job.Name())
	if r.stdout != fmt.Sprintf("job %d failed: killed\n", job.ID) {
		t.Errorf("kill: %q", r.stdout)
	}
	for _, b := range waiting {
		select {
		case r := <-b.done:
			if r.code != 1 || !strings.Contains(r.stderr, "failed") || !strings.Contains(r.stderr, "killed") {
				t.Errorf("%s: exit %d, %q", b.name, r.code, r.stderr)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not end after the kill", b.name)
		}
	}
	// Killing a finished job leaves it as it is.
	if j := decodeJob(t, e.ok("kill", "--json", job.Name()).stdout); j.State != "failed" || j.Details != "killed" {
		t.Errorf("second kill: %+v", j)
	}
}

// TestFollowOnTerminal runs log -f in this process with stderr taken for
// an 80-column terminal: while the job receives its image, a status line
// is drawn and redrawn in place; once the image is complete the real
// uploader's log is printed and the line is taken off the screen.
func TestFollowOnTerminal(t *testing.T) {
	e := start(t)
	c, err := client.New(e.url, "")
	if err != nil {
		t.Fatal(err)
	}
	job, pw := e.receivingJob(c)
	var stdout, stderr testutil.SyncBuffer
	app := &cli.App{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv:   func(k string) string { return map[string]string{cli.EnvURL: e.url, "HOME": e.home}[k] },
		Terminal: func(w io.Writer) (bool, int) { return w == &stderr, 80 }}
	done := make(chan int, 1)
	go func() { done <- app.Run(context.Background(), []string{"log", "-f", job.Name()}) }()
	// Send the rest slowly, so that the follower draws its line a few times.
	rest := 1<<20 - 4096
	for i := 0; i < 8; i++ {
		pw.Write(make([]byte, rest/8))
		time.Sleep(150 * time.Millisecond)
	}
	pw.Write(make([]byte, rest-rest/8*8))
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("log -f: exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("log -f did not end")
	}
	screen := stderr.String()
	if strings.Count(screen, "\r\x1b[K"+fmt.Sprintf("job %d receiving", job.ID)) < 2 {
		t.Errorf("no status line redrawn while receiving: %q", screen)
	}
	if !strings.HasSuffix(screen, fmt.Sprintf("\r\x1b[Kjob %d succeeded", job.ID)+screen[strings.LastIndex(screen, " after "):]) {
		t.Errorf("the status line was not cleared before the outcome: %q", screen)
	}
	if !strings.Contains(stdout.String(), "uploader succeeded") {
		t.Errorf("log: %q", stdout.String())
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestErrors: the server's refusals are one line with its summary and exit
// 3; usage mistakes exit 2; --help goes to stdout.
func TestErrors(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		args []string
		code int
		want string // the whole of stderr
	}{
		{[]string{"show", "999"}, 3, "cloudupload: job 999: no such job (HTTP 404)\n"},
		{[]string{"submit", "--target", "nope", "P/R/x86_64/K/img.raw"}, 3, "cloudupload: submit: unknown target \"nope\" (known: azure, ec2, mirror, s3) (HTTP 400)\n"},
		{[]string{"submit", "--target", "mirror", "--data", "-", "P/R/x86_64/K/missing.raw"}, 3, ""},
		{[]string{"submit", "--target", "mirror", "--data", "/nonexistent", "P/R/x86_64/K/img.raw"}, 2, "cloudupload: target data: open /nonexistent: no such file or directory\n"},
		{[]string{"submit", "--target", "mirror", "P/R/img.raw"}, 2, "cloudupload: submit: \"P/R/img.raw\" is not PROJECT/REPOSITORY/ARCH/PACKAGE/FILENAME\n"},
		{[]string{"submit", "--target", "mirror", "P/../x86_64/K/img.raw"}, 2, "cloudupload: repository \"..\" must not start with '.'\n"},
		{[]string{"list", "--state", "done"}, 2, ""},
		{[]string{"frobnicate"}, 2, "cloudupload: unknown command \"frobnicate\" (see cloudupload --help)\n"},
		{[]string{"show", "--bogus", "1"}, 2, ""},
		{[]string{"show", "--url", "http://127.0.0.1:1", "1"}, 3, ""},
	} {
		r := e.run(`{"tree": "demo"}`, nil, tc.args...)
		if r.code != tc.code || tc.want != "" && r.stderr != tc.want || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("cloudupload %v: exit %d, stderr %q; want exit %d, %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	if r := e.run(`{"tree": "demo"}`, nil, "submit", "--target", "mirror", "--data", "-", "P/R/x86_64/K/missing.raw"); !strings.Contains(r.stderr, "(HTTP 404)") {
		t.Errorf("missing image: %q", r.stderr)
	}
	for _, c := range []string{"submit", "push", "list", "show", "log", "kill", "wait"} {
		r := e.run("", nil, c, "--help")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: cloudupload "+c) || !strings.Contains(r.stdout, "-url") || r.stderr != "" {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", c, r.code, r.stdout, r.stderr)
		}
	}
	if r := e.run("", nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Exit status") {
		t.Errorf("--help: exit %d, %q", r.code, r.stdout)
	}
	if r := e.run("", nil); r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "Usage: cloudupload") {
		t.Errorf("no command: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestTokenAndConfig: against a server that requires a token, the token
// comes from --token-file, the environment or the config file, in that
// order; the URL likewise from --url, the environment, the config file.
func TestTokenAndConfig(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := start(t, "--token-file", tokenFile)
	data := e.dataFile(`{"tree": "demo"}`)
	submit := []string{"submit", "--target", "mirror", "--data", data, "P/R/x86_64/K/img.raw"}

	r := e.run("", nil, submit...)
	if r.code != 3 || r.stderr != "cloudupload: submit: authorization required (HTTP 401)\n" {
		t.Errorf("without a token: exit %d, %q", r.code, r.stderr)
	}
	if r := e.run("", nil, append([]string{"--token-file", tokenFile}, submit...)...); r.code != 0 {
		t.Errorf("--token-file: exit %d", r.code)
	}
	if r := e.run("", []string{"CLOUDUPLOAD_TOKEN=s3cret-token"}, submit...); r.code != 0 {
		t.Errorf("CLOUDUPLOAD_TOKEN: exit %d", r.code)
	}
	// The flag wins over a wrong token in the environment.
	if r := e.run("", []string{"CLOUDUPLOAD_TOKEN=wrong"}, append(submit, "--token-file", tokenFile)...); r.code != 0 {
		t.Errorf("--token-file over the environment: exit %d", r.code)
	}

	// The config file: url and token; the environment's URL wins over it.
	cfg := filepath.Join(e.home, ".config", "cloudupload", "config")
	os.MkdirAll(filepath.Dir(cfg), 0o700)
	if err := os.WriteFile(cfg, []byte("# test\nurl = "+e.url+"\ntoken = s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.run("", []string{"CLOUDUPLOAD_URL="}, submit...); r.code != 0 || r.stderr != "" {
		t.Errorf("config file: exit %d, %q", r.code, r.stderr)
	}
	if r := e.run("", []string{"CLOUDUPLOAD_URL=http://127.0.0.1:1"}, "show", "1"); r.code != 3 {
		t.Errorf("the environment's URL did not win over the config file: exit %d", r.code)
	}
	if r := e.run("", []string{"CLOUDUPLOAD_URL=http://127.0.0.1:1"}, "--url", e.url, "show", "1"); r.code != 0 {
		t.Errorf("--url did not win over the environment: exit %d", r.code)
	}
	// A config file others may read warns; a bad key is a usage error.
	os.Chmod(cfg, 0o644)
	if r := e.run("", nil, "show", "1"); r.code != 0 || !strings.Contains(r.stderr, "holds a token and others may read it") {
		t.Errorf("readable config: exit %d, %q", r.code, r.stderr)
	}
	os.WriteFile(cfg, []byte("uri = x\n"), 0o600)
	if r := e.run("", nil, "show", "1"); r.code != 2 || !strings.Contains(r.stderr, `config.go`) && !strings.Contains(r.stderr, `unknown key "uri"`) {
		t.Errorf("bad config: exit %d, %q", r.code, r.stderr)
	}
	for _, r := range []string{"s3cret-token"} {
		out := e.run("", nil, "show", "1")
		if strings.Contains(out.stdout+out.stderr, r) {
			t.Errorf("the token appears in the output")
		}
	}
}

// TestChangedImage: an image shorter than announced (a file that shrank
// while it was pushed) fails the PUT with client.ErrChanged naming it, and
// the real server fails the job rather than publishing part of an image.
func TestChangedImage(t *testing.T) {
	e := start(t)
	c, err := client.New(e.url, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	job, err := c.Skeleton(ctx, "tester", "mirror", client.Build{Project: "P", Repository: "R", Arch: "x86_64", Package: "K", Filename: "short.raw"},
		1<<20, []byte(`{"tree": "demo"}`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Put(ctx, job.ID, client.ExactReader(bytes.NewReader(make([]byte, 1000)), 1<<20, "short.raw"), 1<<20)
	if !errors.Is(err, client.ErrChanged) || !strings.Contains(err.Error(), "short.raw") {
		t.Fatalf("Put of a short image: %v", err)
	}
	r := e.run("", nil, "wait", "--json", job.Name())
	if j := decodeJob(t, r.stdout); r.code != 1 || j.State != "failed" {
		t.Errorf("job after a short image: exit %d, %+v", r.code, j)
	}
	if entries, _ := os.ReadDir(e.mirror); len(entries) != 0 {
		t.Errorf("the mirror tree holds %d entries after a failed push", len(entries))
	}
}
