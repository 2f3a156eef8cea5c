package backend

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
)

// TestRecoveryReadopt SIGKILLs a daemon mid-upload: the next daemon
// re-adopts the live uploader and records its outcome.
func TestRecoveryReadopt(t *testing.T) {
	dir, shared := t.TempDir(), t.TempDir()
	daemon, id, shim := startDaemon(t, dir, fakeData{Mode: "wait", Dir: shared, Result: "ami-readopted"})
	uploader := readMarker(t, filepath.Join(shared, "started-"+strconv.FormatInt(id, 10)))
	sigkill(t, daemon)
	if !processAlive(shim, 0) || !processAlive(uploader, 0) {
		t.Fatal("the uploader died with the daemon")
	}

	m := open(t, daemonConfig(dir))
	j, _ := m.Get(id)
	wantState(t, j, cloudupload.StateUploading, "uploading")
	if j.Pid != shim {
		t.Fatalf("pid %d, want %d", j.Pid, shim)
	}
	os.WriteFile(filepath.Join(shared, "release-"+j.Name()), nil, 0o644)
	j = wait(t, m, id)
	wantState(t, j, cloudupload.StateSucceeded, "ami-readopted")
	contains(t, filepath.Join(dir, "done", j.Name(), "log"), "uploader succeeded after")
	if groupAlive(shim) {
		t.Fatal("the uploader's group outlived its job")
	}
}

// TestRecoveryLost: the uploader died while the daemon was down, leaving no
// exit status.
func TestRecoveryLost(t *testing.T) {
	dir, shared := t.TempDir(), t.TempDir()
	daemon, id, shim := startDaemon(t, dir, fakeData{Mode: "wait", Dir: shared})
	readMarker(t, filepath.Join(shared, "started-"+strconv.FormatInt(id, 10)))
	sigkill(t, daemon)
	if err := killGroup(context.Background(), shim); err != nil {
		t.Fatal(err)
	}
	m := open(t, daemonConfig(dir))
	j, _ := m.Get(id)
	wantState(t, j, cloudupload.StateFailed, "the server lost the uploader (it was not running after a restart)")
}

// TestRecoveryFinishedWhileDown: the uploader ended while the daemon was
// down; its outcome comes from the exit file.
func TestRecoveryFinishedWhileDown(t *testing.T) {
	dir, shared := t.TempDir(), t.TempDir()
	daemon, id, shim := startDaemon(t, dir, fakeData{Mode: "wait", Dir: shared, Result: "ami-while-down"})
	name := strconv.FormatInt(id, 10)
	readMarker(t, filepath.Join(shared, "started-"+name))
	sigkill(t, daemon)
	os.WriteFile(filepath.Join(shared, "release-"+name), nil, 0o644)
	waitFor(t, "the shim to end", func() bool {
		return !processAlive(shim, 0) && exists(filepath.Join(dir, "jobs", name, "exit"))
	})
	m := open(t, daemonConfig(dir))
	j, _ := m.Get(id)
	wantState(t, j, cloudupload.StateSucceeded, "ami-while-down")
}

// TestRecoveryKillResumed: the daemon died during a kill's grace period;
// the next one finishes the kill.
func TestRecoveryKillResumed(t *testing.T) {
	dir, shared := t.TempDir(), t.TempDir()
	daemon, id, shim := startDaemon(t, dir, fakeData{Mode: "stubborn", Dir: shared})
	name := strconv.FormatInt(id, 10)
	uploader := readMarker(t, filepath.Join(shared, "started-"+name))
	grandchild := readMarker(t, filepath.Join(shared, "grandchild-"+name))
	sigkill(t, daemon)
	j := diskJob(t, dir, id)
	j.Details = detailsKilling
	recordDiskJob(t, dir, j)

	m := open(t, daemonConfig(dir))
	j = wait(t, m, id)
	wantState(t, j, cloudupload.StateFailed, "killed")
	for _, pid := range []int{shim, uploader, grandchild} {
		if processAlive(pid, 0) {
			t.Errorf("process %d survived", pid)
		}
	}
}

