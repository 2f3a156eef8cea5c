package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/human"
)

// Details of unfinished jobs, for people.
const (
	detailsCreated   = "waiting to receive image"
	detailsReceiving = "receiving image"
	detailsScheduled = "waiting for an upload slot"
	detailsUploading = "uploading"
	// detailsKilling marks an uploading job whose kill is under way; a
	// restarted daemon resumes the kill.
	detailsKilling = "killing"
	detailsKilled  = "killed"

	reasonLost          = "the server lost the uploader (it was not running after a restart)"
	reasonLostStart     = "the server restarted while starting the uploader; the upload did not complete"
	reasonPutRestart    = "the server restarted while receiving the image; upload it again"
	reasonNoExitStatus  = "the uploader ended without reporting an exit status"
	reasonCannotStart   = "the server could not start the uploader"
	reasonUnreadable    = "the server could not read this job's record"
	reasonNoSpace       = "the server ran out of disk space"
	reasonOrphanStopped = "the server restarted while starting the uploader and lost track of it; the uploader was stopped"
	validateTimeout     = 30 * time.Second
	maxResult           = 64 << 10 // bytes of the result file shown as details
	maxValidateMessage  = 300      // characters of validate's message
	receiveBufferSize   = 1 << 20
	adoptPollInterval   = 200 * time.Millisecond
	// shimAppearWait is how long a restart looks for the shim of a job
	// whose uploader was being started when the daemon died, before it
	// concludes the uploader never ran.
	shimAppearWait      = 5 * time.Second
	retentionSweepEvery = time.Hour
	lockWait            = 3 * time.Second
)

// Defaults of Config.
const (
	DefaultReceiveIdleTimeout = 5 * time.Minute
	DefaultMinFreeSpace       = 256 << 20
)

// Manager owns the jobs under one state directory: it stores them, drives
// their state machine, schedules and supervises their uploaders, and
// recovers them after a restart. Only one Manager may use a state directory
// at a time. All methods are safe for concurrent use.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	jobsDir string
	doneDir string

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // goroutines and calls Close waits for
	wake   chan struct{}  // wakes the scheduler; buffered 1

	mu     sync.RWMutex
	closed bool
	jobs   map[int64]*entry
	ids    []int64          // every job id, ascending
	active map[int64]*entry // unfinished jobs

	lockFile *os.File // holds the state directory's lock

	store  Store       // the job records
	disk   *diskStore  // store when it is the state directory's, else nil
	shared SharedStore // store when several nodes share it, else nil
	// lost is closed when this node lost its lease in a shared store (see
	// Lost).
	lost     chan struct{}
	lostOnce sync.Once
	// finalCache keeps final jobs of other nodes read from a shared store.
	finalCache finalJobs

	validators *validators // long-lived `<uploader> validate-stream` processes

	// unreadable are the jobs whose record could not be read at Open
	// (shown failed; recover stops processes still running for them).
	unreadable []*entry

	received atomic.Int64 // bytes of images received, for metrics (progress.go)
	uploaded atomic.Int64 // bytes uploaded by jobs that ended, for metrics
}

// entry is one job in memory.
type entry struct {
	// wmu serializes the job's state changes, each written to disk before
	// it becomes visible in job.
	wmu sync.Mutex
	job cloudupload.Job // read under Manager.mu; written under wmu and Manager.mu
	// done is closed once the job is final (and its processes are gone).
	done chan struct{}

	// Guarded by wmu.
	recvCancel context.CancelFunc // cancels the running receive
	recvDone   chan struct{}      // closed when the running receive stopped
	killing    bool               // Kill was asked
	pgid       int                // the uploader's process group (its shim's pid), 0 if none

	// dir is set for a job whose record could not be read: its files stay
	// where they are, in dir.
	dir string

	killOnce sync.Once

	progress progress // live transfer figures (progress.go)
}

