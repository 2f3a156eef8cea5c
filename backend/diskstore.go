package backend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/atomicfile"
	"github.com/cloudupload/cloudupload/internal/human"
)

// diskStore is the default Store: job records in the state directory, as
// doc.go describes (next-id, jobs/<id>/job.json and data, done/<id>/). The
// Manager keeps its job's other files in the same directories. Each change
// is committed to the journal (journal.go) before the files show it.
type diskStore struct {
	dir, jobsDir, doneDir string
	log                   *slog.Logger
	jl                    *journal // set by Load (journal.go)

	idMu     sync.Mutex
	next     int64 // the next id to give
	reserved int64 // next-id on disk: ids below it may have been given

	mu sync.Mutex
	// active indexes the unfinished jobs, for Claim.
	active map[int64]cloudupload.Job
	// unreadable are the jobs whose record could not be read at Load, with
	// their directories (kept untouched for the operator).
	unreadable map[int64]string

	// Final jobs whose directory the archiver still has to move to done/
	// (see Update), guarded by mu; archived is broadcast after each batch.
	pending  map[int64]bool
	archived *sync.Cond
	wake     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}
}

// OpenDiskStore opens the disk store in dir (created if missing). Load
// must be called before the other methods. Only one process may use a
// state directory at a time (the Manager locks it).
func OpenDiskStore(dir string) (Store, error) {
	return newDiskStore(dir, slog.Default())
}

func newDiskStore(dir string, log *slog.Logger) (*diskStore, error) {
	if dir == "" {
		return nil, errors.New("open disk store: no directory")
	}
	s := &diskStore{
		dir: dir, jobsDir: filepath.Join(dir, dirJobs), doneDir: filepath.Join(dir, dirDone), log: log,
		active: map[int64]cloudupload.Job{}, unreadable: map[int64]string{},
		pending: map[int64]bool{}, wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	s.archived = sync.NewCond(&s.mu)
	go s.archiver()
	for _, d := range []string{s.dir, s.jobsDir, s.doneDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("open disk store: %w", err)
		}
	}
	spreadSubdirs(s.jobsDir, log)
	return s, nil
}

func (s *diskStore) jobDir(id int64) string {
	return filepath.Join(s.jobsDir, strconv.FormatInt(id, 10))
}
func (s *diskStore) doneJobDir(id int64) string {
	return filepath.Join(s.doneDir, strconv.FormatInt(id, 10))
}