// TestRecoveryNoPid: the daemon died after recording uploading but before
// recording the shim's pid, and the uploader runs without its shim: it is
// stopped as a kill stops it (SIGTERM first, so it can clean up) and the
// job fails.
func TestRecoveryNoPid(t *testing.T) {
	t.Run("orphan", func(t *testing.T) { testRecoveryNoPid(t, false) })
	t.Run("succeeded-meanwhile", func(t *testing.T) { testRecoveryNoPid(t, true) })
}

func testRecoveryNoPid(t *testing.T, succeededMeanwhile bool) {
	cfg := daemonConfig(t.TempDir())
	shared := t.TempDir()
	m := open(t, cfg)
	j := create(t, m, "alice", fakeData{Mode: "sleep", Dir: shared})
	m.Close()

	jd := filepath.Join(cfg.StateDir, "jobs", j.Name())
	j.State, j.Details, j.Started = cloudupload.StateUploading, detailsUploading, time.Now().Unix()
	b, _ := encodeJob(j)
	os.WriteFile(filepath.Join(jd, "job.json"), b, 0o644)
	os.WriteFile(filepath.Join(jd, "image"), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(jd, "work"), 0o750)
	cmd := exec.Command(cfg.Uploader, j.User, j.Target, filepath.Join(jd, "image"), filepath.Join(jd, "data"), j.Filename, filepath.Join(jd, "result"))
	cmd.Dir = filepath.Join(jd, "work")
	cmd.Env = append(os.Environ(), "CLOUDUPLOAD_JOB="+j.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	readMarker(t, filepath.Join(shared, "started-"+j.Name()))

	if succeededMeanwhile {
		// As if its shim had ended (after recording a success) while the
		// restarted daemon looked for it.
		os.WriteFile(filepath.Join(jd, "exit"), []byte("0\n"), 0o644)
		os.WriteFile(filepath.Join(jd, "result"), []byte("published\n"), 0o644)
	}
	m = open(t, cfg)
	g := wait(t, m, j.ID)
	if succeededMeanwhile {
		// The stopped process rewrote the result file; the exit status
		// recorded before it is what counts.
		wantState(t, g, cloudupload.StateSucceeded, readResult(filepath.Join(cfg.StateDir, "done", j.Name(), "result")))
	} else {
		wantState(t, g, cloudupload.StateFailed, reasonOrphanStopped)
	}
	<-waited
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("orphan uploader ended %v, want exit status 1 after cleaning up on SIGTERM", cmd.ProcessState)
	}
}

// TestRecoveryNoPidShim: the daemon died before recording the pid of a shim
// that runs: the shim is found by its work directory and re-adopted, and
// the temporary files a live uploader is writing are left alone.
func TestRecoveryNoPidShim(t *testing.T) {
	dir, shared := t.TempDir(), t.TempDir()
	daemon, id, shim := startDaemon(t, dir, fakeData{Mode: "wait", Dir: shared, Result: "ami-found"})
	name := strconv.FormatInt(id, 10)
	readMarker(t, filepath.Join(shared, "started-"+name))
	sigkill(t, daemon)
	j := diskJob(t, dir, id)
	j.Pid, j.PidStart = 0, 0
	recordDiskJob(t, dir, j)
	// As if the uploader were writing its result file right now.
	tmp := filepath.Join(dir, "jobs", name, ".result.tmp-123")
	os.WriteFile(tmp, []byte("partial"), 0o644)

	m := open(t, daemonConfig(dir))
	if !exists(tmp) {
		t.Fatal("a restart removed a temporary file of a live uploader")
	}
	g, _ := m.Get(id)
	if g.State != cloudupload.StateUploading || g.Pid != shim {
		t.Fatalf("job %s pid %d, want uploading, re-adopted pid %d", g.State, g.Pid, shim)
	}
	if d := diskJob(t, dir, id); d.Pid != shim || d.PidStart == 0 {
		t.Fatalf("on disk: pid %d start %d, want the re-adopted shim %d", d.Pid, d.PidStart, shim)
	}
	os.WriteFile(filepath.Join(shared, "release-"+name), nil, 0o644)
	g = wait(t, m, id)
	wantState(t, g, cloudupload.StateSucceeded, "ami-found")
	if exists(filepath.Join(dir, "done", name, ".result.tmp-123")) {
		t.Fatal("the temporary file outlived the job")
	}
}