// Open loads the jobs under cfg.StateDir (creating it if missing), recovers
// those a previous daemon left unfinished, removes finished jobs past
// retention, and starts the scheduler.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("open job store: no state directory configured")
	}
	if cfg.Uploader == "" {
		return nil, errors.New("open job store: no uploader configured")
	}
	var err error
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("open job store: %w", err)
	}
	if cfg.Uploader, err = exec.LookPath(cfg.Uploader); err != nil {
		return nil, fmt.Errorf("open job store: uploader: %w", err)
	}
	if cfg.Uploader, err = filepath.Abs(cfg.Uploader); err != nil {
		return nil, fmt.Errorf("open job store: uploader: %w", err)
	}
	if cfg.MaxUploads <= 0 {
		cfg.MaxUploads = 4
	}
	if cfg.MaxUploadsPerUser <= 0 {
		cfg.MaxUploadsPerUser = 2
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 30 * time.Second
	}
	if cfg.ReceiveIdleTimeout <= 0 {
		cfg.ReceiveIdleTimeout = DefaultReceiveIdleTimeout
	}
	if cfg.MinFreeSpace == 0 {
		cfg.MinFreeSpace = DefaultMinFreeSpace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger,
		jobsDir: filepath.Join(cfg.StateDir, dirJobs),
		doneDir: filepath.Join(cfg.StateDir, dirDone),
		wake:    make(chan struct{}, 1),
		jobs:    make(map[int64]*entry),
		active:  make(map[int64]*entry),
	}
	m.lost = make(chan struct{})
	if cfg.Store != nil {
		m.store, m.shared = cfg.Store, cfg.Store
	} else {
		m.disk, err = newDiskStore(cfg.StateDir, cfg.Logger)
		if err != nil {
			return nil, err
		}
		m.store = m.disk
	}
	m.validators = newValidators(cfg.Uploader, append(os.Environ(), cfg.UploaderEnv...), cfg.StateDir)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if err := m.lock(); err != nil {
		m.cancel()
		return nil, fmt.Errorf("open job store %s: %w", cfg.StateDir, err)
	}
	if err := m.load(); err != nil {
		m.cancel()
		m.lockFile.Close()
		return nil, fmt.Errorf("open job store %s: %w", cfg.StateDir, err)
	}
	m.expire()
	m.recover()
	m.wg.Add(3)
	go m.scheduler()
	go m.sweeper()
	go m.awaitImages()
	if m.shared != nil {
		m.wg.Add(1)
		go m.leaseKeeper()
	}
	m.poke()
	return m, nil
}

// Close stops the Manager's goroutines, cancels image transfers in flight
// (they are redone by the next Open) and returns. Uploaders that are running
// keep running; the next Open re-adopts them.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.validators.close()
	return errors.Join(m.store.Close(), m.lockFile.Close())
}

// lock takes the state directory's lock file, so that no two daemons run
// the same jobs. The lock goes with the process (a SIGKILLed daemon's lock
// is free) and is not inherited by uploaders (close-on-exec).
func (m *Manager) lock() error {
	f, err := lockStateDir(m.cfg.StateDir)
	if err != nil {
		return err
	}
	m.lockFile = f
	return nil
}

// lockStateDir takes the lock of the state directory dir (creating it if
// missing); closing the file releases it.
func lockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, fileLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	// A daemon killed while starting a child leaves the lock held for the
	// moment that child takes to exec (close-on-exec then drops it): a
	// restart waits a little before it concludes another server runs.
	for deadline := time.Now().Add(lockWait); ; {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, errors.New("the state directory is in use by another server")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// enter registers a goroutine or call that Close must wait for; false when
// the Manager is closed.
func (m *Manager) enter() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// poke wakes the scheduler without blocking.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Manager) jobDir(id int64) string {
	return filepath.Join(m.jobsDir, strconv.FormatInt(id, 10))
}

func (m *Manager) doneJobDir(id int64) string {
	return filepath.Join(m.doneDir, strconv.FormatInt(id, 10))
}

