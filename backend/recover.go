package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cloudupload/cloudupload"
)

// load reads the state directory into memory: it creates the directories,
// removes the leftovers of interrupted writes and creates, finishes the
// archiving of jobs that became final just before a crash, and sets the next
// id past every id in use.
func (m *Manager) load() error {
	for _, d := range []string{m.cfg.StateDir, m.jobsDir, m.doneDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	if err := removeTemps(m.cfg.StateDir); err != nil {
		return err
	}
	next, err := readNextID(filepath.Join(m.cfg.StateDir, fileNextID))
	if err != nil {
		return err
	}
	highest := int64(0)
	ents, err := os.ReadDir(m.jobsDir)
	if err != nil {
		return err
	}
	var unfinished []cloudupload.Job
	for _, de := range ents {
		id, err := parseID(de.Name())
		if err != nil || !de.IsDir() {
			m.log.Warn("ignoring unexpected file in the state directory", "path", filepath.Join(m.jobsDir, de.Name()))
			continue
		}
		highest = max(highest, id)
		dir := m.jobDir(id)
		if err := removeTemps(dir); err != nil {
			return err
		}
		j, err := readJob(dir)
		if errors.Is(err, os.ErrNotExist) {
			// Interrupted before its job.json was written: never shown to
			// anyone. Its id stays used.
			m.log.Warn("removing an incompletely created job", "job", id)
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			continue
		} else if err != nil {
			m.log.Error("ignoring a job that cannot be read", "job", id, "err", err)
			continue
		}
		if j.State.Final() {
			if err := m.archive(id); err != nil {
				return fmt.Errorf("archive job %d: %w", id, err)
			}
			continue
		}
		unfinished = append(unfinished, j)
	}
	if ents, err = os.ReadDir(m.doneDir); err != nil {
		return err
	}
	var finished []cloudupload.Job
	for _, de := range ents {
		id, err := parseID(de.Name())
		if err != nil || !de.IsDir() {
			m.log.Warn("ignoring unexpected file in the state directory", "path", filepath.Join(m.doneDir, de.Name()))
			continue
		}
		highest = max(highest, id)
		dir := m.doneJobDir(id)
		if err := removeTemps(dir); err != nil {
			return err
		}
		j, err := readJob(dir)
		if err != nil {
			m.log.Error("ignoring a finished job that cannot be read", "job", id, "err", err)
			continue
		}
		if !j.State.Final() {
			m.log.Error("ignoring an unfinished job in the done directory", "job", id, "state", string(j.State))
			continue
		}
		finished = append(finished, j)
	}
	m.nextID = max(next, highest+1)
	for _, j := range finished {
		e := &entry{job: j, done: make(chan struct{})}
		close(e.done)
		m.jobs[j.ID] = e
		m.ids = append(m.ids, j.ID)
	}
	for _, j := range unfinished {
		e := &entry{job: j, done: make(chan struct{})}
		m.jobs[j.ID] = e
		m.active[j.ID] = e
		m.ids = append(m.ids, j.ID)
	}
	slices.Sort(m.ids)
	m.log.Info("job store opened", "dir", m.cfg.StateDir, "jobs", len(m.ids), "unfinished", len(unfinished), "next_id", m.nextID)
	return nil
}

// recover resumes the unfinished jobs a previous daemon left, so that none
// stays stuck: receives are redone or failed, live uploaders re-adopted, and
// the outcome of gone ones recorded.
func (m *Manager) recover() {
	m.mu.RLock()
	var es []*entry
	for _, e := range m.active {
		es = append(es, e)
	}
	m.mu.RUnlock()
	slices.SortFunc(es, func(a, b *entry) int { return int(a.job.ID - b.job.ID) })
	for _, e := range es {
		j := m.snapshot(e)
		log := m.jobLogger(j)
		switch {
		case j.State == cloudupload.StateCreated && j.Origin == cloudupload.OriginFetch,
			j.State == cloudupload.StateReceiving && j.Origin == cloudupload.OriginFetch:
			if m.cfg.Fetcher == nil {
				log.Warn("cannot receive the image: no image source configured")
				e.wmu.Lock()
				m.move(e, cloudupload.StateFailed, "the server has no image source configured any more", nil)
				e.wmu.Unlock()
				continue
			}
			log.Info("recovery: receiving the image again", "state", string(j.State))
			m.goFetch(e)
		case j.State == cloudupload.StateReceiving:
			log.Info("recovery: the image upload was interrupted by a restart")
			e.wmu.Lock()
			m.move(e, cloudupload.StateFailed, reasonPutRestart, nil)
			e.wmu.Unlock()
		case j.State == cloudupload.StateUploading:
			m.recoverUpload(e)
		}
	}
}

// recoverUpload re-adopts the uploader of job e when its shim still runs,
// and otherwise records how it ended.
func (m *Manager) recoverUpload(e *entry) {
	j := m.snapshot(e)
	log := m.jobLogger(j)
	if j.Details == detailsKilling {
		e.killing = true
	}
	if j.Pid == 0 {
		// Crashed between recording uploading and recording the shim's pid:
		// stop whatever runs in the job's work directory.
		work := filepath.Join(m.jobDir(j.ID), dirWork)
		groups := map[int]bool{}
		for _, pid := range processesIn(work) {
			if p, err := procStat(pid); err == nil && p.Pgrp > 1 {
				groups[p.Pgrp] = true
			}
		}
		for pgid := range groups {
			log.Warn("recovery: killing an uploader with no recorded pid", "pgid", pgid)
			if err := killGroup(m.ctx, pgid); err != nil {
				log.Error("cannot kill process group", "pgid", pgid, "err", err)
			}
		}
		// A job runs its uploader once, and the exit and result files are
		// removed before the shim starts: an exit file is this run's.
		e.wmu.Lock()
		state, details := m.outcome(j, e.killing, reasonLostStart)
		m.move(e, state, details, nil)
		e.wmu.Unlock()
		return
	}
	e.pgid = j.Pid
	if processAlive(j.Pid, j.PidStart) {
		log.Info("recovery: re-adopting the running uploader", "pid", j.Pid)
		m.wg.Add(1)
		go m.adopt(e)
		if e.killing {
			m.startKill(e)
		}
		return
	}
	if p, err := procStat(j.Pid); err == nil && !p.dead() {
		// The pid is now another process, so the old group is empty (a
		// process group keeps its leader's pid from being reused).
		log.Info("recovery: the uploader is gone", "pid", j.Pid)
		e.wmu.Lock()
		state, details := m.outcome(j, e.killing, reasonLost)
		m.move(e, state, details, nil)
		e.wmu.Unlock()
		return
	}
	log.Info("recovery: the uploader is gone", "pid", j.Pid)
	m.endUpload(e, reasonLost)
}

// expire removes finished jobs that ended more than Retention ago.
func (m *Manager) expire() {
	if m.cfg.Retention <= 0 {
		return
	}
	cutoff := time.Now().Add(-m.cfg.Retention).Unix()
	var old []int64
	m.mu.RLock()
	for _, id := range m.ids {
		if j := m.jobs[id].job; j.State.Final() && j.Finished < cutoff {
			old = append(old, id)
		}
	}
	m.mu.RUnlock()
	if len(old) == 0 {
		return
	}
	removed := map[int64]bool{}
	for _, id := range old {
		if err := os.RemoveAll(m.doneJobDir(id)); err != nil {
			m.log.Error("cannot remove an expired job", "job", id, "err", err)
			continue
		}
		removed[id] = true
	}
	if err := syncDir(m.doneDir); err != nil {
		m.log.Error("cannot sync the done directory", "err", err)
	}
	m.mu.Lock()
	for id := range removed {
		delete(m.jobs, id)
	}
	m.ids = slices.DeleteFunc(m.ids, func(id int64) bool { return removed[id] })
	m.mu.Unlock()
	m.log.Info("removed expired finished jobs", "count", len(removed), "retention", m.cfg.Retention.String())
}

// sweeper runs expire every hour.
func (m *Manager) sweeper() {
	defer m.wg.Done()
	if m.cfg.Retention <= 0 {
		return
	}
	t := time.NewTicker(retentionSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.expire()
		}
	}
}
