package backend

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
)

// The test binary doubles as the shim and as a daemon that a test can
// SIGKILL. The uploader is testdata/fakeuploader, built by TestMain without
// the race detector (a race-enabled binary takes about a second to start
// here).
const (
	envFake   = "CLOUDUPLOAD_TEST_FAKE_UPLOADER" // path of the fake uploader
	envDaemon = "CLOUDUPLOAD_TEST_DAEMON"
	envData   = "CLOUDUPLOAD_TEST_DAEMON_DATA"
)

func TestMain(m *testing.M) {
	RunShimIfRequested()
	if dir := os.Getenv(envDaemon); dir != "" {
		os.Exit(testDaemon(dir, os.Getenv(envData)))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "backend-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	fake := filepath.Join(tmp, "fakeuploader")
	gobin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "the backend tests build their fake uploader with go, which is not on PATH")
		return 1
	}
	build := exec.Command(gobin, "build", "-o", fake, "./testdata/fakeuploader")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the fake uploader:", err)
		return 1
	}
	os.Setenv(envFake, fake)
	return m.Run()
}

// fakeData is the target data of testdata/fakeuploader: it says how to
// behave. Keep in sync with testdata/fakeuploader/main.go.
type fakeData struct {
	Mode    string // succeed, fail, failnoresult, sleep, stubborn, wait, progress
	Result  string // result file content
	Dir     string // shared directory for markers (wait, stubborn)
	Invalid string // validate: reject with this message (exit 2)
	Crash   bool   // validate: fail with exit 1
	Secret  string // must never show up in argv or logs
	Total   int64  // progress: bytes to report in steps of 1 MiB every 20 ms
}

func (d fakeData) bytes() []byte {
	b, _ := json.Marshal(d)
	return b
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// testDaemon runs a Manager on dir, creates one job with the given target
// data, prints "ready <id> <pid>" once its uploader runs, and waits to be
// killed.
func testDaemon(dir, data string) int {
	m, err := Open(context.Background(), daemonConfig(dir))
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	j, err := m.Create(context.Background(), testJob("alice"), []byte(data))
	if err == nil {
		err = m.Receive(context.Background(), j.ID, strings.NewReader("image"), 5)
	}
	if err != nil {
		fmt.Println("create:", err)
		return 1
	}
	for {
		if j, _ = m.Get(j.ID); j.State == cloudupload.StateUploading && j.Pid != 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("ready %d %d\n", j.ID, j.Pid)
	select {}
}

func daemonConfig(dir string) Config {
	var logw io.Writer = io.Discard
	if os.Getenv("CLOUDUPLOAD_TEST_LOG") != "" {
		logw = os.Stderr
	}
	return Config{
		StateDir:    dir,
		Uploader:    os.Getenv(envFake),
		UploaderEnv: []string{"FAKE_EXTRA=yes"},
		KillGrace:   300 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(logw, nil)),
	}
}

func testJob(user string) cloudupload.Job {
	return cloudupload.Job{
		User: user, Target: "fake", Project: "home:test", Repository: "images", Arch: "x86_64",
		Package: "appliance", Filename: "appliance.raw.xz", Origin: cloudupload.OriginPut,
	}
}

// open opens a Manager on cfg and closes it, and stops any uploader it
// leaves, when the test ends.
func open(t testing.TB, cfg Config) *Manager {
	t.Helper()
	m, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAll(m) })
	return m
}

// stopAll closes m and kills the uploaders it leaves running.
func stopAll(m *Manager) {
	m.Close()
	for _, j := range m.List(nil) {
		if j.State == cloudupload.StateUploading && j.Pid > 0 {
			killGroup(context.Background(), j.Pid)
		}
	}
}

func create(t testing.TB, m *Manager, user string, d fakeData) cloudupload.Job {
	t.Helper()
	j, err := m.Create(context.Background(), testJob(user), d.bytes())
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return j
}

func receive(t testing.TB, m *Manager, id int64, image string) {
	t.Helper()
	if err := m.Receive(context.Background(), id, strings.NewReader(image), int64(len(image))); err != nil {
		t.Fatalf("receive job %d: %v", id, err)
	}
}