func (m *Manager) lookup(id int64) (*entry, error) {
	m.mu.RLock()
	e := m.jobs[id]
	m.mu.RUnlock()
	if e == nil {
		return nil, cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	return e, nil
}

// snapshot returns the job as it is in memory.
func (m *Manager) snapshot(e *entry) cloudupload.Job {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return e.job
}

// jobLogger returns a logger with the job's keys.
func (m *Manager) jobLogger(j cloudupload.Job) *slog.Logger {
	return m.log.With("job", j.ID, "target", j.Target, "user", j.User)
}

// Get returns job id, or ENOTFOUND "no such job". It does not touch the disk.
func (m *Manager) Get(id int64) (cloudupload.Job, error) {
	e, err := m.lookup(id)
	if err != nil {
		return m.storeGet(id)
	}
	return m.withProgress(e, m.snapshot(e)), nil
}

// listJobs returns the jobs with the given ids in the order asked, skipping
// unknown ids; ids nil returns every job in ascending id order. It does not
// touch the disk. List (progress.go) adds the live transfer figures.
func (m *Manager) listJobs(ids []int64) []cloudupload.Job {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if ids == nil {
		out := make([]cloudupload.Job, len(m.ids))
		for i, id := range m.ids {
			out[i] = m.jobs[id].job
		}
		return out
	}
	out := make([]cloudupload.Job, 0, len(ids))
	for _, id := range ids {
		if e := m.jobs[id]; e != nil {
			out = append(out, e.job)
		}
	}
	return out
}

// Wait returns job id once it is final (its processes gone), or ctx's
// error.
func (m *Manager) Wait(ctx context.Context, id int64) (cloudupload.Job, error) {
	e, err := m.lookup(id)
	if err != nil && m.shared != nil {
		return m.waitRemote(ctx, id)
	} else if err != nil {
		return cloudupload.Job{}, err
	}
	select {
	case <-e.done:
		m.settled(id)
		return m.snapshot(e), nil
	case <-ctx.Done():
		return m.snapshot(e), ctx.Err()
	}
}

// settled waits until final job id's files are where doc.go says (the
// disk store archives in the background).
func (m *Manager) settled(id int64) {
	if m.disk != nil {
		m.disk.waitArchived(id)
	}
}

// LogPath returns the path of job id's log, which may not exist yet (read it
// as empty). The file is appended to while the job runs and moves to the
// done directory when it ends (an open descriptor stays valid).
func (m *Manager) LogPath(id int64) (string, error) {
	e, err := m.lookup(id)
	if err != nil && m.shared != nil {
		return m.remoteLogPath(id)
	} else if err != nil {
		return "", err
	}
	if e.dir != "" {
		return filepath.Join(e.dir, fileLog), nil
	}
	if m.snapshot(e).State.Final() {
		m.settled(id)
		return filepath.Join(m.doneJobDir(id), fileLog), nil
	}
	p := filepath.Join(m.jobDir(id), fileLog)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		// It became final and moved since we looked (with a shared store
		// the directory moves before the job shows final here).
		if done := filepath.Join(m.doneJobDir(id), fileLog); anyIn(filepath.Dir(done), fileLog) {
			return done, nil
		}
	}
	return p, nil
}

// allocID returns a new job id from the store, which never gives the same
// id twice, also across restarts.
func (m *Manager) allocID() (int64, error) {
	return m.store.NextID(m.ctx)
}

func errShuttingDown() error {
	return cloudupload.Errorf(cloudupload.EINTERNAL, "the server is shutting down")
}

// internal wraps an unexpected error for the API: the message is shown, the
// cause is only logged.
func internal(msg string, err error) error {
	if isNoSpace(err) {
		return &cloudupload.Error{Code: cloudupload.ENOSPACE, Message: reasonNoSpace, Err: err}
	}
	return &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: msg, Err: err}
}

