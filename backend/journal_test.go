package backend

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudupload/cloudupload"
)

// openTestStore opens and loads a disk store in dir.
func openTestStore(t *testing.T, dir string) *diskStore {
	t.Helper()
	s, err := newDiskStore(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// crash stops s as a power loss would: no checkpoint, the journal left as
// it is.
func crash(s *diskStore) {
	close(s.stop)
	<-s.stopped
	close(s.jl.stop)
	<-s.jl.committed
	<-s.jl.ckptDone
	s.jl.f.Close()
	s.jl.sd.Close()
}

// noCheckpoints keeps checkpoints from running during a test, so that
// everything the test does is in the journal.
func noCheckpoints(t *testing.T) {
	old := checkpointEvery
	checkpointEvery = time.Hour
	t.Cleanup(func() { checkpointEvery = old })
}

// TestJournalReplayAfterPowerLoss: jobs are created, moved on, given small
// images and finished; then the machine loses power before a checkpoint.
// The worst such a loss can do to files written without fsync is done to
// every one of them (directories gone, documents and data empty or
// garbage, images missing), and the journal's last record is torn. The
// next Load must show every job as last committed (the torn change is the
// one never acknowledged), with its data and image.
func TestJournalReplayAfterPowerLoss(t *testing.T) {
	noCheckpoints(t)
	for seed := range uint64(8) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) { testPowerLoss(t, seed) })
	}
}

func testPowerLoss(t *testing.T, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 1))
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s := openTestStore(t, dir)
	type want struct {
		job         cloudupload.Job
		data, image []byte
	}
	wants := map[int64]*want{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.NextID(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			j := cloudupload.Job{ID: id, State: cloudupload.StateCreated, User: "u" + strconv.Itoa(i%3), Target: "mirror", Created: 1}
			data := []byte(fmt.Sprintf(`{"tree":"t%d"}`, i))
			if err := s.Create(ctx, j, data); err != nil {
				t.Error(err)
				return
			}
			w := &want{job: j, data: data}
			mu.Lock()
			wants[id] = w
			mu.Unlock()
			if i%4 == 0 {
				return // stays created
			}
			image := bytes.Repeat([]byte{byte(i)}, 100+i*37)
			if err := os.WriteFile(filepath.Join(s.jobDir(id), fileImage), image, 0o600); err != nil {
				t.Error(err)
				return
			}
			j.State, j.Size = cloudupload.StateScheduled, int64(len(image))
			if err := s.UpdateImage(ctx, j, image); err != nil {
				t.Error(err)
				return
			}
			w.job, w.image = j, image
			if i%4 == 1 {
				return // stays scheduled
			}
			j.State = cloudupload.StateUploading
			if ok, err := s.Claim(ctx, j, Limits{Max: 100, PerUser: 100}); err != nil || !ok {
				t.Errorf("claim: %v %v", ok, err)
				return
			}
			w.job = j
			if i%4 == 2 {
				return // stays uploading
			}
			j.State, j.Details, j.Finished = cloudupload.StateSucceeded, "ok", 2
			if err := s.Update(ctx, j); err != nil {
				t.Error(err)
				return
			}
			w.job, w.data, w.image = j, nil, nil
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	s.waitArchivedAll()
	// One more change was being written when the power went.
	var cut cloudupload.Job
	for _, w := range wants {
		if w.job.State == cloudupload.StateScheduled {
			cut = w.job
			break
		}
	}
	cut.State = cloudupload.StateFailed
	torn, err := (&journalRecord{job: cut}).encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	journalFile := s.jl.f.Name()
	crash(s)
	f, err := os.OpenFile(journalFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn[:1+rnd.IntN(len(torn)-1)])
	f.Close()

	// What the power loss did to the files written since the last
	// checkpoint, at worst.
	for id := range wants {
		for _, jd := range []string{s.jobDir(id), s.doneJobDir(id)} {
			if _, err := os.Stat(jd); err != nil {
				continue
			}
			switch rnd.IntN(4) {
			case 0:
				os.RemoveAll(jd)
			case 1:
				os.WriteFile(filepath.Join(jd, fileJob), nil, 0o644)
				os.Remove(filepath.Join(jd, fileImage))
			case 2:
				os.WriteFile(filepath.Join(jd, fileJob), []byte("{garbage"), 0o644)
				os.WriteFile(filepath.Join(jd, fileData), []byte("x"), 0o600)
				os.WriteFile(filepath.Join(jd, fileImage), []byte("short"), 0o600)
			}
		}
	}

	s = openTestStore(t, dir)
	defer s.Close()
	if names, _, _ := journalNames(dir); len(names) != 1 {
		t.Errorf("journals after the replay: %v, want only the new one", names)
	}
	for id, w := range wants {
		got, err := s.Get(ctx, id)
		if err != nil {
			t.Errorf("job %d: %v", id, err)
			continue
		}
		if got != w.job {
			t.Errorf("job %d after the power loss:\n%+v\nwant\n%+v", id, got, w.job)
		}
		data, err := s.Data(ctx, id)
		switch {
		case w.data == nil && err == nil:
			t.Errorf("job %d is final but still has data", id)
		case w.data != nil && (err != nil || !bytes.Equal(data, w.data)):
			t.Errorf("job %d data %q, %v; want %q", id, data, err, w.data)
		}
		if w.image != nil {
			if b, err := os.ReadFile(filepath.Join(s.jobDir(id), fileImage)); err != nil || !bytes.Equal(b, w.image) {
				t.Errorf("job %d image: %d bytes, %v; want %d", id, len(b), err, len(w.image))
			}
		}
	}
}

// waitArchivedAll waits until the archiver has moved every final job.
func (s *diskStore) waitArchivedAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) > 0 {
		s.archived.Wait()
	}
}

