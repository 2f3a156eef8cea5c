package uploader

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cloudupload "github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

// fake is a target for these tests. Its data: {"mode": …, "dir": …}.
//
//	ok         read the whole disk, result "sha256:<hex> <n>"
//	fail       fail at once
//	block      read 1 MiB, log "fake: waiting", wait for cancellation, then
//	           clean up (write dir/cleaned) and return the context's error
//	slowclean  like block, but the cleanup waits for dir/release to exist
//	stuck      like block, but never returns
//	signalled  like ok, but from its end on the process keeps sending
//	           itself SIGTERM, as a kill that comes as the upload
//	           completes (the group's, then the one the shim passes on)
type fake struct{}

type fakeData struct {
	Mode   string `json:"mode"`
	Dir    string `json:"dir"`
	Secret string `json:"secret"`
}

func (fake) Name() string { return "fake" }

func (fake) Check(job targets.Job, data []byte, getenv func(string) string) error {
	var d fakeData
	if err := json.Unmarshal(data, &d); err != nil {
		return cloudupload.Errorf(cloudupload.EINVALID, "target data is not JSON")
	}
	switch d.Mode {
	case "ok", "fail", "block", "slowclean", "stuck", "signalled":
	default:
		return cloudupload.Errorf(cloudupload.EINVALID, "mode %q is not one of ok, fail, block, slowclean, stuck, signalled", d.Mode)
	}
	if job.Arch == "" || job.ID == "" {
		return fmt.Errorf("job without arch or id: %+v", job)
	}
	return nil
}

