package backend

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend/shim"
)

// scheduler starts scheduled jobs, oldest first, whenever it is woken and
// slots are free.
func (m *Manager) scheduler() {
	defer m.wg.Done()
	// With a shared store, slots also free up on other nodes.
	var poll <-chan time.Time
	if m.shared != nil {
		t := time.NewTicker(sharedPollEvery)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.wake:
		case <-poll:
			m.steal()
		}
		for _, e := range m.pick() {
			if m.ctx.Err() != nil {
				return
			}
			m.start(e)
		}
	}
}

// pick returns the scheduled jobs to start now: the oldest first, while
// fewer than MaxUploads run in all and fewer than MaxUploadsPerUser for
// their user.
func (m *Manager) pick() []*entry {
	m.mu.RLock()
	defer m.mu.RUnlock()
	running := 0
	perUser := map[string]int{}
	var queued []*entry
	for _, e := range m.active {
		switch e.job.State {
		case cloudupload.StateUploading:
			running++
			perUser[e.job.SlotKey()]++
		case cloudupload.StateScheduled:
			queued = append(queued, e)
		}
	}
	slices.SortFunc(queued, func(a, b *entry) int { return int(a.job.ID - b.job.ID) })
	var start []*entry
	for _, e := range queued {
		if running >= m.cfg.MaxUploads {
			break
		}
		if perUser[e.job.SlotKey()] >= m.cfg.MaxUploadsPerUser {
			continue
		}
		running++
		perUser[e.job.SlotKey()]++
		start = append(start, e)
	}
	return start
}

// start starts the uploader of scheduled job e. With a shared store the
// job is claimed (uploading on record, a cluster slot held) before its
// shim starts, and the shim's pid and start time are recorded once it runs.
// With the disk store, whose slots are all counted in this process, the
// job is uploading in memory before the shim starts and on disk, with the
// shim's pid, once it runs: one write instead of two. A restart that finds
// a scheduled job with a work directory treats it as uploading with an
// unrecorded pid (recoverUnrecordedShim), so a started uploader is never
// started again.
func (m *Manager) start(e *entry) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	j := m.snapshot(e)
	if j.State != cloudupload.StateScheduled {
		return
	}
	if m.shared != nil {
		if ok, err := m.claim(e, j); !ok || err != nil {
			return
		}
		j = m.snapshot(e)
	} else {
		j.State, j.Details = cloudupload.StateUploading, detailsUploading
		j.Started, j.Pid, j.PidStart = time.Now().Unix(), 0, 0
		m.mu.Lock()
		e.job = j // counted by pick from now on
		m.mu.Unlock()
	}
	e.progress.begin(cloudupload.StateUploading, time.Now())
	log := m.jobLogger(j)
	cmd, err := m.startShim(j)
	if err != nil {
		log.Error("cannot start the uploader", "err", err)
		m.move(e, cloudupload.StateFailed, reasonCannotStart, nil)
		return
	}
	j.Pid = cmd.Process.Pid
	e.pgid = j.Pid
	if p, err := procStat(j.Pid); err == nil {
		j.PidStart = p.Start
	} else {
		log.Warn("cannot read the uploader's start time", "pid", j.Pid, "err", err)
	}
	if m.shared != nil {
		err = m.commit(e, j)
	} else {
		err = m.claimStarted(e, j)
	}
	if err != nil {
		// A restart finds the shim by its work directory.
		log.Error("cannot record the uploader's start", "pid", j.Pid, "err", err)
	}
	log.Info("upload started", "pid", j.Pid, "filename", j.Filename)
	go m.waitShim(e, cmd)
}

// claimStarted records j, whose shim runs, as uploading in the disk store.
// The caller holds e.wmu.
func (m *Manager) claimStarted(e *entry, j cloudupload.Job) error {
	j.Updated = time.Now().Unix()
	ok, err := m.store.Claim(m.ctx, j, Limits{Max: m.cfg.MaxUploads, PerUser: m.cfg.MaxUploadsPerUser})
	if err == nil && !ok {
		err = errors.New("no upload slot free in the store although the scheduler found one")
	}
	if err != nil {
		return err
	}
	m.mu.Lock()
	e.job = j
	m.mu.Unlock()
	return nil
}

