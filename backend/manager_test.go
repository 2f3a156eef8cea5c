package backend

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"

	"github.com/cloudupload/cloudupload"
)

// TestLifecycle follows one job through every state of a successful
// upload, checking memory and disk at each step.
func TestLifecycle(t *testing.T) {
	var logbuf testutil.SyncBuffer
	cfg := daemonConfig(t.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(&logbuf, nil))
	cfg.MaxUploads = 1
	m := open(t, cfg)
	shared := t.TempDir()

	// A first job holds the only slot, so the second stays scheduled.
	first := create(t, m, "alice", fakeData{Mode: "wait", Dir: shared, Result: "ami-first"})
	receive(t, m, first.ID, "img1")
	readMarker(t, filepath.Join(shared, "started-1"))

	j := create(t, m, "bob", fakeData{Mode: "wait", Dir: shared, Result: "ami-0123", Secret: "s3cr3t-value"})
	wantState(t, j, cloudupload.StateCreated, "waiting to receive image")
	if j.ID != 2 || j.Created == 0 || j.Origin != cloudupload.OriginPut {
		t.Fatalf("created job %+v", j)
	}
	dir := filepath.Join(cfg.StateDir, "jobs", "2")
	if d := diskJob(t, cfg.StateDir, 2); d != j {
		t.Fatalf("job.json %+v, memory %+v", d, j)
	}
	if fi, err := os.Stat(filepath.Join(dir, "data")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("data file: %v %v", fi.Mode(), err)
	}

	// Receiving while the body streams.
	pr, pw := io.Pipe()
	recvErr := make(chan error, 1)
	go func() { recvErr <- m.Receive(context.Background(), j.ID, pr, 10) }()
	pw.Write([]byte("image"))
	waitFor(t, "receiving", func() bool { g, _ := m.Get(j.ID); return g.State == cloudupload.StateReceiving })
	// A PUT's receiving is shown, not written: the image file tells a
	// restart (TestRecoveryReceive).
	if g, _ := m.Get(j.ID); g.Details != "receiving image" || diskJob(t, cfg.StateDir, 2).State != cloudupload.StateCreated {
		t.Fatalf("receiving job %+v, on disk %s", g, diskJob(t, cfg.StateDir, 2).State)
	}
	pw.Write([]byte("-data"))
	pw.Close()
	if err := <-recvErr; err != nil {
		t.Fatal(err)
	}
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateScheduled, "waiting for an upload slot")
	if g.Size != 10 || diskJob(t, cfg.StateDir, 2) != g {
		t.Fatalf("scheduled job %+v, on disk %+v", g, diskJob(t, cfg.StateDir, 2))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "image")); string(b) != "image-data" {
		t.Fatalf("image %q", b)
	}

	// The slot frees: uploading.
	os.WriteFile(filepath.Join(shared, "release-1"), nil, 0o644)
	if f := wait(t, m, first.ID); f.State != cloudupload.StateSucceeded {
		t.Fatalf("first job %+v", f)
	}
	upid := readMarker(t, filepath.Join(shared, "started-2"))
	waitFor(t, "the shim's pid", func() bool { g, _ := m.Get(j.ID); return g.Pid != 0 })
	g, _ = m.Get(j.ID)
	wantState(t, g, cloudupload.StateUploading, "uploading")
	if g.Pid == 0 || g.PidStart == 0 || g.Started == 0 || diskJob(t, cfg.StateDir, 2) != g {
		t.Fatalf("uploading job %+v, on disk %+v", g, diskJob(t, cfg.StateDir, 2))
	}
	if p, err := procStat(upid); err != nil || p.Pgrp != g.Pid {
		t.Fatalf("uploader %d is in group %d (%v), want the shim's %d", upid, p.Pgrp, err, g.Pid)
	}

	os.WriteFile(filepath.Join(shared, "release-2"), nil, 0o644)
	g = wait(t, m, j.ID)
	wantState(t, g, cloudupload.StateSucceeded, "ami-0123")
	if g.Finished == 0 || g.Pid != 0 || diskJob(t, cfg.StateDir, 2) != g {
		t.Fatalf("succeeded job %+v, on disk %+v", g, diskJob(t, cfg.StateDir, 2))
	}
	done := filepath.Join(cfg.StateDir, "done", "2")
	for _, name := range []string{"image", "data", "work"} {
		if exists(filepath.Join(done, name)) || exists(filepath.Join(dir, name)) {
			t.Errorf("%s left behind", name)
		}
	}
	if exists(dir) {
		t.Errorf("%s left behind", dir)
	}
	contains(t, filepath.Join(done, "exit"), "0\n")
	contains(t, filepath.Join(done, "result"), "ami-0123")
	logPath, err := m.LogPath(j.ID)
	if err != nil || logPath != filepath.Join(done, "log") {
		t.Fatalf("log path %s %v", logPath, err)
	}
	contains(t, logPath, "uploader started")
	contains(t, logPath, "uploader succeeded after")
	contains(t, logPath, "fake uploader: user=bob target=fake filename=appliance.raw.xz job=2 project=home:test repository=images arch=x86_64 package=appliance extra=yes data-mode=600 image=\"image-data\" cwd=work stdin=/dev/null pgid-is-parent=true")
	b, _ := os.ReadFile(logPath)
	if bytes.Contains(b, []byte("s3cr3t")) || bytes.Contains(logbuf.Bytes(), []byte("s3cr3t")) {
		t.Fatal("target data leaked into a log")
	}
	for _, want := range []string{"job created", "received image", "upload started", "job finished"} {
		if !bytes.Contains(logbuf.Bytes(), []byte(want)) {
			t.Errorf("daemon log lacks %q:\n%s", want, logbuf.Bytes())
		}
	}
	if l := m.List(nil); len(l) != 2 || l[0].ID != 1 || l[1].ID != 2 {
		t.Fatalf("list %+v", l)
	}
	if l := m.List([]int64{2, 99, 1}); len(l) != 2 || l[0].ID != 2 || l[1].ID != 1 {
		t.Fatalf("list by ids %+v", l)
	}
	if _, err := m.Get(99); cloudupload.ErrorCode(err) != cloudupload.ENOTFOUND {
		t.Fatalf("get unknown: %v", err)
	}
}