// isNoSpace reports whether err is a full file system or quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Create validates and creates a job. job carries User, Target, Project,
// Repository, Arch, Package, Filename, Size (0 when unknown) and Origin;
// data is the target data. The names are checked (cloudupload.CheckJob),
// the target data by `<uploader> validate <target>` (exit 2: EINVALID with
// the uploader's message; not with Config.NoValidate), and for Origin fetch the image must exist
// (Fetcher.Stat; ENOTFOUND otherwise). Only then is an id assigned and the
// job written, state created; an Origin fetch job then receives its image
// in the background.
func (m *Manager) Create(ctx context.Context, job cloudupload.Job, data []byte) (cloudupload.Job, error) {
	if !m.enter() {
		return cloudupload.Job{}, errShuttingDown()
	}
	defer m.wg.Done()
	if err := cloudupload.CheckJob(&job); err != nil {
		return cloudupload.Job{}, err
	}
	switch job.Origin {
	case cloudupload.OriginPut:
	case cloudupload.OriginFetch:
		if m.cfg.Fetcher == nil {
			return cloudupload.Job{}, cloudupload.Errorf(cloudupload.EINVALID, "this server has no image source configured")
		}
	default:
		return cloudupload.Job{}, internal("internal error", fmt.Errorf("create job: unknown origin %q", job.Origin))
	}
	if job.Size < 0 {
		return cloudupload.Job{}, cloudupload.Errorf(cloudupload.EINVALID, "size must not be negative")
	}
	if err := m.validate(ctx, job, data); err != nil {
		return cloudupload.Job{}, err
	}
	if job.Origin == cloudupload.OriginFetch {
		size, err := m.cfg.Fetcher.Stat(ctx, job)
		if err != nil {
			var e *cloudupload.Error
			if !errors.As(err, &e) {
				err = internal("could not look up the image", err)
			}
			return cloudupload.Job{}, err
		}
		job.Size = size
	}
	if err := m.checkSpace(job.Size); err != nil {
		m.log.Warn("refusing a job", "user", job.User, "target", job.Target, "reason", cloudupload.ErrorMessage(err), "err", err)
		return cloudupload.Job{}, err
	}
	id, err := m.allocID()
	if err != nil {
		return cloudupload.Job{}, internal("could not create the job", err)
	}
	now := time.Now().Unix()
	j := cloudupload.Job{
		ID: id, State: cloudupload.StateCreated, Details: detailsCreated, Created: now, Updated: now,
		User: job.User, Target: job.Target, Project: job.Project, Repository: job.Repository,
		Package: job.Package, Arch: job.Arch, Filename: job.Filename, Size: job.Size, Origin: job.Origin,
		Client: job.Client,
	}
	if err := m.store.Create(ctx, j, data); err != nil {
		return cloudupload.Job{}, internal("could not create the job", err)
	}
	if m.shared != nil {
		if err := m.makeLocalDir(id, data); err != nil {
			// The job is recorded: fail it rather than leave it waiting.
			e := &entry{job: j, done: make(chan struct{})}
			e.wmu.Lock()
			m.move(e, cloudupload.StateFailed, "the server could not prepare the job's directory", nil)
			e.wmu.Unlock()
			return cloudupload.Job{}, internal("could not create the job", fmt.Errorf("create job %d: %w", id, err))
		}
	}
	e := &entry{job: j, done: make(chan struct{})}
	m.mu.Lock()
	m.jobs[id] = e
	m.active[id] = e
	if n := len(m.ids); n == 0 || m.ids[n-1] < id {
		m.ids = append(m.ids, id)
	} else { // a concurrent Create with a higher id was faster
		i, _ := slices.BinarySearch(m.ids, id)
		m.ids = slices.Insert(m.ids, i, id)
	}
	m.mu.Unlock()
	m.jobLogger(j).Info("job created", "project", j.Project, "repository", j.Repository,
		"arch", j.Arch, "package", j.Package, "filename", j.Filename, "origin", string(j.Origin), "client", j.Client)
	if j.Origin == cloudupload.OriginFetch {
		m.goFetch(e)
	}
	return j, nil
}

// validate runs `<uploader> validate <target>` with the target data on
// stdin, unless the uploader cannot (Config.NoValidate).
func (m *Manager) validate(ctx context.Context, job cloudupload.Job, data []byte) error {
	if m.cfg.NoValidate {
		return nil // the uploader checks the data when it runs
	}
	ctx, cancel := context.WithTimeout(ctx, validateTimeout)
	defer cancel()
	if err := m.validateStream(ctx, job, data); !errors.Is(err, errNoStream) {
		return err
	}
	// As many validate processes at once as validate-stream processes:
	// a burst of creates must not start one process per create at once.
	release, err := m.validators.acquire(ctx)
	if err != nil {
		return internal("validating the target data took too long", fmt.Errorf("%s validate %s: waiting for a turn: %w", m.cfg.Uploader, job.Target, err))
	}
	defer release()
	cmd := exec.CommandContext(ctx, m.cfg.Uploader, "validate", job.Target)
	cmd.Stdin = bytes.NewReader(data)
	var stderr boundedBuffer
	stderr.max = 64 << 10
	cmd.Stderr = &stderr
	cmd.Env = m.env(job)
	cmd.Dir = m.cfg.StateDir
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return internal("validating the target data took too long", fmt.Errorf("%s validate %s: %w", m.cfg.Uploader, job.Target, err))
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		msg := firstLine(stderr.String(), maxValidateMessage)
		if msg == "" {
			msg = fmt.Sprintf("the target data is not valid for target %s", job.Target)
		}
		return cloudupload.Errorf(cloudupload.EINVALID, "%s", msg)
	default:
		return internal("could not validate the target data", fmt.Errorf("%s validate %s: %w: %s", m.cfg.Uploader, job.Target, err, firstLine(stderr.String(), maxValidateMessage)))
	}
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	bytes.Buffer
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// firstLine returns the first non-empty line of s, trimmed, valid UTF-8, at
// most max characters.
func firstLine(s string, max int) string {
	for line := range strings.SplitSeq(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			return truncate(strings.ToValidUTF8(line, "\uFFFD"), max)
		}
	}
	return ""
}