func (fake) Upload(ctx context.Context, req targets.Request) (string, error) {
	var d fakeData
	json.Unmarshal(req.Data, &d)
	req.Log.Printf("fake: job %s arch %s", req.Job.ID, req.Job.Arch)
	disk, err := req.Image.OpenDisk(ctx)
	if err != nil {
		return "", err
	}
	defer disk.Close()
	switch d.Mode {
	case "fail":
		return "", errors.New("fake failure:\nquota exceeded")
	case "signalled":
		go func() {
			for {
				syscall.Kill(os.Getpid(), syscall.SIGTERM)
				time.Sleep(20 * time.Microsecond)
			}
		}()
		return "done before the kill", nil
	case "ok":
		h := sha256.New()
		n, err := io.Copy(h, disk)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("sha256:%x %d", h.Sum(nil), n), nil
	}
	if _, err := io.CopyN(io.Discard, disk, 1<<20); err != nil {
		return "", err
	}
	req.Log.Printf("fake: waiting")
	<-ctx.Done()
	switch d.Mode {
	case "stuck":
		select {}
	case "slowclean":
		for {
			if _, err := os.Stat(filepath.Join(d.Dir, "release")); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	os.WriteFile(filepath.Join(d.Dir, "cleaned"), nil, 0o644)
	return "", fmt.Errorf("fake: %w", ctx.Err())
}

// TestMain lets the tests run Main in a child process: the test binary
// re-executed with UPLOADER_TEST_MAIN set.
func TestMain(m *testing.M) {
	if os.Getenv("UPLOADER_TEST_MAIN") != "" {
		cleanup, _ := time.ParseDuration(os.Getenv("UPLOADER_TEST_CLEANUP"))
		os.Exit(Main(context.Background(), os.Args[1:], Options{
			Targets: []targets.Target{fake{}}, Getenv: os.Getenv,
			Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
			CleanupTimeout: cleanup, Exit: os.Exit,
		}))
	}
	os.Exit(m.Run())
}

type env map[string]string

func (e env) get(k string) string { return e[k] }

type run struct {
	code           int
	stdout, stderr string
}

func runMain(t *testing.T, ctx context.Context, e env, stdin string, args ...string) run {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, args, Options{
		Targets: []targets.Target{fake{}}, Getenv: e.get,
		Stdin: strings.NewReader(stdin), Stdout: &stdout, Stderr: &stderr,
	})
	return run{code, stdout.String(), stderr.String()}
}

// setup writes an image and target data and returns the argv of a job.
func setup(t *testing.T, mode string) (args []string, dir string, disk []byte) {
	t.Helper()
	dir = t.TempDir()
	disk = make([]byte, 3<<20)
	for i := range disk[:1<<20] {
		disk[i] = byte(i * 7)
	}
	img := filepath.Join(dir, "image")
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(fakeData{Mode: mode, Dir: dir, Secret: "s3cr3t-in-data"})
	if err := os.WriteFile(filepath.Join(dir, "data"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"alice", "fake", img, filepath.Join(dir, "data"), "Leap.aarch64-1.0-Build1.1.raw", filepath.Join(dir, "result")}, dir, disk
}

func readResult(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "result"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(b, []byte("\n")) || bytes.Count(b, []byte("\n")) != 1 {
		t.Errorf("result %q is not one line", b)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".result.tmp-*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	return strings.TrimSuffix(string(b), "\n")
}

func TestCommands(t *testing.T) {
	r := runMain(t, context.Background(), nil, "", "targets")
	if r.code != 0 || r.stdout != "fake\n" {
		t.Errorf("targets: %d %q", r.code, r.stdout)
	}
	for _, h := range []string{"-h", "--help"} {
		r = runMain(t, context.Background(), nil, "", h)
		if r.code != 0 || !strings.Contains(r.stdout, "usage:") {
			t.Errorf("%s: %d %q", h, r.code, r.stdout)
		}
	}
	for _, args := range [][]string{nil, {"a"}, {"a", "b", "c"}, {"validate"}} {
		r = runMain(t, context.Background(), nil, "", args...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "clouduploader: ") || !strings.HasSuffix(r.stderr, "(see clouduploader --help)\n") {
			t.Errorf("%q: %d %q", args, r.code, r.stderr)
		}
	}
}

func TestValidate(t *testing.T) {
	e := env{"CLOUDUPLOAD_JOB": "6", "CLOUDUPLOAD_ARCH": "x86_64"}
	for _, c := range []struct {
		target, data string
		code         int
		stderr       string
	}{
		{"fake", `{"mode":"ok"}`, 0, ""},
		{"fake", `{"mode":"nope"}`, ExitUsage, `mode "nope" is not one of`},
		{"fake", `[`, ExitUsage, "not JSON"},
		{"x", `{}`, ExitUsage, `unknown target "x" (known: fake)`},
		{"fake", strings.Repeat(" ", MaxDataSize+1), ExitUsage, "larger than 10 MiB"},
	} {
		r := runMain(t, context.Background(), e, c.data, "validate", c.target)
		if r.code != c.code || !strings.Contains(r.stderr, c.stderr) || strings.Count(r.stderr, "\n") > 1 {
			t.Errorf("validate %s %.20q: exit %d, stderr %q; want %d, %q", c.target, c.data, r.code, r.stderr, c.code, c.stderr)
		}
	}
}

func TestUploadSucceeds(t *testing.T) {
	args, dir, disk := setup(t, "ok")
	e := env{"CLOUDUPLOAD_JOB": "6", "CLOUDUPLOAD_PROJECT": "home:alice", "CLOUDUPLOAD_REPOSITORY": "images",
		"CLOUDUPLOAD_ARCH": "x86_64", "CLOUDUPLOAD_PACKAGE": "leap"}
	r := runMain(t, context.Background(), e, "", args...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stdout)
	}
	want := fmt.Sprintf("sha256:%x %d", sha256.Sum256(disk), len(disk))
	if got := readResult(t, dir); got != want {
		t.Errorf("result %q, want %q", got, want)
	}
	for _, s := range []string{
		"job 6: home:alice/images/x86_64/leap/Leap.aarch64-1.0-Build1.1.raw to fake for user alice",
		"format raw, file 3.0 MiB, disk 3.0 MiB",
		"fake: job 6 arch x86_64",
		"upload succeeded in",
	} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("log lacks %q:\n%s", s, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "s3cr3t") || strings.Contains(r.stderr, "s3cr3t") {
		t.Errorf("the target data was printed")
	}
}

func TestStartedByHand(t *testing.T) {
	args, _, _ := setup(t, "ok")
	r := runMain(t, context.Background(), nil, "", args...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stdout)
	}
	if want := fmt.Sprintf("fake: job manual-%d arch aarch64", os.Getpid()); !strings.Contains(r.stdout, want) {
		t.Errorf("log lacks %q:\n%s", want, r.stdout)
	}
}

func TestUploadFails(t *testing.T) {
	args, dir, _ := setup(t, "fail")
	r := runMain(t, context.Background(), nil, "", args...)
	if r.code != ExitFailed {
		t.Fatalf("exit %d\n%s", r.code, r.stdout)
	}
	if got := readResult(t, dir); got != "fake failure: quota exceeded" {
		t.Errorf("result %q", got)
	}
	if !strings.Contains(r.stdout, "upload failed after") {
		t.Errorf("log:\n%s", r.stdout)
	}
}

func TestInvalidDataFailsFirst(t *testing.T) {
	args, dir, _ := setup(t, "bogus")
	args[2] = filepath.Join(dir, "no-such-image") // never opened
	r := runMain(t, context.Background(), nil, "", args...)
	if r.code != ExitUsage {
		t.Fatalf("exit %d\n%s", r.code, r.stdout)
	}
	if got := readResult(t, dir); !strings.Contains(got, `invalid target data: mode "bogus"`) {
		t.Errorf("result %q", got)
	}

	args, dir, _ = setup(t, "ok")
	args[1] = "nope"
	r = runMain(t, context.Background(), nil, "", args...)
	if got := readResult(t, dir); r.code != ExitUsage || got != `unknown target "nope" (known: fake)` {
		t.Errorf("unknown target: exit %d, result %q", r.code, got)
	}

	args, dir, _ = setup(t, "ok")
	args[3] = filepath.Join(dir, "missing-data")
	r = runMain(t, context.Background(), nil, "", args...)
	if got := readResult(t, dir); r.code != ExitUsage || strings.Contains(got, dir) || !strings.Contains(got, "target data file") {
		t.Errorf("missing data file: exit %d, result %q", r.code, got)
	}

	args, dir, _ = setup(t, "ok")
	args[4] = "../etc"
	r = runMain(t, context.Background(), nil, "", args...)
	if got := readResult(t, dir); r.code != ExitUsage || !strings.Contains(got, "filename") {
		t.Errorf("bad filename: exit %d, result %q", r.code, got)
	}
}

func TestContextCancelKills(t *testing.T) {
	args, dir, _ := setup(t, "block")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "fake: waiting") {
				cancel()
			}
		}
	}()
	code := Main(ctx, args, Options{Targets: []targets.Target{fake{}}, Stdout: pw})
	pw.Close()
	if code != ExitKilled {
		t.Errorf("exit %d, want %d", code, ExitKilled)
	}
	if got := readResult(t, dir); got != "killed" {
		t.Errorf("result %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "cleaned")); err != nil {
		t.Errorf("the target did not clean up: %v", err)
	}
}