// TestRecoveryStartedScheduled: the daemon died after starting the
// uploader and before recording the start (the job is still scheduled on
// disk). The restart re-adopts the running uploader instead of starting a
// second one, and records its pid.
func TestRecoveryStartedScheduled(t *testing.T) {
	dir, shared := t.TempDir(), t.TempDir()
	daemon, id, shim := startDaemon(t, dir, fakeData{Mode: "wait", Dir: shared, Result: "ami-once"})
	name := strconv.FormatInt(id, 10)
	marker := filepath.Join(shared, "started-"+name)
	first := readMarker(t, marker)
	sigkill(t, daemon)
	j := diskJob(t, dir, id)
	j.State, j.Details, j.Pid, j.PidStart, j.Started = cloudupload.StateScheduled, detailsScheduled, 0, 0, 0
	recordDiskJob(t, dir, j)
	// As if the shim were writing its exit file right now.
	tmp := filepath.Join(dir, "jobs", name, ".exit.tmp-123")
	os.WriteFile(tmp, []byte("0"), 0o644)

	m := open(t, daemonConfig(dir))
	if !exists(tmp) {
		t.Fatal("a restart removed a temporary file of a live shim")
	}
	g, _ := m.Get(id)
	if g.State != cloudupload.StateUploading || g.Pid != shim {
		t.Fatalf("job %s pid %d, want uploading, re-adopted pid %d", g.State, g.Pid, shim)
	}
	if d := diskJob(t, dir, id); d.State != cloudupload.StateUploading || d.Pid != shim {
		t.Fatalf("on disk: %s pid %d, want uploading with the re-adopted shim %d", d.State, d.Pid, shim)
	}
	os.WriteFile(filepath.Join(shared, "release-"+name), nil, 0o644)
	wantState(t, wait(t, m, id), cloudupload.StateSucceeded, "ami-once")
	if again := readMarker(t, marker); again != first {
		t.Fatalf("the uploader was started again (pid %d, first %d)", again, first)
	}
}