// Load reads the state directory: it replays the journals a crash left
// (replay), removes the leftovers of interrupted writes and creates,
// finishes the archiving of jobs that became final just before a crash,
// and sets the next id past every id in use. Temporary
// files of an uploading job are left alone: its uploader and shim may still
// be writing them (they are removed when the job ends). A job whose
// job.json cannot be read is returned failed (reasonUnreadable), its files
// untouched for the operator (unreadableDir); a next-id that cannot be read
// is rebuilt from the highest id on disk.
func (s *diskStore) Load(ctx context.Context) ([]cloudupload.Job, error) {
	for _, d := range []string{s.dir, s.jobsDir} {
		if err := removeTemps(d); err != nil {
			return nil, err
		}
	}
	if err := s.replay(); err != nil {
		return nil, err
	}
	jl, err := openJournal(s.dir, s.log)
	if err != nil {
		return nil, err
	}
	s.jl = jl
	nextPath := filepath.Join(s.dir, fileNextID)
	next, err := readNextID(nextPath)
	if err != nil {
		s.log.Warn("the job id counter cannot be read; continuing after the highest job id on disk", "path", nextPath, "err", err)
		next = 1
	}
	highest := int64(0)
	var jobs []cloudupload.Job
	for _, parent := range []string{s.jobsDir, s.doneDir} {
		ents, err := os.ReadDir(parent)
		if err != nil {
			return nil, err
		}
		for _, de := range ents {
			id, err := parseID(de.Name())
			if err != nil || !de.IsDir() {
				if !atomicfile.IsTemp(de.Name()) {
					s.log.Warn("ignoring unexpected file in the state directory", "path", filepath.Join(parent, de.Name()))
				}
				continue
			}
			highest = max(highest, id)
			dir := filepath.Join(parent, de.Name())
			j, err := readJob(dir)
			switch {
			case errors.Is(err, os.ErrNotExist) && parent == s.jobsDir:
				// Interrupted before its job.json was written: never shown
				// to anyone. Its id stays used.
				s.log.Warn("removing an incompletely created job", "job", id)
				if err := os.RemoveAll(dir); err != nil {
					return nil, err
				}
				continue
			case err != nil:
				s.log.Error("a job's record cannot be read: it is shown as failed and its files are kept for inspection",
					"job", id, "dir", dir, "err", err)
				jobs = append(jobs, s.markUnreadable(id, dir))
				continue
			}
			if !uploaderMayRun(dir, j) {
				if err := removeTemps(dir); err != nil {
					return nil, err
				}
			}
			switch {
			case parent == s.doneDir && !j.State.Final():
				s.log.Error("a job in the done directory is not finished: it is shown as failed and its files are kept for inspection",
					"job", id, "dir", dir, "state", string(j.State))
				jobs = append(jobs, s.markUnreadable(id, dir))
			case parent == s.doneDir:
				jobs = append(jobs, j)
			case j.State.Final():
				// Read again from the done directory, next.
				if err := archiveDir(s.jobsDir, s.doneDir, id); err != nil {
					return nil, fmt.Errorf("archive job %d: %w", id, err)
				}
			default:
				jobs = append(jobs, j)
				s.active[id] = j
			}
		}
	}
	s.next = max(next, highest+1)
	s.reserved = next
	if next < highest+1 {
		if err := writeFileAtomic(nextPath, []byte(strconv.FormatInt(s.next, 10)+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("rewrite the job id counter: %w", err)
		}
	}
	slices.SortFunc(jobs, func(a, b cloudupload.Job) int { return cmp.Compare(a.ID, b.ID) })
	s.log.Info("job store opened", "dir", s.dir, "jobs", len(jobs), "unfinished", len(s.active),
		"unreadable", len(s.unreadable), "next_id", s.next)
	return jobs, nil
}

// uploaderMayRun reports whether job j (in dir) may have a live uploader
// and shim, whose temporary files (result, exit) must be left alone: it is
// uploading, or scheduled with a work directory (the Manager starts the
// shim before it records uploading).
func uploaderMayRun(dir string, j cloudupload.Job) bool {
	return j.State == cloudupload.StateUploading || j.State == cloudupload.StateScheduled && anyIn(dir, dirWork)
}

// markUnreadable records job id, whose record in dir cannot be read, and
// returns it as shown: failed, with a reason, and nothing else known but
// when its directory last changed.
func (s *diskStore) markUnreadable(id int64, dir string) cloudupload.Job {
	s.unreadable[id] = dir
	j := cloudupload.Job{ID: id, State: cloudupload.StateFailed, Details: reasonUnreadable}
	if fi, err := os.Stat(dir); err == nil {
		j.Created, j.Updated, j.Finished = fi.ModTime().Unix(), fi.ModTime().Unix(), fi.ModTime().Unix()
	}
	return j
}

// unreadableDir returns the directory of job id when its record could not
// be read at Load, else "".
func (s *diskStore) unreadableDir(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unreadable[id]
}

// idBlock is how many ids NextID reserves with one write of next-id.
const idBlock = 64

// NextID gives ids from a block reserved in next-id before any of them is
// given, so no id is ever given twice, also across restarts (a restart
// continues after the block: ids are increasing, not contiguous).
func (s *diskStore) NextID(ctx context.Context) (int64, error) {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	id := s.next
	if id >= s.reserved {
		if err := writeFileAtomic(filepath.Join(s.dir, fileNextID), []byte(strconv.FormatInt(id+idBlock, 10)+"\n"), 0o644); err != nil {
			return 0, fmt.Errorf("allocate job id: %w", err)
		}
		s.reserved = id + idBlock
	}
	s.next = id + 1
	return id, nil
}

// Create makes the job's directory under a temporary name with its data
// and job.json, commits the job to the journal, and renames the directory
// to its id: a directory named by its id is a complete job.
func (s *diskStore) Create(ctx context.Context, j cloudupload.Job, data []byte) error {
	doc, err := encodeJob(j)
	if err != nil {
		return fmt.Errorf("create job %d: %w", j.ID, err)
	}
	s.jl.gate.RLock()
	defer s.jl.gate.RUnlock()
	tmp, err := os.MkdirTemp(s.jobsDir, "."+strconv.FormatInt(j.ID, 10)+tmpMarker)
	if err == nil {
		err = os.Chmod(tmp, 0o750)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(tmp, fileData), data, 0o600)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(tmp, fileJob), doc, 0o644)
	}
	if err == nil {
		err = s.jl.commit(&journalRecord{job: j, doc: doc, data: data, flags: recData})
	}
	if err != nil {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
		return fmt.Errorf("create job %d: %w", j.ID, err)
	}
	if err := renameCommitted(tmp, s.jobDir(j.ID)); err != nil {
		os.RemoveAll(tmp)
		return s.jl.diverged(j.ID, err)
	}
	s.mu.Lock()
	s.active[j.ID] = j
	s.mu.Unlock()
	return nil
}