func TestArchFromFilename(t *testing.T) {
	for name, want := range map[string]string{
		"openSUSE-Leap-15.6.x86_64-1.0-Build1.1.raw.xz": "x86_64",
		"SLES.aarch64-1.0.qcow2":                        "aarch64",
		"debian-arm64.img":                              "aarch64",
		"img.ppc64le.raw":                               "ppc64le",
		"img-s390x.raw":                                 "s390x",
		"img.riscv64.raw":                               "riscv64",
		"img.i586.raw":                                  "i586",
		"farm64x.raw":                                   "x86_64",
		"disk.raw":                                      "x86_64",
	} {
		if got := ArchFromFilename(name); got != want {
			t.Errorf("ArchFromFilename(%q) = %q, want %q", name, got, want)
		}
	}
}

// child starts the test binary as the uploader with args and returns it
// with a scanner over its log.
func child(t *testing.T, cleanup string, args ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // as the daemon starts it
	cmd.Env = append(os.Environ(), "UPLOADER_TEST_MAIN=1", "UPLOADER_TEST_CLEANUP="+cleanup)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewScanner(out), &stderr
}

// waitLine reads the log until a line contains s.
func waitLine(t *testing.T, sc *bufio.Scanner, s string) {
	t.Helper()
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return
		}
	}
	t.Fatalf("the log ended without %q", s)
}