// TestRecoveryReceive: an interrupted fetch resumes where the image file
// ends, an interrupted PUT fails with a reason, a scheduled job runs after
// the restart, and leftovers of interrupted writes are cleaned up.
func TestRecoveryReceive(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.MaxUploads = 1
	shared := t.TempDir()
	content := []byte("0123456789abcdef")
	f1 := &fakeFetcher{content: content, block: make(chan struct{}), started: make(chan struct{}, 1)}
	cfg.Fetcher = f1
	m := open(t, cfg)
	ctx := context.Background()

	busy := create(t, m, "alice", fakeData{Mode: "wait", Dir: shared, Result: "busy-done"})
	receive(t, m, busy.ID, "x")
	readMarker(t, filepath.Join(shared, "started-"+busy.Name()))
	queued := create(t, m, "bob", fakeData{Mode: "succeed", Result: "queued-done"})
	receive(t, m, queued.ID, "y")

	fj := testJob("carol")
	fj.Origin = cloudupload.OriginFetch
	fetched, err := m.Create(ctx, fj, fakeData{Mode: "succeed", Result: "fetched-done"}.bytes())
	if err != nil {
		t.Fatal(err)
	}
	<-f1.started

	put := create(t, m, "dave", fakeData{Mode: "succeed"})
	pr, pw := io.Pipe()
	recvErr := make(chan error, 1)
	go func() { recvErr <- m.Receive(ctx, put.ID, pr, 100) }()
	pw.Write([]byte("partial"))
	m.Close()
	pw.Close()
	wantCode(t, <-recvErr, cloudupload.EINTERNAL, "the server is shutting down")
	for _, want := range []struct {
		id    int64
		state cloudupload.State
	}{{busy.ID, cloudupload.StateUploading}, {queued.ID, cloudupload.StateScheduled}, {fetched.ID, cloudupload.StateReceiving}, {put.ID, cloudupload.StateCreated}} {
		if s := diskJob(t, cfg.StateDir, want.id).State; s != want.state {
			t.Fatalf("job %d is %s on disk after Close, want %s", want.id, s, want.state)
		}
	}
	// Leftovers of interrupted atomic writes.
	tmps := []string{
		filepath.Join(cfg.StateDir, ".next-id"+tmpMarker+"123"),
		filepath.Join(cfg.StateDir, "jobs", queued.Name(), ".job.json"+tmpMarker+"456"),
	}
	for _, p := range tmps {
		os.WriteFile(p, []byte("{"), 0o644)
	}

	f2 := &fakeFetcher{content: content}
	cfg.Fetcher = f2
	m = open(t, cfg)
	for _, p := range tmps {
		if exists(p) {
			t.Errorf("%s left behind", p)
		}
	}
	g, _ := m.Get(put.ID)
	wantState(t, g, cloudupload.StateFailed, "the server restarted while receiving the image; upload it again")
	waitFor(t, "the fetch to finish", func() bool { g, _ := m.Get(fetched.ID); return g.State == cloudupload.StateScheduled })
	if len(f2.offsets) != 1 || f2.offsets[0] != int64(len(content)/2) {
		t.Fatalf("fetch resumed at %v, want %d", f2.offsets, len(content)/2)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.StateDir, "jobs", fetched.Name(), "image")); string(b) != string(content) {
		t.Fatalf("resumed image %q", b)
	}

	// The re-adopted uploader holds the only slot; the queued jobs run after.
	if g, _ := m.Get(queued.ID); g.State != cloudupload.StateScheduled {
		t.Fatalf("queued job is %s", g.State)
	}
	os.WriteFile(filepath.Join(shared, "release-"+busy.Name()), nil, 0o644)
	wantState(t, wait(t, m, busy.ID), cloudupload.StateSucceeded, "busy-done")
	wantState(t, wait(t, m, queued.ID), cloudupload.StateSucceeded, "queued-done")
	wantState(t, wait(t, m, fetched.ID), cloudupload.StateSucceeded, "fetched-done")
}

// TestRecoveryArchive: a job recorded final just before a crash, still in
// jobs/, is archived at Open.
func TestRecoveryArchive(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	m := open(t, cfg)
	j := create(t, m, "alice", fakeData{Mode: "succeed"})
	m.Close()
	jd := filepath.Join(cfg.StateDir, "jobs", j.Name())
	j.State, j.Details, j.Finished = cloudupload.StateSucceeded, "ami-1", time.Now().Unix()
	b, _ := encodeJob(j)
	os.WriteFile(filepath.Join(jd, "job.json"), b, 0o644)
	os.WriteFile(filepath.Join(jd, "image"), []byte("x"), 0o600)
	m = open(t, cfg)
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateSucceeded, "ami-1")
	if exists(jd) || !exists(filepath.Join(cfg.StateDir, "done", j.Name(), "job.json")) ||
		exists(filepath.Join(cfg.StateDir, "done", j.Name(), "image")) || exists(filepath.Join(cfg.StateDir, "done", j.Name(), "data")) {
		t.Fatal("final job not archived at Open")
	}
}