func TestUploadFailures(t *testing.T) {
	m := open(t, daemonConfig(t.TempDir()))
	for _, tc := range []struct {
		data    fakeData
		details string
	}{
		{fakeData{Mode: "fail", Result: "quota exceeded for images"}, "quota exceeded for images"},
		{fakeData{Mode: "failnoresult"}, "exit status 3"},
		{fakeData{Mode: "succeed", Result: strings.Repeat("x", 100<<10)}, strings.Repeat("x", 64<<10)},
	} {
		j := create(t, m, "alice", tc.data)
		receive(t, m, j.ID, "img")
		j = wait(t, m, j.ID)
		want := cloudupload.StateFailed
		if tc.data.Mode == "succeed" {
			want = cloudupload.StateSucceeded
		}
		wantState(t, j, want, tc.details)
	}
}

func TestReceiveErrors(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	m := open(t, cfg)
	ctx := context.Background()

	err := m.Receive(ctx, 42, strings.NewReader("x"), 1)
	wantCode(t, err, cloudupload.ENOTFOUND, "no such job")

	j := create(t, m, "alice", fakeData{Mode: "succeed"})
	err = m.Receive(ctx, j.ID, strings.NewReader("abc"), 10)
	wantCode(t, err, cloudupload.EINVALID, "received 3 bytes, expected 10")
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "received 3 bytes, expected 10")
	err = m.Receive(ctx, j.ID, strings.NewReader("abc"), 3)
	wantCode(t, err, cloudupload.ECONFLICT, "job is not in created state")

	j = create(t, m, "alice", fakeData{Mode: "succeed"})
	err = m.Receive(ctx, j.ID, strings.NewReader("too long"), 3)
	wantCode(t, err, cloudupload.EINVALID, "received 4 bytes, expected 3")

	j = create(t, m, "alice", fakeData{Mode: "succeed"})
	err = m.Receive(ctx, j.ID, io.MultiReader(strings.NewReader("ab"), errReader{}), 3)
	wantCode(t, err, cloudupload.EINVALID, "reading the image failed: connection reset")

	// A known size from the job skeleton applies when the body's is unknown.
	sj := testJob("alice")
	sj.Size = 5
	j, err = m.Create(ctx, sj, fakeData{Mode: "succeed", Result: "ok"}.bytes())
	if err != nil {
		t.Fatal(err)
	}
	err = m.Receive(ctx, j.ID, strings.NewReader("1234"), -1)
	wantCode(t, err, cloudupload.EINVALID, "received 4 bytes, expected 5")
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestCreateErrors runs with an uploader that validates over a stream (a
// long-lived process) and with one that only knows `validate`.
func TestCreateErrors(t *testing.T) {
	t.Run("stream", testCreateErrors)
	t.Run("exec", func(t *testing.T) {
		t.Setenv("FAKE_NO_STREAM", "1")
		testCreateErrors(t)
	})
}

func testCreateErrors(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.Fetcher = &fakeFetcher{missing: true}
	m := open(t, cfg)
	ctx := context.Background()

	_, err := m.Create(ctx, testJob("alice"), fakeData{Invalid: "region \"mars-1\" is not a known AWS region"}.bytes())
	wantCode(t, err, cloudupload.EINVALID, "region \"mars-1\" is not a known AWS region")
	_, err = m.Create(ctx, testJob("alice"), fakeData{Invalid: strings.Repeat("é", 400)}.bytes())
	if msg := cloudupload.ErrorMessage(err); len([]rune(msg)) != 300 {
		t.Fatalf("long message kept %d characters", len([]rune(msg)))
	}
	_, err = m.Create(ctx, testJob("alice"), fakeData{Crash: true}.bytes())
	wantCode(t, err, cloudupload.EINTERNAL, "could not validate the target data")
	bad := testJob("alice")
	bad.Package = "../etc"
	_, err = m.Create(ctx, bad, nil)
	wantCode(t, err, cloudupload.EINVALID, "package \"../etc\" must not start with '.'")
	fj := testJob("alice")
	fj.Origin = cloudupload.OriginFetch
	_, err = m.Create(ctx, fj, fakeData{Mode: "succeed"}.bytes())
	wantCode(t, err, cloudupload.ENOTFOUND, "image not found: home:test/images/x86_64/appliance/appliance.raw.xz")

	if l := m.List(nil); len(l) != 0 {
		t.Fatalf("failed creates made jobs: %+v", l)
	}
	if ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "jobs")); len(ents) != 0 {
		t.Fatalf("failed creates left %d job directories", len(ents))
	}
	m.validators.mu.Lock()
	unsupported := m.validators.unsupported
	m.validators.mu.Unlock()
	if want := os.Getenv("FAKE_NO_STREAM") != ""; unsupported != want {
		t.Fatalf("validate-stream judged unsupported: %v, want %v", unsupported, want)
	}
}

