package backend

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
)

// TestCorruptNextID: a garbage or empty id counter does not stop the
// server; ids continue after the highest on disk and none is reused.
func TestCorruptNextID(t *testing.T) {
	for _, content := range []string{"", "garbage\n", "-3\n", "\x00\x00\x00"} {
		cfg := daemonConfig(t.TempDir())
		m := open(t, cfg)
		a := create(t, m, "alice", fakeData{Mode: "succeed"})
		b := create(t, m, "alice", fakeData{Mode: "succeed"})
		m.Kill(context.Background(), b.ID)
		m.Close()
		os.WriteFile(filepath.Join(cfg.StateDir, "next-id"), []byte(content), 0o644)

		m = open(t, cfg)
		c := create(t, m, "alice", fakeData{Mode: "succeed"})
		if c.ID <= max(a.ID, b.ID) {
			t.Fatalf("next-id %q: new job got id %d, reusing an id up to %d", content, c.ID, b.ID)
		}
		m.Close()
		got, _ := os.ReadFile(filepath.Join(cfg.StateDir, "next-id"))
		if n, err := strconv.ParseInt(strings.TrimSpace(string(got)), 10, 64); err != nil || n <= c.ID {
			t.Fatalf("next-id %q: rewritten as %q, want a number above %d", content, got, c.ID)
		}
	}
}

// TestCorruptJobRecord: a truncated or garbage job.json leaves its job
// visible as failed with a reason, its files where they were.
func TestCorruptJobRecord(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	m := open(t, cfg)
	done := create(t, m, "alice", fakeData{Mode: "succeed"})
	m.Kill(context.Background(), done.ID)
	pending := create(t, m, "alice", fakeData{Mode: "succeed"})
	ok := create(t, m, "alice", fakeData{Mode: "succeed"})
	m.Close()

	doneJSON := filepath.Join(cfg.StateDir, "done", done.Name(), "job.json")
	b, _ := os.ReadFile(doneJSON)
	os.WriteFile(doneJSON, b[:len(b)/2], 0o644) // truncated
	pendingJSON := filepath.Join(cfg.StateDir, "jobs", pending.Name(), "job.json")
	os.WriteFile(pendingJSON, []byte("\x00garbage"), 0o644)
	os.WriteFile(filepath.Join(cfg.StateDir, "jobs", pending.Name(), "log"), []byte("what the uploader said\n"), 0o644)

	m = open(t, cfg)
	for _, id := range []int64{done.ID, pending.ID} {
		j, err := m.Get(id)
		if err != nil {
			t.Fatalf("job %d vanished: %v", id, err)
		}
		wantState(t, j, cloudupload.StateFailed, "the server could not read this job's record")
		if l := m.List([]int64{id}); len(l) != 1 {
			t.Fatalf("job %d missing from the list", id)
		}
		if err := m.Kill(context.Background(), id); err != nil {
			t.Fatalf("kill of an unreadable job: %v", err)
		}
		if _, err := m.Wait(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	if j, _ := m.Get(ok.ID); j.State != cloudupload.StateCreated {
		t.Fatalf("the readable job is %s", j.State)
	}
	// The files stay for the operator, the log is still readable.
	if b, _ := os.ReadFile(pendingJSON); string(b) != "\x00garbage" {
		t.Fatal("the unreadable record was changed")
	}
	p, err := m.LogPath(pending.ID)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "what the uploader said\n" {
		t.Fatalf("log of the unreadable job: %q", b)
	}
	if c := create(t, m, "alice", fakeData{Mode: "succeed"}); c.ID <= 3 {
		t.Fatalf("new id %d reuses an id", c.ID)
	}
}

// stallingReader sends some bytes, then blocks until interrupted, as a
// stalled HTTP client does.
type stallingReader struct {
	sent        bool
	interrupted chan struct{}
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		return copy(p, "some"), nil
	}
	<-r.interrupted
	return 0, os.ErrDeadlineExceeded
}

func (r *stallingReader) Interrupt() {
	select {
	case <-r.interrupted:
	default:
		close(r.interrupted)
	}
}

// TestReceiveStalled: an image that stops arriving fails the job after the
// idle timeout; a kill of a stalled receive is final at once, not after the
// kill grace.
func TestReceiveStalled(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.ReceiveIdleTimeout = 300 * time.Millisecond
	cfg.KillGrace = time.Hour
	m := open(t, cfg)
	ctx := context.Background()

	j := create(t, m, "alice", fakeData{Mode: "succeed"})
	err := m.Receive(ctx, j.ID, &stallingReader{interrupted: make(chan struct{})}, 100)
	wantCode(t, err, cloudupload.EINVALID, "the image stopped arriving (nothing received for 300ms)")
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "the image stopped arriving (nothing received for 300ms)")
	if exists(filepath.Join(cfg.StateDir, "done", j.Name(), "image")) {
		t.Fatal("the partial image was kept")
	}

	cfg2 := daemonConfig(t.TempDir())
	cfg2.KillGrace = time.Hour
	m2 := open(t, cfg2)
	j = create(t, m2, "alice", fakeData{Mode: "succeed"})
	errc := make(chan error, 1)
	go func() { errc <- m2.Receive(ctx, j.ID, &stallingReader{interrupted: make(chan struct{})}, 100) }()
	waitFor(t, "receiving", func() bool { g, _ := m2.Get(j.ID); return g.State == cloudupload.StateReceiving })
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m2.Kill(kctx, j.ID); err != nil {
		t.Fatalf("kill of a stalled receive: %v", err)
	}
	wantCode(t, <-errc, cloudupload.ECONFLICT, "job was killed")
	g, _ = m2.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")
}

// TestKillAtStart kills jobs the moment they are uploading, when the shim
// may not yet have started the uploader: the kill must still reach the
// uploader, not wait for the kill grace (an hour here).
func TestKillAtStart(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.KillGrace = time.Hour
	m := open(t, cfg)
	shared := t.TempDir()
	for range 10 {
		j := create(t, m, "alice", fakeData{Mode: "sleep", Dir: shared})
		receive(t, m, j.ID, "image")
		waitFor(t, "uploading", func() bool { g, _ := m.Get(j.ID); return g.State == cloudupload.StateUploading })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := m.Kill(ctx, j.ID)
		cancel()
		if err != nil {
			p, _ := m.LogPath(j.ID)
			b, _ := os.ReadFile(p)
			out, _ := exec.Command("ps", "-eo", "pid,pgid,stat,args").Output()
			t.Fatalf("kill right after the start: %v\njob log:\n%s\n%s", err, b, out)
		}
		if g, _ := m.Get(j.ID); g.State != cloudupload.StateFailed {
			t.Fatalf("job %s after kill", g.State)
		}
	}
}

// TestValidatorGone: an idle validator process that went away is replaced
// without the create noticing.
func TestValidatorGone(t *testing.T) {
	m := open(t, daemonConfig(t.TempDir()))
	create(t, m, "alice", fakeData{Mode: "succeed"})
	m.validators.mu.Lock()
	if len(m.validators.idle) != 1 {
		m.validators.mu.Unlock()
		t.Fatalf("%d idle validators after a create, want 1", len(m.validators.idle))
	}
	p := m.validators.idle[0]
	m.validators.mu.Unlock()
	p.cmd.Process.Kill()
	p.cmd.Wait()
	create(t, m, "alice", fakeData{Mode: "succeed"})
	_, err := m.Create(context.Background(), testJob("alice"), fakeData{Invalid: "bad field"}.bytes())
	wantCode(t, err, cloudupload.EINVALID, "bad field")
}