// truncate shortens s to at most max characters.
func truncate(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// commit records j as job e's new state: on disk first, then in memory. A
// final job is archived (its image, data and work directory removed, its
// directory moved to done/) before it shows as final. The caller holds
// e.wmu.
func (m *Manager) commit(e *entry, j cloudupload.Job) error {
	return m.commitImage(e, j, nil)
}

// commitImage is commit with the job's image in the record when image is
// not nil (the Store is an imageJournal).
func (m *Manager) commitImage(e *entry, j cloudupload.Job, image []byte) error {
	now := time.Now().Unix()
	j.Updated = now
	final := j.State.Final()
	old := m.snapshot(e)
	if final {
		j.Finished = now
		j.Pid, j.PidStart = 0, 0
		if !old.State.Final() {
			m.finalProgress(e, &old, &j)
		}
	}
	if final && m.shared != nil {
		m.saveLogShared(j.ID)
	}
	var err error
	if ij, ok := m.store.(imageJournal); ok && image != nil {
		err = ij.UpdateImage(m.ctx, j, image)
	} else {
		err = m.store.Update(m.ctx, j)
	}
	if err != nil {
		if errors.Is(err, ErrNotHeld) {
			m.notHeld(e, err)
		}
		return err
	}
	if final && m.shared != nil {
		m.archiveShared(j.ID)
	}
	m.mu.Lock()
	prev := e.job
	e.job = j
	if final {
		delete(m.active, j.ID)
		if prev.State == cloudupload.StateUploading {
			m.uploaded.Add(j.BytesDone) // see Stats
		}
	}
	m.mu.Unlock()
	if final && !prev.State.Final() {
		m.finished(prev, j)
		close(e.done)
		args := []any{"state", string(j.State), "details", firstLine(j.Details, 200),
			"duration", (time.Duration(now-j.Created) * time.Second).String()}
		if j.Started > 0 {
			args = append(args, "upload_duration", (time.Duration(now-j.Started) * time.Second).String())
		}
		m.jobLogger(j).Info("job finished", args...)
		m.poke()
	}
	return nil
}

// move changes job e to state to with details, after edit. The caller holds
// e.wmu.
func (m *Manager) move(e *entry, to cloudupload.State, details string, edit func(*cloudupload.Job)) (cloudupload.Job, error) {
	return m.moveImage(e, to, details, edit, nil)
}

// moveImage is move with the job's whole image, not synced, recorded with
// the change (see imageJournal) when image is not nil.
func (m *Manager) moveImage(e *entry, to cloudupload.State, details string, edit func(*cloudupload.Job), image []byte) (cloudupload.Job, error) {
	j := m.snapshot(e)
	if err := cloudupload.CheckMove(j.State, to); err != nil {
		return j, err
	}
	j.State, j.Details = to, details
	if edit != nil {
		edit(&j)
	}
	if err := m.commitImage(e, j, image); err != nil {
		m.jobLogger(j).Error("cannot record job state", "state", string(to), "err", err)
		return j, internal("could not record the job's state", err)
	}
	return j, nil
}

// Receive stores the image of job id sent with PUT: body holds size bytes
// (size < 0: unknown, e.g. chunked). When the job has a Size, that is what
// must arrive, and a size that differs fails the job before any byte is
// read. ENOTFOUND for an
// unknown id, ECONFLICT "job is not in created state" unless the job is
// created. The job is receiving while the image streams to disk; a short or
// long body or a read error fails the job with the reason (returned as
// EINVALID); once the image is complete and synced the job is scheduled.
func (m *Manager) Receive(ctx context.Context, id int64, body io.Reader, size int64) error {
	err := m.receive(ctx, id, body, size)
	if err != nil {
		if j, gerr := m.Get(id); gerr == nil && j.State.Final() {
			m.settled(id) // a failed job's files are archived before the answer
		}
	}
	return err
}

func (m *Manager) receive(ctx context.Context, id int64, body io.Reader, size int64) error {
	e, err := m.lookup(id)
	if err != nil {
		if err := m.notHere(id, err); err != nil {
			return err
		}
		return cloudupload.Errorf(cloudupload.ECONFLICT, "job is not in created state")
	}
	// Close does not wait for a PUT: its sender may stall in a read that
	// nothing can interrupt. It cancels it, and the receive then leaves the
	// job alone (the next Open fails it).
	if m.ctx.Err() != nil {
		return errShuttingDown()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(m.ctx, func() { cancel(context.Canceled) })
	defer stop()
	if ir, ok := body.(Interrupter); ok {
		// A kill, an idle timeout or Close must not wait for a sender that
		// stalls mid-body. An Interrupt under way finishes before Receive
		// returns: the caller's answer must not race with it.
		interrupted := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { defer close(interrupted); ir.Interrupt() })
		defer func() {
			if !stop() {
				<-interrupted
			}
		}()
	}

	e.wmu.Lock()
	j := m.snapshot(e)
	if j.State != cloudupload.StateCreated || j.Origin != cloudupload.OriginPut {
		e.wmu.Unlock()
		return cloudupload.Errorf(cloudupload.ECONFLICT, "job is not in created state")
	}
	expect := size
	if j.Size > 0 {
		expect = j.Size
	}
	if err := m.checkSpace(expect); err != nil {
		// Refused before a byte is written; the job cannot get its image.
		m.jobLogger(j).Warn("refusing the image", "reason", cloudupload.ErrorMessage(err), "bytes", expect)
		m.move(e, cloudupload.StateFailed, cloudupload.ErrorMessage(err), nil)
		e.wmu.Unlock()
		return err
	}
	done := make(chan struct{})
	defer close(done)
	e.recvCancel, e.recvDone = func() { cancel(errKilled) }, done
	// Receiving is shown but not written: the image file beside a job
	// recorded created tells a restart that a PUT was cut off (recover).
	j.State, j.Details, j.Pid, j.PidStart, j.Updated = cloudupload.StateReceiving, detailsReceiving, os.Getpid(), 0, time.Now().Unix()
	m.mu.Lock()
	e.job = j
	m.mu.Unlock()
	e.wmu.Unlock()
	// A job's size (from the skeleton) is what must arrive, as OBS checked;
	// a Content-Length that says otherwise fails the job at once.
	if j.Size > 0 && size >= 0 && size != j.Size {
		return m.endReceive(e, 0, nil, 0, &sizeError{got: size, want: j.Size, announced: true})
	}
	e.progress.begin(cloudupload.StateReceiving, time.Now())
	body = &countingReader{m: m, e: e, r: body}
	log := m.jobLogger(j)
	log.Info("receiving image", "bytes", expect)
	start := time.Now()
	go m.watchIdle(ctx, cancel, e.progress.received.Load)
	bp := receiveBuffers.Get().(*[]byte)
	defer receiveBuffers.Put(bp)
	_, inline := m.store.(imageJournal)
	n, image, err := m.writeImage(ctx, j.ID, body, expect, *bp, inline)
	if err == nil && expect >= 0 && n != expect {
		err = &sizeError{got: n, want: expect}
	}
	return m.endReceive(e, n, image, time.Since(start), err)
}

// Interrupter is implemented by an image body whose blocked Read can be
// made to return (for HTTP: by setting the connection's read deadline).
// Receive calls Interrupt, from another goroutine, when the receive is
// cancelled: the job is killed, its sender stalled past
// Config.ReceiveIdleTimeout, or the Manager closes.
type Interrupter interface {
	Interrupt()
}

// errKilled and errStalled say why a receive was cancelled.
var (
	errKilled  = errors.New("the job was killed")
	errStalled = errors.New("the image stopped arriving")
)

// watchIdle cancels a receive with errStalled when progress() has not
// grown for Config.ReceiveIdleTimeout; it returns when ctx ends.
func (m *Manager) watchIdle(ctx context.Context, cancel context.CancelCauseFunc, progress func() int64) {
	idle := m.cfg.ReceiveIdleTimeout
	t := time.NewTicker(min(idle/4, time.Second))
	defer t.Stop()
	last, since := progress(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := progress(); n != last {
				last, since = n, now
			} else if now.Sub(since) >= idle {
				cancel(errStalled)
				return
			}
		}
	}
}

