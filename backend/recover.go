package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend/shim"
	"github.com/cloudupload/cloudupload/internal/human"
)

// load reads the jobs of the store into memory (see Store.Load and
// diskStore.Load for what the disk store repairs on the way). With a shared
// store, local directories of jobs this node no longer holds are archived.
func (m *Manager) load() error {
	for _, d := range []string{m.cfg.StateDir, m.jobsDir, m.doneDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	jobs, err := m.store.Load(m.ctx)
	if err != nil {
		return err
	}
	var unreadable []*entry
	unfinished := 0
	for _, j := range jobs {
		e := &entry{job: j, done: make(chan struct{})}
		if m.disk != nil {
			e.dir = m.disk.unreadableDir(j.ID)
		}
		m.jobs[j.ID] = e
		m.ids = append(m.ids, j.ID)
		switch {
		case e.dir != "":
			close(e.done)
			unreadable = append(unreadable, e)
		case j.State.Final():
			close(e.done)
		default:
			m.active[j.ID] = e
			unfinished++
		}
	}
	slices.Sort(m.ids)
	m.unreadable = unreadable
	if m.shared != nil {
		if err := m.loadShared(); err != nil {
			return err
		}
		m.log.Info("jobs loaded from the shared store", "node", m.shared.Node().Name, "unfinished", unfinished)
	}
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
	for _, e := range m.unreadable {
		m.stopUnreadable(e)
	}
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
		case j.State == cloudupload.StateReceiving,
			j.State == cloudupload.StateCreated && m.startedHere(j.ID, fileImage):
			// A PUT's receiving is not written (receive): an image file
			// beside a created job is a PUT a restart cut off.
			log.Info("recovery: the image upload was interrupted by a restart")
			e.wmu.Lock()
			m.move(e, cloudupload.StateFailed, reasonPutRestart, nil)
			e.wmu.Unlock()
		case j.State == cloudupload.StateUploading:
			m.recoverUpload(e)
		case j.State == cloudupload.StateScheduled && m.startedHere(j.ID, dirWork, fileExit):
			// The daemon died between starting the uploader and recording
			// it (start): handled as an uploading job whose pid was never
			// recorded, so it is never started twice.
			log.Info("recovery: the uploader was started but not recorded")
			j.State, j.Details = cloudupload.StateUploading, detailsUploading
			m.mu.Lock()
			e.job = j
			m.mu.Unlock()
			m.recoverUnrecordedShim(e)
		}
	}
}

// startedHere reports whether one of the named files exists in job id's
// directory: a step that is not recorded before it starts left a trace
// (an image file: a PUT; a work directory or exit file: the uploader, as
// startShim makes the first and the shim writes the second).
func (m *Manager) startedHere(id int64, names ...string) bool {
	return anyIn(m.jobDir(id), names...)
}

// anyIn reports whether one of the named entries exists in dir.
func anyIn(dir string, names ...string) bool {
	for _, name := range names {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
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
		m.recoverUnrecordedShim(e)
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
		state, details := m.outcome(j, e.killing, reasonLost, "")
		m.move(e, state, details, nil)
		e.wmu.Unlock()
		return
	}
	log.Info("recovery: the uploader is gone", "pid", j.Pid)
	m.endUpload(e, reasonLost, "")
}

// recoverUnrecordedShim handles uploading job e whose shim's pid was never
// recorded (the daemon died between recording uploading and recording the
// pid). A live shim of this job, found by its work directory and command
// line, is re-adopted like any other. Processes of the job without their
// shim are stopped as a kill stops them (SIGTERM, the grace, SIGKILL), so
// the target can clean up; then the outcome is recorded. With nothing
// running and no exit status, the uploader never started.
func (m *Manager) recoverUnrecordedShim(e *entry) {
	j := m.snapshot(e)
	log := m.jobLogger(j)
	dir := m.jobDir(j.ID)
	groups := groupsIn(filepath.Join(dir, dirWork))
	if m.adoptShim(e, groups) {
		return
	}
	if len(groups) == 0 {
		// A job runs its uploader once, and the exit and result files are
		// removed before the shim starts: an exit file is this run's.
		// Without one, a shim that a daemon killed while starting it
		// forked may still be on its way (exec): look again for a while.
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			t0 := time.Now()
			for time.Since(t0) < shimAppearWait {
				if anyIn(dir, fileExit) {
					break
				}
				select {
				case <-m.ctx.Done():
					return // the next Open looks again
				case <-time.After(adoptPollInterval / 2):
				}
				if m.adoptShim(e, groupsIn(filepath.Join(dir, dirWork))) {
					log.Info("recovery: the uploader's supervisor showed up after a while", "after", time.Since(t0).Round(time.Millisecond).String())
					return
				}
			}
			e.wmu.Lock()
			defer e.wmu.Unlock()
			state, details := m.outcome(m.snapshot(e), e.killing, reasonLostStart, "")
			m.move(e, state, details, nil)
		}()
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for pgid := range groups {
			log.Warn("recovery: stopping an uploader whose supervisor is gone", "pgid", pgid, "grace", m.cfg.KillGrace.String())
			if err := stopGroup(m.ctx, pgid, m.cfg.KillGrace); err != nil {
				if m.ctx.Err() == nil {
					log.Error("recovery: cannot stop process group", "pgid", pgid, "err", err)
				}
				return // the next Open tries again
			}
		}
		e.wmu.Lock()
		defer e.wmu.Unlock()
		// The shim may have ended between the look for it and now, after
		// recording a success: what was published stays the outcome.
		if state, details := m.outcome(m.snapshot(e), false, "", ""); state == cloudupload.StateSucceeded {
			m.move(e, state, details, nil)
			return
		}
		details := reasonOrphanStopped
		if e.killing {
			details = detailsKilled
		}
		m.move(e, cloudupload.StateFailed, details, nil)
	}()
}