// TestJournalGroupCommit: changes that wait while a commit is under way
// share the next fdatasync (the first commit is held until all the others
// wait: on a disk or a tmpfs alike); a checkpoint removes the journal it
// switched out; a clean Close leaves no journal at all.
func TestJournalGroupCommit(t *testing.T) {
	noCheckpoints(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s := openTestStore(t, dir)
	const n = 200
	var once sync.Once
	held, release := make(chan int, 1), make(chan struct{})
	journalSyncHook = func(records int) { once.Do(func() { held <- records; <-release }) }
	defer func() { journalSyncHook = nil }()
	var wg sync.WaitGroup
	for id := range int64(n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Create(ctx, cloudupload.Job{ID: id + 1, State: cloudupload.StateCreated, User: "u", Target: "mirror"}, []byte("{}")); err != nil {
				t.Error(err)
			}
		}()
	}
	first := <-held
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		s.jl.mu.Lock()
		waiting := len(s.jl.waiters)
		s.jl.mu.Unlock()
		if waiting == n-first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records waiting behind the first commit of %d, want %d", waiting, first, n-first)
		}
	}
	close(release)
	wg.Wait()
	s.jl.mu.Lock()
	commits, syncs := s.jl.commits, s.jl.syncs
	s.jl.mu.Unlock()
	t.Logf("%d creates at once: %d records, %d fdatasyncs", n, commits, syncs)
	if commits != n || syncs != 2 {
		t.Errorf("%d records in %d fdatasyncs: want %d in 2 (the held one, then all the others)", commits, syncs, n)
	}
	old := s.jl.f.Name()
	if err := s.jl.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the checkpoint left %s: %v", old, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if names, _, _ := journalNames(dir); len(names) != 0 {
		t.Errorf("journals after a clean stop: %v", names)
	}
	s = openTestStore(t, dir)
	defer s.Close()
	if jobs, _ := s.List(ctx, nil); len(jobs) != n {
		t.Errorf("%d jobs after a restart, want %d", len(jobs), n)
	}
}