// checkSpace refuses, with ENOSPACE, an image of size bytes (unknown when
// < 0) that would bring the state directory's free space below
// Config.MinFreeSpace.
func (m *Manager) checkSpace(size int64) error {
	if m.cfg.MinFreeSpace <= 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.jobsDir, &st); err != nil {
		m.log.Warn("cannot read the free space of the state directory", "err", err)
		return nil
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free-max(size, 0) < m.cfg.MinFreeSpace {
		return &cloudupload.Error{Code: cloudupload.ENOSPACE, Message: "the server is low on disk space; try again later",
			Err: fmt.Errorf("%d bytes free, image of %d bytes, floor %d", free, size, m.cfg.MinFreeSpace)}
	}
	return nil
}

// sizeError is a body of the wrong length; announced when the request's
// Content-Length said so before any byte was read.
type sizeError struct {
	got, want int64
	announced bool
}

func (e *sizeError) Error() string {
	if e.announced {
		return fmt.Sprintf("the request announces %d bytes, expected %d", e.got, e.want)
	}
	return fmt.Sprintf("received %d bytes, expected %d", e.got, e.want)
}

// readError is a failure to read the image from its source.
type readError struct{ err error }

func (e *readError) Error() string { return "reading the image failed: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// fetchError is a failure of the Fetcher.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return "fetch image: " + e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// imageJournal is implemented by a Store that can make a small image
// durable with the record that schedules its job (the disk store's
// journal): the Manager then writes the image file without syncing it and
// hands its bytes to UpdateImage, which records j as Update does, and a
// restart after a crash rewrites the file from the record. One group
// commit then covers a small upload's image and state, where a file of its
// own would cost an fsync (a device flush) per image.
type imageJournal interface {
	UpdateImage(ctx context.Context, j cloudupload.Job, image []byte) error
}

// maxInlineImage is the largest image kept in a journal record: one
// receive buffer, so a record costs no memory a receive does not already
// hold.
const maxInlineImage = receiveBufferSize

// receiveBuffers are the buffers of receives (receiveBufferSize each):
// a burst of small PUTs must not allocate a fresh megabyte each.
var receiveBuffers = sync.Pool{New: func() any { b := make([]byte, receiveBufferSize); return &b }}

// writeImage writes the image of job id from r (at most limit+1 bytes when
// limit >= 0, to notice a long body) and returns its size. The image is
// synced, unless inline is set and it fits in one buffer: then it is
// returned (in buf, a receiveBuffers buffer the caller puts back) for
// UpdateImage instead.
func (m *Manager) writeImage(ctx context.Context, id int64, r io.Reader, limit int64, buf []byte, inline bool) (n int64, image []byte, err error) {
	f, err := os.OpenFile(filepath.Join(m.jobDir(id), fileImage), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, nil, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if limit >= 0 {
		r = io.LimitReader(r, limit+1)
	}
	inline = inline && limit >= 0 && limit < maxInlineImage && limit < int64(len(buf))
	fill := 0 // bytes of buf not yet written (inline: the whole image)
	for {
		if ctx.Err() != nil {
			return n, nil, context.Cause(ctx)
		}
		nr, rerr := r.Read(buf[fill:])
		fill += nr
		if !inline || fill == len(buf) {
			nw, werr := f.Write(buf[:fill])
			n += int64(nw)
			if werr != nil {
				return n, nil, werr
			}
			inline, fill = false, 0
		}
		if rerr == io.EOF {
			break
		} else if rerr != nil {
			if ctx.Err() != nil {
				return n, nil, context.Cause(ctx)
			}
			return n, nil, &readError{rerr}
		}
	}
	if inline {
		nw, werr := f.Write(buf[:fill])
		n += int64(nw)
		if werr != nil {
			return n, nil, werr
		}
		return n, buf[:fill], nil
	}
	return n, nil, f.Sync()
}

// receiveReason says for people why receiving failed, without server paths.
func (m *Manager) receiveReason(err error) string {
	var se *sizeError
	var re *readError
	var ce *cloudupload.Error
	var fe *fetchError
	switch {
	case errors.Is(err, errStalled):
		return fmt.Sprintf("the image stopped arriving (nothing received for %s)", human.Round(m.cfg.ReceiveIdleTimeout))
	case errors.As(err, &se):
		return se.Error()
	case errors.As(err, &re):
		return firstLine(re.Error(), maxValidateMessage)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "receiving the image was interrupted"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return reasonNoSpace
	case errors.As(err, &fe) && errors.As(err, &ce):
		return firstLine("could not fetch the image: "+ce.Message, maxValidateMessage)
	case errors.As(err, &fe):
		return "could not fetch the image"
	default:
		return "the server could not store the image"
	}
}

// endReceive records how receiving job e ended. The caller's receive must
// have stopped. A non-nil image is the whole image, not synced, for the
// Store's UpdateImage.
func (m *Manager) endReceive(e *entry, n int64, image []byte, took time.Duration, rerr error) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.recvCancel, e.recvDone = nil, nil
	j := m.snapshot(e)
	log := m.jobLogger(j)
	switch {
	case j.State != cloudupload.StateReceiving || e.killing:
		// Kill finishes the job.
		return cloudupload.Errorf(cloudupload.ECONFLICT, "job was killed")
	case m.ctx.Err() != nil:
		// Closed: the next Open redoes or fails the receive.
		log.Info("receiving image stopped: the server is shutting down")
		return errShuttingDown()
	case rerr != nil:
		reason := m.receiveReason(rerr)
		log.Warn("receiving image failed", "reason", reason, "err", rerr)
		// The partial image goes first: on a full disk, that is what makes
		// room to record the job's end.
		if err := os.Remove(filepath.Join(m.jobDir(j.ID), fileImage)); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Error("cannot remove the partial image", "err", err)
		}
		if _, err := m.move(e, cloudupload.StateFailed, reason, nil); err != nil {
			return err
		}
		var code string
		var se *sizeError
		var re *readError
		switch {
		case errors.As(rerr, &se), errors.As(rerr, &re), errors.Is(rerr, context.Canceled), errors.Is(rerr, errStalled):
			code = cloudupload.EINVALID
		case isNoSpace(rerr):
			code = cloudupload.ENOSPACE
		default:
			code = cloudupload.EINTERNAL
		}
		return &cloudupload.Error{Code: code, Message: reason, Err: rerr}
	}
	if _, err := m.moveImage(e, cloudupload.StateScheduled, detailsScheduled, func(j *cloudupload.Job) {
		j.Size, j.Pid, j.PidStart = n, 0, 0
	}, image); err != nil {
		return err
	}
	mib := float64(n) / (1 << 20)
	log.Info("received image", "MiB", fmt.Sprintf("%.1f", mib), "seconds", fmt.Sprintf("%.2f", took.Seconds()),
		"MiB/s", fmt.Sprintf("%.0f", mib/max(took.Seconds(), 1e-6)))
	m.poke()
	return nil
}