// claim moves scheduled job e (j) to uploading if the store has a slot
// for it (with a shared store, slots are counted over the whole cluster).
// The caller holds e.wmu.
func (m *Manager) claim(e *entry, j cloudupload.Job) (bool, error) {
	j.State, j.Details = cloudupload.StateUploading, detailsUploading
	j.Started, j.Pid, j.PidStart, j.Updated = time.Now().Unix(), 0, 0, time.Now().Unix()
	ok, err := m.store.Claim(m.ctx, j, Limits{Max: m.cfg.MaxUploads, PerUser: m.cfg.MaxUploadsPerUser, Node: m.cfg.NodeUploads})
	if err != nil {
		if errors.Is(err, ErrNotHeld) {
			m.notHeld(e, err)
			return false, err
		}
		m.jobLogger(j).Error("cannot record the job's start", "err", err)
		return false, err
	}
	if !ok {
		return false, nil
	}
	m.mu.Lock()
	e.job = j
	m.mu.Unlock()
	return true, nil
}

// waitShim reaps the shim this Manager started and records the upload's
// end. It outlives Close (so the shim does not stay a zombie) but then
// leaves the outcome to the next Open.
func (m *Manager) waitShim(e *entry, cmd *exec.Cmd) {
	cmd.Wait()
	if !m.enter() {
		return
	}
	defer m.wg.Done()
	// A shim that could not write the exit file (a full disk) says how the
	// uploader ended in its own exit status.
	fallback := ""
	switch cmd.ProcessState.ExitCode() {
	case shim.UnrecordedSuccess:
		fallback = "0"
	case shim.UnrecordedFailure:
		fallback = "exit status 1"
	}
	m.endUpload(e, reasonNoExitStatus, fallback)
}

// adopt watches the shim of uploading job e started by an earlier daemon
// until it is gone, then records the upload's end.
func (m *Manager) adopt(e *entry) {
	defer m.wg.Done()
	j := m.snapshot(e)
	t := time.NewTicker(adoptPollInterval)
	defer t.Stop()
	for processAlive(j.Pid, j.PidStart) {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
	m.endUpload(e, reasonNoExitStatus, "")
}

// endUpload records the end of uploading job e, whose shim is gone: what is
// left of its process group is killed first, so the job is final only once
// no process of it runs. noExit is the reason when the shim left no exit
// status; fallback is the exit status to assume when there is no exit file
// ("" when unknown).
func (m *Manager) endUpload(e *entry, noExit, fallback string) {
	j := m.snapshot(e)
	e.wmu.Lock()
	pgid := e.pgid
	e.wmu.Unlock()
	if pgid > 0 {
		if err := killGroup(m.ctx, pgid); err != nil {
			if m.ctx.Err() == nil {
				m.jobLogger(j).Error("cannot kill the rest of the uploader's process group", "pgid", pgid, "err", err)
			}
			return
		}
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	j = m.snapshot(e)
	if j.State != cloudupload.StateUploading {
		return
	}
	state, details := m.outcome(j, e.killing || j.Details == detailsKilling, noExit, fallback)
	m.move(e, state, details, nil)
}

// outcome reads how job j's uploader ended from the exit and result files:
// exit 0 → succeeded with the result as details; otherwise failed with
// "killed" when it was killed, else the result's text, else the exit
// status, else noExit. fallback stands for a missing exit file when not "".
func (m *Manager) outcome(j cloudupload.Job, killed bool, noExit, fallback string) (cloudupload.State, string) {
	dir := m.jobDir(j.ID)
	status, serr := os.ReadFile(filepath.Join(dir, fileExit))
	if serr != nil && fallback != "" {
		status, serr = []byte(fallback), nil
	}
	result := readResult(filepath.Join(dir, fileResult))
	exit := strings.TrimSpace(string(status))
	switch {
	case serr == nil && exit == "0":
		return cloudupload.StateSucceeded, result
	case killed:
		return cloudupload.StateFailed, detailsKilled
	case result != "":
		return cloudupload.StateFailed, result
	case serr == nil && exit != "":
		return cloudupload.StateFailed, firstLine(exit, maxValidateMessage)
	default:
		return cloudupload.StateFailed, noExit
	}
}

// readResult returns the uploader's result file, trimmed, valid UTF-8, at
// most maxResult bytes; "" when missing.
func readResult(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxResult))
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
}