func TestFetch(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	f := &fakeFetcher{content: []byte("fetched image content")}
	cfg.Fetcher = f
	m := open(t, cfg)
	fj := testJob("alice")
	fj.Origin = cloudupload.OriginFetch
	j, err := m.Create(context.Background(), fj, fakeData{Mode: "succeed", Result: "ami-fetched"}.bytes())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, cloudupload.StateCreated, "waiting to receive image")
	if j.Size != int64(len(f.content)) {
		t.Fatalf("size %d", j.Size)
	}
	j = wait(t, m, j.ID)
	wantState(t, j, cloudupload.StateSucceeded, "ami-fetched")
	contains(t, filepath.Join(cfg.StateDir, "done", "1", "log"), `image="fetched image content"`)
	if err := m.Receive(context.Background(), j.ID, strings.NewReader("x"), 1); cloudupload.ErrorCode(err) != cloudupload.ECONFLICT {
		t.Fatalf("PUT to a finished job: %v", err)
	}
}

func TestKillCreatedAndScheduled(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.MaxUploads = 1
	m := open(t, cfg)
	ctx := context.Background()
	shared := t.TempDir()

	j := create(t, m, "alice", fakeData{Mode: "succeed"})
	if err := m.Kill(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")
	if diskJob(t, cfg.StateDir, j.ID) != g || !exists(filepath.Join(cfg.StateDir, "done", "1")) {
		t.Fatal("killed job not archived")
	}
	if err := m.Kill(ctx, j.ID); err != nil {
		t.Fatalf("kill of a final job: %v", err)
	}
	wantCode(t, m.Kill(ctx, 77), cloudupload.ENOTFOUND, "no such job")

	busy := create(t, m, "alice", fakeData{Mode: "wait", Dir: shared})
	receive(t, m, busy.ID, "x")
	readMarker(t, filepath.Join(shared, "started-"+busy.Name()))
	q := create(t, m, "bob", fakeData{Mode: "succeed"})
	receive(t, m, q.ID, "x")
	if g, _ := m.Get(q.ID); g.State != cloudupload.StateScheduled {
		t.Fatalf("job is %s, want scheduled", g.State)
	}
	if err := m.Kill(ctx, q.ID); err != nil {
		t.Fatal(err)
	}
	g, _ = m.Get(q.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")
	os.WriteFile(filepath.Join(shared, "release-"+busy.Name()), nil, 0o644)
	wait(t, m, busy.ID)
}

func TestKillReceiving(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	f := &fakeFetcher{content: []byte("0123456789"), block: make(chan struct{}), started: make(chan struct{}, 1)}
	cfg.Fetcher = f
	m := open(t, cfg)
	ctx := context.Background()

	fj := testJob("alice")
	fj.Origin = cloudupload.OriginFetch
	j, err := m.Create(ctx, fj, fakeData{Mode: "succeed"}.bytes())
	if err != nil {
		t.Fatal(err)
	}
	<-f.started
	if g, _ := m.Get(j.ID); g.State != cloudupload.StateReceiving {
		t.Fatalf("job is %s", g.State)
	}
	if err := m.Kill(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")

	// A PUT whose sender stalls.
	j = create(t, m, "alice", fakeData{Mode: "succeed"})
	pr, pw := io.Pipe()
	defer pw.Close()
	recvErr := make(chan error, 1)
	go func() { recvErr <- m.Receive(ctx, j.ID, pr, 100) }()
	pw.Write([]byte("part"))
	waitFor(t, "receiving", func() bool { g, _ := m.Get(j.ID); return g.State == cloudupload.StateReceiving })
	if err := m.Kill(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	g, _ = m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")
	pw.Close() // the receive may still wait for the stalled sender
	wantCode(t, <-recvErr, cloudupload.ECONFLICT, "job was killed")
	if exists(filepath.Join(cfg.StateDir, "jobs", j.Name())) {
		t.Fatal("killed job not archived")
	}
}

func TestKillUploading(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.KillGrace = time.Minute // a well-behaved uploader stops on SIGTERM
	m := open(t, cfg)
	shared := t.TempDir()
	j := create(t, m, "alice", fakeData{Mode: "sleep", Dir: shared})
	receive(t, m, j.ID, "x")
	pid := readMarker(t, filepath.Join(shared, "started-1"))
	if err := m.Kill(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")
	if processAlive(pid, 0) {
		t.Fatal("uploader survived")
	}
	log := filepath.Join(cfg.StateDir, "done", "1", "log")
	// The shim's own "received terminated" line is not asserted: Go hands
	// a caught signal to its channel a moment after it arrives, and an
	// uploader that stops at once may end first.
	contains(t, log, "got SIGTERM, cleaning up")
	contains(t, log, "uploader exited with status 1 after")
}

// TestKillStubborn kills an uploader that ignores SIGTERM and forked a
// grandchild that ignores it too: nothing survives Kill.
func TestKillStubborn(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.KillGrace = 200 * time.Millisecond
	m := open(t, cfg)
	shared := t.TempDir()
	j := create(t, m, "alice", fakeData{Mode: "stubborn", Dir: shared})
	receive(t, m, j.ID, "x")
	uploader := readMarker(t, filepath.Join(shared, "started-1"))
	grandchild := readMarker(t, filepath.Join(shared, "grandchild-1"))
	// The shim's pid is recorded once it runs, maybe after its uploader
	// started.
	waitFor(t, "the shim's pid", func() bool { g, _ := m.Get(j.ID); return g.Pid != 0 })
	g, _ := m.Get(j.ID)
	shim := g.Pid

	// Concurrent kills are safe and all return once the job is final.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- m.Kill(context.Background(), j.ID) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	g, _ = m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")
	for what, pid := range map[string]int{"shim": shim, "uploader": uploader, "grandchild": grandchild} {
		if processAlive(pid, 0) {
			t.Errorf("%s %d survived the kill", what, pid)
		}
	}
	if groupAlive(shim) {
		t.Error("the process group survived the kill")
	}
}

// TestSlots checks the global and per-user limits and the oldest-first
// order: every uploader counts the uploads running when it starts.
func TestSlots(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.MaxUploads, cfg.MaxUploadsPerUser = 2, 1
	m := open(t, cfg)
	shared := t.TempDir()
	d := fakeData{Mode: "wait", Dir: shared}
	release := func(id int64) {
		os.WriteFile(filepath.Join(shared, "release-"+strconv.FormatInt(id, 10)), nil, 0o644)
	}
	started := func() []string {
		b, _ := os.ReadFile(filepath.Join(shared, "order"))
		return strings.Fields(string(b))
	}
	// Two blockers fill the slots while the queue forms.
	b1, b2 := create(t, m, "x", d), create(t, m, "y", d)
	receive(t, m, b1.ID, "x")
	receive(t, m, b2.ID, "x")
	readMarker(t, filepath.Join(shared, "started-1"))
	readMarker(t, filepath.Join(shared, "started-2"))
	var q []cloudupload.Job
	for _, u := range []string{"alice", "alice", "bob", "carol", "bob"} {
		j := create(t, m, u, d)
		receive(t, m, j.ID, "x")
		q = append(q, j)
	}
	for _, j := range q {
		if g, _ := m.Get(j.ID); g.State != cloudupload.StateScheduled {
			t.Fatalf("job %d is %s, want scheduled", j.ID, g.State)
		}
	}
	// Jobs 3 alice, 4 alice, 5 bob, 6 carol, 7 bob. Freeing both slots starts
	// 3 and 5 (4 waits for alice's slot); each later release starts one.
	release(b1.ID)
	release(b2.ID)
	waitFor(t, "two starts", func() bool { return len(started()) == 4*4 })
	for _, step := range []struct {
		release int64
		want    string
	}{{3, "4"}, {5, "6"}, {4, "7"}, {6, ""}, {7, ""}} {
		release(step.release)
		wait(t, m, step.release)
		if step.want != "" {
			readMarker(t, filepath.Join(shared, "started-"+step.want))
		}
	}
	var order []string
	f := started()
	for i := 0; i < len(f); i += 4 {
		order = append(order, f[i])
		total, _ := strconv.Atoi(f[i+2])
		mine, _ := strconv.Atoi(f[i+3])
		if total > 2 || mine > 1 {
			t.Errorf("job %s started with %d uploads running, %d for its user", f[i], total, mine)
		}
	}
	// 1 and 2, then 3 and 5, start together: their uploaders may log in
	// either order.
	if len(order) == 7 {
		slices.Sort(order[0:2])
		slices.Sort(order[2:4])
	}
	if got := strings.Join(order, " "); got != "1 2 3 5 4 6 7" {
		t.Fatalf("start order %s, want 1 2 3 5 4 6 7", got)
	}
	for _, j := range m.List(nil) {
		if j.State != cloudupload.StateSucceeded {
			t.Errorf("job %d is %s", j.ID, j.State)
		}
	}
}

func TestIDsNeverReused(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	m := open(t, cfg)
	if _, err := Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "in use by another server") {
		t.Fatalf("second Open on the same state directory: %v", err)
	}
	a := create(t, m, "alice", fakeData{Mode: "succeed"})
	b := create(t, m, "alice", fakeData{Mode: "succeed"})
	m.Kill(context.Background(), b.ID)
	m.Close()
	if a.ID != 1 || b.ID != 2 {
		t.Fatalf("ids %d %d", a.ID, b.ID)
	}
	// An interrupted create (directory without job.json) is removed and its
	// id stays used; a lost next-id file is rebuilt from the jobs.
	os.Mkdir(filepath.Join(cfg.StateDir, "jobs", "3"), 0o750)
	os.WriteFile(filepath.Join(cfg.StateDir, "next-id"), []byte("4\n"), 0o644)
	m = open(t, cfg)
	if c := create(t, m, "alice", fakeData{Mode: "succeed"}); c.ID != 4 {
		t.Fatalf("id %d, want 4", c.ID)
	}
	if exists(filepath.Join(cfg.StateDir, "jobs", "3")) {
		t.Fatal("incomplete job directory kept")
	}
	m.Close()
	os.Remove(filepath.Join(cfg.StateDir, "next-id"))
	m = open(t, cfg)
	if c := create(t, m, "alice", fakeData{Mode: "succeed"}); c.ID != 5 {
		t.Fatalf("id %d, want 5", c.ID)
	}
	if l := m.List(nil); len(l) != 4 || l[0].ID != 1 || l[3].ID != 5 {
		t.Fatalf("jobs after restarts: %+v", l)
	}
}

func TestRetention(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	m := open(t, cfg)
	for range 3 {
		j := create(t, m, "alice", fakeData{Mode: "succeed"})
		m.Kill(context.Background(), j.ID)
	}
	create(t, m, "alice", fakeData{Mode: "succeed"}) // unfinished: kept
	m.Close()
	// Job 1 ended two hours ago, job 2 half an hour ago.
	for id, ago := range map[int64]time.Duration{1: 2 * time.Hour, 2: 30 * time.Minute} {
		j := diskJob(t, cfg.StateDir, id)
		j.Finished = time.Now().Add(-ago).Unix()
		b, _ := encodeJob(j)
		os.WriteFile(filepath.Join(cfg.StateDir, "done", strconv.FormatInt(id, 10), "job.json"), b, 0o644)
	}
	cfg.Retention = time.Hour
	m = open(t, cfg)
	var ids []int64
	for _, j := range m.List(nil) {
		ids = append(ids, j.ID)
	}
	if len(ids) != 3 || ids[0] != 2 || ids[1] != 3 || ids[2] != 4 {
		t.Fatalf("jobs after retention: %v", ids)
	}
	if exists(filepath.Join(cfg.StateDir, "done", "1")) || !exists(filepath.Join(cfg.StateDir, "done", "2")) {
		t.Fatal("retention removed the wrong jobs")
	}
	if c := create(t, m, "alice", fakeData{Mode: "succeed"}); c.ID <= 4 {
		t.Fatalf("id %d after retention reuses an id", c.ID)
	}
}

// TestFetchFailure: a failed fetch fails the job with a reason for people,
// without server paths.
func TestFetchFailure(t *testing.T) {
	for _, tc := range []struct {
		err     error
		details string
	}{
		{&os.PathError{Op: "open", Path: "/srv/build/secret/path", Err: os.ErrPermission}, "could not fetch the image"},
		{cloudupload.Errorf(cloudupload.ENOTFOUND, "image not found: a/b/c/d/e.raw"), "could not fetch the image: image not found: a/b/c/d/e.raw"},
	} {
		cfg := daemonConfig(t.TempDir())
		cfg.Fetcher = &fakeFetcher{content: []byte("0123456789"), fail: tc.err}
		m := open(t, cfg)
		fj := testJob("alice")
		fj.Origin = cloudupload.OriginFetch
		j, err := m.Create(context.Background(), fj, fakeData{Mode: "succeed"}.bytes())
		if err != nil {
			t.Fatal(err)
		}
		wantState(t, wait(t, m, j.ID), cloudupload.StateFailed, tc.details)
	}
}

// TestUploaderMissing: an uploader that cannot be started fails its job.
func TestUploaderMissing(t *testing.T) {
	// A validator process started before the uploader went away would go
	// on answering: validate by exec, which needs the file each time.
	t.Setenv("FAKE_NO_STREAM", "1")
	cfg := daemonConfig(t.TempDir())
	exe := filepath.Join(t.TempDir(), "clouduploader")
	b, err := os.ReadFile(cfg.Uploader)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Uploader = exe
	m := open(t, cfg)
	j := create(t, m, "alice", fakeData{Mode: "succeed"})
	os.Remove(exe)
	receive(t, m, j.ID, "x")
	wantState(t, wait(t, m, j.ID), cloudupload.StateFailed, "exit status 127")
	contains(t, filepath.Join(cfg.StateDir, "done", j.Name(), "log"), "the server could not start the uploader: no such file or directory")
	if _, err := m.Create(context.Background(), testJob("alice"), nil); cloudupload.ErrorCode(err) != cloudupload.EINTERNAL {
		t.Fatalf("create without an uploader: %v", err)
	}
}