// adoptShim re-adopts the live shim of uploading job e among groups (the
// process groups running in its work directory) and reports whether it
// found one.
func (m *Manager) adoptShim(e *entry, groups map[int]bool) bool {
	j := m.snapshot(e)
	log := m.jobLogger(j)
	exitFile := filepath.Join(m.jobDir(j.ID), fileExit)
	for pgid := range groups {
		if !isShimOf(pgid, exitFile) {
			continue
		}
		p, err := procStat(pgid)
		if err != nil || p.dead() {
			continue
		}
		e.wmu.Lock()
		j = m.snapshot(e)
		j.Pid, j.PidStart = pgid, p.Start
		e.pgid = pgid
		err = m.commit(e, j)
		e.wmu.Unlock()
		if err != nil {
			log.Error("recovery: cannot record the uploader's pid", "pid", pgid, "err", err)
		}
		log.Info("recovery: re-adopting the running uploader (found by its work directory)", "pid", pgid)
		m.wg.Add(1)
		go m.adopt(e)
		if e.killing {
			m.startKill(e)
		}
		return true
	}
	return false
}

// stopUnreadable stops, as a kill does, processes still running in the work
// directory of job e whose record could not be read: the job shows failed,
// so nothing of it may go on publishing.
func (m *Manager) stopUnreadable(e *entry) {
	groups := groupsIn(filepath.Join(e.dir, dirWork))
	if len(groups) == 0 {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for pgid := range groups {
			m.log.Warn("recovery: stopping the uploader of a job whose record cannot be read", "job", e.job.ID, "pgid", pgid)
			if err := stopGroup(m.ctx, pgid, m.cfg.KillGrace); err != nil && m.ctx.Err() == nil {
				m.log.Error("recovery: cannot stop process group", "job", e.job.ID, "pgid", pgid, "err", err)
			}
		}
	}()
}

// groupsIn returns the process groups of the live processes whose working
// directory is dir.
func groupsIn(dir string) map[int]bool {
	groups := map[int]bool{}
	for _, pid := range processesIn(dir) {
		if p, err := procStat(pid); err == nil && p.Pgrp > 1 && !p.dead() {
			groups[p.Pgrp] = true
		}
	}
	return groups
}

// isShimOf reports whether pid is the shim of the job whose exit file is
// exitFile (its command line names both).
func isShimOf(pid int, exitFile string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	argv := strings.Split(string(b), "\x00")
	return len(argv) > 2 && argv[1] == shim.Arg && argv[2] == exitFile
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
		if err := m.store.Remove(m.ctx, id); err != nil {
			m.log.Error("cannot remove an expired job", "job", id, "err", err)
			continue
		}
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

// awaitImages fails jobs created for a PUT whose image has not started
// arriving within Config.ReceiveIdleTimeout, so that a job whose sender
// went away does not wait forever.
func (m *Manager) awaitImages() {
	defer m.wg.Done()
	idle := m.cfg.ReceiveIdleTimeout
	t := time.NewTicker(min(max(idle/4, 100*time.Millisecond), 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-idle).Unix()
		var late []*entry
		m.mu.RLock()
		for _, e := range m.active {
			if j := e.job; j.State == cloudupload.StateCreated && j.Origin == cloudupload.OriginPut && j.Updated < cutoff {
				late = append(late, e)
			}
		}
		m.mu.RUnlock()
		for _, e := range late {
			e.wmu.Lock()
			if j := m.snapshot(e); j.State == cloudupload.StateCreated && j.Updated < cutoff {
				reason := fmt.Sprintf("the image never arrived (nothing received for %s)", human.Round(idle))
				m.jobLogger(j).Warn("giving up on a job", "reason", reason)
				m.move(e, cloudupload.StateFailed, reason, nil)
			}
			e.wmu.Unlock()
		}
	}
}