// TestJournalRecord: a record reads back as written; any cut of it is a
// torn end; a record whose checksum holds but whose document does not
// decode is an error, never skipped.
func TestJournalRecord(t *testing.T) {
	rec := journalRecord{job: cloudupload.Job{ID: 7, State: cloudupload.StateScheduled, User: "alice"}, data: []byte("d"), image: []byte("image"), flags: recData | recImage}
	b, err := rec.encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readRecord(bufio.NewReader(bytes.NewReader(b)))
	if err != nil || got.job != rec.job || string(got.data) != "d" || string(got.image) != "image" || got.flags != rec.flags {
		t.Fatalf("read back %+v, %v", got, err)
	}
	for cut := 1; cut < len(b); cut++ {
		if _, err := readRecord(bufio.NewReader(bytes.NewReader(b[:cut]))); err != errTorn {
			t.Fatalf("record cut at %d of %d: %v, want a torn end", cut, len(b), err)
		}
	}
	flipped := bytes.Clone(b)
	flipped[len(flipped)-1] ^= 1
	if _, err := readRecord(bufio.NewReader(bytes.NewReader(flipped))); err != errTorn {
		t.Errorf("a flipped bit: %v, want a torn end", err)
	}
	bad := journalRecord{job: cloudupload.Job{ID: 7, State: "nonsense"}}
	b, _ = bad.encode(nil)
	if _, err := readRecord(bufio.NewReader(bytes.NewReader(b))); err == nil || err == errTorn {
		t.Errorf("an undecodable record: %v, want an error", err)
	}
}

// TestJobsDirSpreadsSubdirs: on ext2/3/4 the jobs directory carries the
// top-directory flag (chattr +T), so job directories are spread over the
// block groups (see spreadSubdirs).
func TestJobsDirSpreadsSubdirs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := openTestStore(t, dir)
	defer s.Close()
	var st unix.Statfs_t
	if err := unix.Statfs(s.jobsDir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		t.Logf("the state directory is not on ext2/3/4 (file system type %#x): no flag to set", st.Type)
		return
	}
	f, err := os.Open(s.jobsDir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	if flags&0x00020000 == 0 {
		t.Errorf("jobs/ flags %#x: no FS_TOPDIR_FL", flags)
	}
}

// TestJournalDivergedFiles: when a job's files cannot be written after its
// change was committed, the change fails saying to restart, every later
// change fails too, the journal outlives Close, and the restart's replay
// shows the committed change.
func TestJournalDivergedFiles(t *testing.T) {
	noCheckpoints(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s := openTestStore(t, dir)
	j := cloudupload.Job{ID: 1, State: cloudupload.StateCreated, User: "alice", Target: "mirror"}
	if err := s.Create(ctx, j, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	renameCommitted = func(string, string) error { return syscall.EIO }
	defer func() { renameCommitted = os.Rename }()
	j2 := cloudupload.Job{ID: 2, State: cloudupload.StateCreated, User: "bob", Target: "mirror"}
	err := s.Create(ctx, j2, []byte(`{"b":1}`))
	if err == nil || !strings.Contains(err.Error(), "restart the server") {
		t.Fatalf("create whose directory could not be shown after its commit: %v", err)
	}
	renameCommitted = os.Rename
	j.State = cloudupload.StateFailed
	if err := s.Update(ctx, j); err == nil {
		t.Error("a change after the journal broke was accepted")
	}
	s.Close()
	if names, _, _ := journalNames(dir); len(names) == 0 {
		t.Fatal("Close removed the journal of a change the files do not show")
	}
	s = openTestStore(t, dir)
	defer s.Close()
	if got, err := s.Get(ctx, 2); err != nil || got != j2 {
		t.Errorf("job 2 after the restart: %+v, %v; want %+v", got, err, j2)
	}
	if data, err := s.Data(ctx, 2); err != nil || string(data) != `{"b":1}` {
		t.Errorf("job 2's data after the restart: %q, %v", data, err)
	}
	if got, _ := s.Get(ctx, 1); got.State != cloudupload.StateCreated {
		t.Errorf("job 1 is %s: the refused change was recorded", got.State)
	}
}