// Kill stops job id and returns once it is final: a created or scheduled
// job fails at once; a receiving one once its transfer stopped (or after
// KillGrace if its sender stalls); an uploading one once its uploader's
// process group got SIGTERM, SIGKILL after KillGrace, and no process of it
// runs any more. The job ends failed, details "killed". Nil when the job is
// already final; ENOTFOUND for an unknown id; ctx's error when ctx ends
// first (the kill goes on).
func (m *Manager) Kill(ctx context.Context, id int64) error {
	err := m.kill(ctx, id)
	if err == nil {
		m.settled(id)
	}
	return err
}

func (m *Manager) kill(ctx context.Context, id int64) error {
	e, err := m.lookup(id)
	if err != nil {
		return m.notHere(id, err)
	}
	if !m.enter() {
		return errShuttingDown()
	}
	defer m.wg.Done()
	e.wmu.Lock()
	j := m.snapshot(e)
	log := m.jobLogger(j)
	switch j.State {
	case cloudupload.StateSucceeded, cloudupload.StateFailed:
		e.wmu.Unlock()
		return nil
	case cloudupload.StateCreated, cloudupload.StateScheduled:
		log.Info("killing job", "state", string(j.State))
		_, err := m.move(e, cloudupload.StateFailed, detailsKilled, nil)
		e.wmu.Unlock()
		return err
	case cloudupload.StateReceiving:
		log.Info("killing job", "state", string(j.State))
		e.killing = true
		cancel, done := e.recvCancel, e.recvDone
		e.wmu.Unlock()
		if cancel != nil {
			cancel()
			t := time.NewTimer(m.cfg.KillGrace)
			select {
			case <-done:
			case <-t.C:
				log.Warn("receiving image did not stop; failing the job anyway")
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-m.ctx.Done():
				t.Stop()
				return errShuttingDown()
			}
			t.Stop()
		}
		e.wmu.Lock()
		defer e.wmu.Unlock()
		if m.snapshot(e).State.Final() {
			return nil
		}
		_, err := m.move(e, cloudupload.StateFailed, detailsKilled, nil)
		return err
	}
	// Uploading.
	if !e.killing {
		log.Info("killing job", "state", string(j.State), "pgid", j.Pid)
		e.killing = true
		j.Details = detailsKilling
		if err := m.commit(e, j); err != nil {
			log.Error("cannot record the kill", "err", err)
		}
	}
	e.wmu.Unlock()
	m.startKill(e)
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-m.ctx.Done():
		return errShuttingDown()
	}
}

// startKill sends SIGTERM to uploading job e's process group and SIGKILL
// after KillGrace unless the job ended; the job's waiter (waitShim or adopt)
// then finishes it.
func (m *Manager) startKill(e *entry) {
	e.killOnce.Do(func() {
		e.wmu.Lock()
		pgid := e.pgid
		e.wmu.Unlock()
		if pgid <= 0 || !m.enter() {
			return
		}
		go func() {
			defer m.wg.Done()
			log := m.jobLogger(m.snapshot(e))
			if err := signalGroup(pgid, syscall.SIGTERM); err != nil {
				log.Error("cannot stop the uploader", "err", err)
			}
			t := time.NewTimer(m.cfg.KillGrace)
			defer t.Stop()
			select {
			case <-e.done:
			case <-m.ctx.Done():
			case <-t.C:
				log.Warn("uploader still running after the grace period; killing it", "grace", m.cfg.KillGrace.String())
				if err := signalGroup(pgid, syscall.SIGKILL); err != nil {
					log.Error("cannot kill the uploader", "err", err)
				}
			}
		}()
	})
}