func exitCode(t *testing.T, cmd *exec.Cmd, sc *bufio.Scanner) int {
	t.Helper()
	for sc.Scan() {
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode()
}

func TestSIGTERM(t *testing.T) {
	args, dir, _ := setup(t, "block")
	cmd, sc, stderr := child(t, "", args...)
	waitLine(t, sc, "fake: waiting")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd, sc); code != ExitKilled {
		t.Errorf("exit %d, want %d; stderr %s", code, ExitKilled, stderr)
	}
	if got := readResult(t, dir); got != "killed" {
		t.Errorf("result %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "cleaned")); err != nil {
		t.Errorf("the target did not clean up: %v", err)
	}
}

// TestSignalAfterTheOutcome: a kill that arrives as the upload completes,
// and keeps arriving until the process is gone, does not turn the decided
// success into a death by signal (which the daemon would record as killed,
// with the image published).
func TestSignalAfterTheOutcome(t *testing.T) {
	for range 5 {
		args, dir, _ := setup(t, "signalled")
		cmd, sc, stderr := child(t, "", args...)
		if code := exitCode(t, cmd, sc); code != ExitOK {
			t.Fatalf("exit %d (%v), want %d; stderr %s", code, cmd.ProcessState, ExitOK, stderr)
		}
		if got := readResult(t, dir); got != "done before the kill" {
			t.Errorf("result %q", got)
		}
	}
}

func TestSecondSignalWaitsForCleanup(t *testing.T) {
	args, dir, _ := setup(t, "slowclean")
	cmd, sc, _ := child(t, "", args...)
	waitLine(t, sc, "fake: waiting")
	cmd.Process.Signal(syscall.SIGTERM)
	waitLine(t, sc, "stopping the upload and cleaning up")
	cmd.Process.Signal(syscall.SIGINT)
	waitLine(t, sc, "received interrupt again: still cleaning up")
	if _, err := os.Stat(filepath.Join(dir, "result")); err == nil {
		t.Error("result written before the cleanup finished")
	}
	os.WriteFile(filepath.Join(dir, "release"), nil, 0o644)
	if code := exitCode(t, cmd, sc); code != ExitKilled {
		t.Errorf("exit %d, want %d (the first signal decides)", code, ExitKilled)
	}
	if _, err := os.Stat(filepath.Join(dir, "cleaned")); err != nil {
		t.Errorf("the cleanup did not finish: %v", err)
	}
	if got := readResult(t, dir); got != "killed" {
		t.Errorf("result %q", got)
	}
}

func TestStuckCleanupIsBounded(t *testing.T) {
	args, dir, _ := setup(t, "stuck")
	cmd, sc, _ := child(t, "100ms", args...)
	waitLine(t, sc, "fake: waiting")
	cmd.Process.Signal(syscall.SIGINT)
	waitLine(t, sc, "cleanup did not finish within 100ms")
	if code := exitCode(t, cmd, sc); code != ExitSignal+int(syscall.SIGINT) {
		t.Errorf("exit %d, want %d", code, ExitSignal+int(syscall.SIGINT))
	}
	if got := readResult(t, dir); got != "killed" {
		t.Errorf("result %q", got)
	}
}

func TestKilledBeforeStart(t *testing.T) {
	args, dir, _ := setup(t, "block")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := runMain(t, ctx, nil, "", args...)
	if r.code != ExitKilled || strings.Contains(r.stdout, "fake: job") {
		t.Errorf("exit %d, log:\n%s", r.code, r.stdout)
	}
	if got := readResult(t, dir); got != "killed" {
		t.Errorf("result %q", got)
	}
}

// TestSIGTERMToProcessGroup signals the whole group, as the daemon does:
// the xz decompressor dies with the uploader's own cleanup under way; the
// job still ends killed and nothing of the group survives.
func TestSIGTERMToProcessGroup(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatalf("xz is needed: %v", err)
	}
	args, dir, _ := setup(t, "block")
	xzImage := filepath.Join(dir, "image.raw.xz")
	if out, err := exec.Command("sh", "-c", "xz -0 -c < "+args[2]+" > "+xzImage).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v %s", err, out)
	}
	args[2], args[4] = xzImage, "Leap.x86_64-1.0.raw.xz"
	cmd, sc, stderr := child(t, "", args...)
	waitLine(t, sc, "fake: waiting")
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd, sc); code != ExitKilled {
		t.Errorf("exit %d, want %d; stderr %s", code, ExitKilled, stderr)
	}
	if got := readResult(t, dir); got != "killed" {
		t.Errorf("result %q", got)
	}
	if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes of the group survive (kill 0: %v)", err)
	}
}

