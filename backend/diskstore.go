package backend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/atomicfile"
)

// diskStore is the default Store: job records in the state directory, as
// doc.go describes (next-id, jobs/<id>/job.json and data, done/<id>/). The
// Manager keeps its job's other files in the same directories.
type diskStore struct {
	dir, jobsDir, doneDir string
	log                   *slog.Logger

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
	return s, nil
}

func (s *diskStore) jobDir(id int64) string {
	return filepath.Join(s.jobsDir, strconv.FormatInt(id, 10))
}
func (s *diskStore) doneJobDir(id int64) string {
	return filepath.Join(s.doneDir, strconv.FormatInt(id, 10))
}

// Load reads the state directory: it removes the leftovers of interrupted
// writes and creates, finishes the archiving of jobs that became final just
// before a crash, and sets the next id past every id in use. Temporary
// files of an uploading job are left alone: its uploader and shim may still
// be writing them (they are removed when the job ends). A job whose
// job.json cannot be read is returned failed (reasonUnreadable), its files
// untouched for the operator (unreadableDir); a next-id that cannot be read
// is rebuilt from the highest id on disk.
func (s *diskStore) Load(ctx context.Context) ([]cloudupload.Job, error) {
	if err := removeTemps(s.dir); err != nil {
		return nil, err
	}
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

// Create makes the job's directory with its data, then its job.json: a
// job.json means a complete job.
func (s *diskStore) Create(ctx context.Context, j cloudupload.Job, data []byte) error {
	dir := s.jobDir(j.ID)
	err := os.Mkdir(dir, 0o750)
	if err == nil {
		err = syncDir(s.jobsDir)
	}
	if err == nil {
		err = writeFileAtomic(filepath.Join(dir, fileData), data, 0o600)
	}
	if err == nil {
		err = writeJob(dir, j)
	}
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("create job %d: %w", j.ID, err)
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
	return s.write(j)
}

func (s *diskStore) write(j cloudupload.Job) error {
	if err := writeJob(s.jobDir(j.ID), j); err != nil {
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
	if err := writeJob(s.jobDir(j.ID), j); err != nil {
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

// Close finishes the archives under way.
func (s *diskStore) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.stopped
	return nil
}

// writeJob writes j as dir/job.json.
func writeJob(dir string, j cloudupload.Job) error {
	b, err := encodeJob(j)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, fileJob), b, 0o644)
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

var _ Store = (*diskStore)(nil)