// goFetch receives job e's image from the Fetcher in the background,
// resuming after what the image file already holds.
func (m *Manager) goFetch(e *entry) {
	if !m.enter() {
		return
	}
	go func() {
		defer m.wg.Done()
		m.fetch(e)
	}()
}

func (m *Manager) fetch(e *entry) {
	ctx, cancel := context.WithCancelCause(m.ctx)
	defer cancel(nil)
	e.wmu.Lock()
	j := m.snapshot(e)
	if s := j.State; s != cloudupload.StateCreated && s != cloudupload.StateReceiving {
		e.wmu.Unlock()
		return
	}
	if err := m.checkSpace(j.Size - m.imageSize(j.ID)); err != nil {
		m.jobLogger(j).Warn("refusing the image", "reason", cloudupload.ErrorMessage(err), "err", err)
		m.move(e, cloudupload.StateFailed, cloudupload.ErrorMessage(err), nil)
		e.wmu.Unlock()
		return
	}
	done := make(chan struct{})
	defer close(done)
	e.recvCancel, e.recvDone = func() { cancel(errKilled) }, done
	j, err := m.move(e, cloudupload.StateReceiving, detailsReceiving, func(j *cloudupload.Job) {
		j.Pid, j.PidStart = os.Getpid(), 0
	})
	e.wmu.Unlock()
	if err != nil {
		e.wmu.Lock()
		e.recvCancel, e.recvDone = nil, nil
		e.wmu.Unlock()
		return
	}
	start := time.Now()
	go m.watchIdle(ctx, cancel, func() int64 { return m.imageSize(j.ID) })
	e.progress.begin(cloudupload.StateReceiving, start)
	before := m.imageSize(j.ID)
	size, err := m.fetchImage(ctx, j)
	m.received.Add(max(0, m.imageSize(j.ID)-before))
	m.endReceive(e, size, nil, time.Since(start), err)
}

// fetchImage runs the Fetcher into the job's image file, resuming after
// what it holds.
func (m *Manager) fetchImage(ctx context.Context, j cloudupload.Job) (size int64, err error) {
	path := filepath.Join(m.jobDir(j.ID), fileImage)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	offset, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if log := m.jobLogger(j); offset > 0 {
		log.Info("receiving image, resuming", "offset", offset, "bytes", j.Size)
	} else {
		log.Info("receiving image", "bytes", j.Size)
	}
	size, err = m.cfg.Fetcher.Fetch(ctx, j, f, offset)
	if err != nil {
		if ctx.Err() != nil {
			return size, context.Cause(ctx)
		}
		return size, &fetchError{err}
	}
	if err := f.Sync(); err != nil {
		return size, err
	}
	fi, err := f.Stat()
	if err != nil {
		return size, err
	}
	if fi.Size() != size {
		return size, &sizeError{got: fi.Size(), want: size}
	}
	return size, nil
}