// TestValidateStream: validate-stream answers as validate exits, request
// after request, with each request's job variables and never the process's
// own.
func TestValidateStream(t *testing.T) {
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	job := map[string]string{"CLOUDUPLOAD_JOB": "6", "CLOUDUPLOAD_ARCH": "x86_64"}
	reqs := []cloudupload.ValidateRequest{
		{Target: "fake", Env: job, Data: []byte(`{"mode":"ok"}`)},
		{Target: "fake", Env: job, Data: []byte(`{"mode":"nope"}`)},
		{Target: "x", Env: job, Data: []byte(`{}`)},
		{Target: "fake", Env: job, Data: bytes.Repeat([]byte(" "), MaxDataSize+1)},
		// The process's own CLOUDUPLOAD_ARCH must not stand in for the job's.
		{Target: "fake", Env: map[string]string{"CLOUDUPLOAD_JOB": "7"}, Data: []byte(`{"mode":"ok"}`)},
	}
	for _, r := range reqs {
		enc.Encode(r)
	}
	r := runMain(t, context.Background(), env{"CLOUDUPLOAD_ARCH": "aarch64", "CLOUDUPLOAD_JOB": "99"}, in.String(), "validate-stream")
	if r.code != 0 {
		t.Fatalf("validate-stream: exit %d, stderr %q", r.code, r.stderr)
	}
	want := []cloudupload.ValidateResponse{
		{Status: 0},
		{Status: ExitUsage, Message: `mode "nope" is not one of ok, fail, block, slowclean, stuck, signalled`},
		{Status: ExitUsage, Message: `unknown target "x" (known: fake)`},
		{Status: ExitUsage, Message: "target data is larger than 10 MiB"},
		{Status: 0}, // the arch comes from the file name then: x86_64 by default
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for i, w := range want {
		var got cloudupload.ValidateResponse
		if err := dec.Decode(&got); err != nil || got != w {
			t.Errorf("answer %d: %+v, %v; want %+v", i, got, err, w)
		}
	}
	if r := runMain(t, context.Background(), nil, "{", "validate-stream"); r.code != ExitUsage || !strings.Contains(r.stderr, "validate-stream:") {
		t.Errorf("bad request: exit %d, stderr %q", r.code, r.stderr)
	}
}