// wait waits for job id to become final.
func wait(t testing.TB, m *Manager, id int64) cloudupload.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	j, err := m.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait for job %d: %v (state %s, details %q)", id, err, j.State, j.Details)
	}
	return j
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readMarker(t testing.TB, path string) int {
	t.Helper()
	waitFor(t, path, func() bool { return exists(path) })
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func wantState(t testing.TB, j cloudupload.Job, state cloudupload.State, details string) {
	t.Helper()
	if j.State != state || j.Details != details {
		t.Fatalf("job %d is %s (%q), want %s (%q)", j.ID, j.State, j.Details, state, details)
	}
}

func wantCode(t testing.TB, err error, code, msg string) {
	t.Helper()
	if cloudupload.ErrorCode(err) != code || cloudupload.ErrorMessage(err) != msg {
		t.Fatalf("error %v: code %q message %q, want %q %q", err, cloudupload.ErrorCode(err), cloudupload.ErrorMessage(err), code, msg)
	}
}

// diskJob reads a job's job.json from the state directory.
func diskJob(t testing.TB, dir string, id int64) cloudupload.Job {
	t.Helper()
	for _, sub := range []string{dirJobs, dirDone} {
		j, err := readJob(filepath.Join(dir, sub, strconv.FormatInt(id, 10)))
		if err == nil {
			return j
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	t.Fatalf("job %d not on disk", id)
	return cloudupload.Job{}
}

// recordDiskJob records j in state directory dir as a daemon that died
// just after would have: in jobs/<id>/job.json and in a journal of its own
// after the others (so a replay at the next start ends with it).
func recordDiskJob(t testing.TB, dir string, j cloudupload.Job) {
	t.Helper()
	b, err := encodeJob(j)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, dirJobs, j.Name(), fileJob), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, last, err := journalNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := (&journalRecord{job: j}).encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, journalPrefix+strconv.FormatInt(last+1, 10)), rec, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fakeFetcher serves content; with block set it writes half, then waits for
// block to close or ctx to end.
type fakeFetcher struct {
	content []byte
	block   chan struct{}
	missing bool
	fail    error // returned by Fetch after writing half

	mu      sync.Mutex
	offsets []int64
	started chan struct{} // receives when Fetch has written half (if not nil)
}

func (f *fakeFetcher) Stat(ctx context.Context, j cloudupload.Job) (int64, error) {
	if f.missing {
		return 0, cloudupload.Errorf(cloudupload.ENOTFOUND, "image not found: %s/%s/%s/%s/%s", j.Project, j.Repository, j.Arch, j.Package, j.Filename)
	}
	return int64(len(f.content)), nil
}

func (f *fakeFetcher) Fetch(ctx context.Context, j cloudupload.Job, dst *os.File, offset int64) (int64, error) {
	f.mu.Lock()
	f.offsets = append(f.offsets, offset)
	f.mu.Unlock()
	half := int64(len(f.content) / 2)
	if offset < half {
		if _, err := dst.Write(f.content[offset:half]); err != nil {
			return 0, err
		}
		offset = half
	}
	if f.fail != nil {
		return 0, f.fail
	}
	if f.block != nil {
		if f.started != nil {
			f.started <- struct{}{}
		}
		select {
		case <-f.block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if _, err := dst.Write(f.content[offset:]); err != nil {
		return 0, err
	}
	return int64(len(f.content)), nil
}

// startDaemon runs testDaemon in a child process on dir and returns it with
// the job id and shim pid it reports.
func startDaemon(t *testing.T, dir string, d fakeData) (*exec.Cmd, int64, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envDaemon+"="+dir, envData+"="+string(d.bytes()))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	var id int64
	var pid int
	if _, serr := fmt.Sscanf(line, "ready %d %d", &id, &pid); err != nil || serr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("daemon: %q %v", line, err)
	}
	t.Cleanup(func() { killGroup(context.Background(), pid) })
	return cmd, id, pid
}

// sigkill kills the child daemon with SIGKILL and reaps it.
func sigkill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

func contains(t testing.TB, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(want)) {
		t.Fatalf("%s does not contain %q:\n%s", path, want, b)
	}
}