// Update writes job.json. A final job is then archived in the background:
// its image, data and work directory removed and its directory moved to
// done/ (a restart finishes an archive a crash interrupted; waitArchived
// waits for it).
func (s *diskStore) Update(ctx context.Context, j cloudupload.Job) error {
	s.mu.Lock()
	_, ok := s.active[j.ID]
	s.mu.Unlock()
	if !ok {
		s.waitArchived(j.ID)
		if _, err := os.Stat(s.doneJobDir(j.ID)); err == nil {
			return cloudupload.Errorf(cloudupload.ECONFLICT, "job %d is final", j.ID)
		}
		return cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	return s.write(j, nil)
}

func (s *diskStore) write(j cloudupload.Job, image []byte) error {
	if err := s.record(j, image); err != nil {
		return fmt.Errorf("write job %d: %w", j.ID, err)
	}
	s.mu.Lock()
	if j.State.Final() {
		delete(s.active, j.ID)
		s.pending[j.ID] = true
	} else {
		s.active[j.ID] = j
	}
	s.mu.Unlock()
	if j.State.Final() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// record commits j (with image, when not nil) to the journal, then
// shows it in job.json, rewritten in place: a new file per change would
// cost an inode allocation and a deletion each, which ext4 without a
// journal makes expensive. A crash in the middle of the rewrite is
// repaired by the replay of the record at the next start (the checkpoint
// that would drop the record waits for the rewrite). A document that
// needs more space than the file has is staged beside it first, so a
// full disk fails the change before its commit, and renamed after.
func (s *diskStore) record(j cloudupload.Job, image []byte) error {
	path := filepath.Join(s.jobDir(j.ID), fileJob)
	doc, err := encodeJob(j)
	if err != nil {
		return err
	}
	s.jl.gate.RLock()
	defer s.jl.gate.RUnlock()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	tmp := ""
	if int64(len(doc)) > st.Blocks*512 {
		if tmp, err = atomicfile.Stage(path, doc, 0o644); err != nil {
			return err
		}
	}
	rec := &journalRecord{job: j, doc: doc}
	if image != nil {
		rec.image, rec.flags = image, recImage
	}
	if err := s.jl.commit(rec); err != nil {
		if tmp != "" {
			os.Remove(tmp)
		}
		return err
	}
	if tmp != "" {
		err = renameCommitted(tmp, path)
	} else if _, err = f.WriteAt(doc, 0); err == nil {
		err = f.Truncate(int64(len(doc)))
	}
	if err != nil {
		if tmp != "" {
			os.Remove(tmp)
		}
		return s.jl.diverged(j.ID, err)
	}
	return nil
}

// renameCommitted shows a committed change (a variable for the test of a
// failure after the commit).
var renameCommitted = os.Rename

// UpdateImage is Update with the job's image in its record: the Manager
// wrote the image file without syncing it (see imageJournal).
func (s *diskStore) UpdateImage(ctx context.Context, j cloudupload.Job, image []byte) error {
	s.mu.Lock()
	_, ok := s.active[j.ID]
	s.mu.Unlock()
	if !ok {
		return cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	return s.write(j, image)
}

// archiver archives final jobs in batches, with one sync of the two
// directories per batch, until Close.
func (s *diskStore) archiver() {
	defer close(s.stopped)
	for {
		stopping := false
		select {
		case <-s.wake:
		case <-s.stop:
			stopping = true
		}
		s.mu.Lock()
		var ids []int64
		for id := range s.pending {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		slices.Sort(ids)
		for _, id := range ids {
			if err := archiveFiles(s.jobsDir, s.doneDir, id); err != nil {
				s.log.Error("cannot archive a finished job: the next start tries again", "job", id, "err", err)
			}
		}
		if len(ids) > 0 {
			for _, d := range []string{s.doneDir, s.jobsDir} {
				if err := syncDir(d); err != nil {
					s.log.Error("cannot sync the state directory after archiving", "dir", d, "err", err)
				}
			}
		}
		s.mu.Lock()
		for _, id := range ids {
			delete(s.pending, id)
		}
		s.archived.Broadcast()
		s.mu.Unlock()
		if stopping {
			return
		}
	}
}

// waitArchived returns once final job id is in done/ (or its archive
// failed and was logged).
func (s *diskStore) waitArchived(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.pending[id] {
		s.archived.Wait()
	}
}

// Claim counts the uploading jobs of the index: one node, so every slot is
// here.
func (s *diskStore) Claim(ctx context.Context, j cloudupload.Job, limits Limits) (bool, error) {
	s.mu.Lock()
	if _, ok := s.active[j.ID]; !ok {
		s.mu.Unlock()
		return false, cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	running, user := 0, 0
	for id, o := range s.active {
		if o.State == cloudupload.StateUploading && id != j.ID {
			running++
			if o.SlotKey() == j.SlotKey() {
				user++
			}
		}
	}
	if running >= limits.Max || user >= limits.PerUser {
		s.mu.Unlock()
		return false, nil
	}
	// Hold the slot while writing, so concurrent claims count it.
	prev := s.active[j.ID]
	s.active[j.ID] = j
	s.mu.Unlock()
	if err := s.record(j, nil); err != nil {
		s.mu.Lock()
		s.active[j.ID] = prev
		s.mu.Unlock()
		return false, fmt.Errorf("write job %d: %w", j.ID, err)
	}
	return true, nil
}

func (s *diskStore) Data(ctx context.Context, id int64) ([]byte, error) {
	s.mu.Lock()
	_, ok := s.active[id]
	s.mu.Unlock()
	if !ok {
		return nil, cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	b, err := os.ReadFile(filepath.Join(s.jobDir(id), fileData))
	if err != nil {
		return nil, fmt.Errorf("read the target data of job %d: %w", id, err)
	}
	return b, nil
}

func (s *diskStore) Get(ctx context.Context, id int64) (cloudupload.Job, error) {
	for _, dir := range []string{s.jobDir(id), s.doneJobDir(id)} {
		j, err := readJob(dir)
		if err == nil {
			return j, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return j, err
		}
	}
	return cloudupload.Job{}, cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
}

func (s *diskStore) List(ctx context.Context, ids []int64) ([]cloudupload.Job, error) {
	if ids == nil {
		for _, parent := range []string{s.jobsDir, s.doneDir} {
			ents, err := os.ReadDir(parent)
			if err != nil {
				return nil, err
			}
			for _, de := range ents {
				if id, err := parseID(de.Name()); err == nil {
					ids = append(ids, id)
				}
			}
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	out := make([]cloudupload.Job, 0, len(ids))
	for _, id := range ids {
		j, err := s.Get(ctx, id)
		if cloudupload.ErrorCode(err) == cloudupload.ENOTFOUND {
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

func (s *diskStore) Remove(ctx context.Context, id int64) error {
	s.waitArchived(id)
	if err := os.RemoveAll(s.doneJobDir(id)); err != nil {
		return fmt.Errorf("remove job %d: %w", id, err)
	}
	return syncDir(s.doneDir)
}

// Close finishes the archives under way and closes the journal (a last
// checkpoint: a clean stop leaves no journal).
func (s *diskStore) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.stopped
	if s.jl != nil {
		return s.jl.close()
	}
	return nil
}

// archiveDir moves the final job id from jobsDir to doneDir, without its
// image, target data and work directory, and syncs both directories.
func archiveDir(jobsDir, doneDir string, id int64) error {
	if err := archiveFiles(jobsDir, doneDir, id); err != nil {
		return err
	}
	if err := syncDir(doneDir); err != nil {
		return err
	}
	return syncDir(jobsDir)
}

// archiveFiles is archiveDir without the syncs.
func archiveFiles(jobsDir, doneDir string, id int64) error {
	name := strconv.FormatInt(id, 10)
	dir := filepath.Join(jobsDir, name)
	if err := removeTemps(dir); err != nil {
		return err
	}
	for _, name := range []string{fileImage, fileData, dirWork} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	dst := filepath.Join(doneDir, name)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(dir, dst)
}

// replay writes what the journals left by a crash record over the job
// files (each job's last document, and its data and image while it is
// unfinished), makes it durable with one syncfs, and removes the journals.
// A job whose directory is gone (its creation was cut before the
// directory reached the disk) gets it again.
func (s *diskStore) replay() error {
	names, _, err := journalNames(s.dir)
	if err != nil || len(names) == 0 {
		return err
	}
	start := time.Now()
	jobs, records, torn, err := readJournals(names)
	if err != nil {
		return fmt.Errorf("replay the job journal: %w", err)
	}
	ids := slices.Sorted(maps.Keys(jobs))
	for _, id := range ids {
		r := jobs[id]
		dir := s.jobDir(id)
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(s.doneJobDir(id)); err == nil {
				dir = s.doneJobDir(id)
			} else if err := os.Mkdir(dir, 0o750); err != nil {
				return fmt.Errorf("replay job %d: %w", id, err)
			}
		}
		doc, err := encodeJob(r.job)
		if err != nil {
			return err
		}
		if !r.job.State.Final() {
			if r.hasData {
				if err := writeIfDifferent(filepath.Join(dir, fileData), r.data, 0o600); err != nil {
					return fmt.Errorf("replay job %d: %w", id, err)
				}
			}
			if r.hasImage {
				if err := writeIfDifferent(filepath.Join(dir, fileImage), r.image, 0o600); err != nil {
					return fmt.Errorf("replay job %d: %w", id, err)
				}
			}
		}
		if err := writeIfDifferent(filepath.Join(dir, fileJob), doc, 0o644); err != nil {
			return fmt.Errorf("replay job %d: %w", id, err)
		}
	}
	if err := syncFS(s.dir); err != nil {
		return fmt.Errorf("replay the job journal: %w", err)
	}
	for _, name := range names {
		if err := os.Remove(name); err != nil {
			return err
		}
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	args := []any{"journals", len(names), "records", records, "jobs", len(ids), "took", human.Round(time.Since(start))}
	if torn > 0 {
		// Expected after a crash mid-commit: that change was never
		// acknowledged.
		args = append(args, "torn_ends", torn)
	}
	s.log.Info("replayed the job journal", args...)
	return nil
}

var _ Store = (*diskStore)(nil)

// spreadSubdirs marks dir, on ext2/3/4, as the top of a directory
// hierarchy (chattr +T), so the file system spreads its subdirectories
// over its block groups as it does top-level directories, instead of
// packing them, and every file in them, into dir's own group. Each job's
// directory and files then get their inodes in a group of their own: ext4
// without a journal skips, one by one, every inode of a group that was
// freed in the last 30 s, so with thousands of finished jobs' files freed
// beside them, each new file cost a long scan (22-38% of the daemon's CPU
// in a burst of creates). Elsewhere the flag does not exist; nothing is
// lost without it.
func spreadSubdirs(dir string, log *slog.Logger) {
	const fsTopdirFl = 0x00020000 // FS_TOPDIR_FL
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopdirFl != 0 {
		return
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsTopdirFl)); err != nil {
		log.Debug("cannot mark the jobs directory as a top directory", "err", err)
	}
}
