package backend

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/cloudupload/cloudupload"
)

// Observer is told of the events that metrics count but cannot read from
// Stats. Its methods are called synchronously from the Manager's state
// changes: they must return quickly and must not call the Manager.
type Observer interface {
	// JobFinished is called once for every job that becomes final, with the
	// job as stored (Created, Started and Finished in unix seconds) and how
	// its uploader ended: one of the Upload* constants, "" when no uploader
	// ran.
	JobFinished(j cloudupload.Job, upload string)
}

// How an uploader ended, as Observer.JobFinished reports it.
const (
	UploadSucceeded  = "succeeded"   // exit status 0
	UploadFailed     = "failed"      // non-zero exit status
	UploadKilled     = "killed"      // killed on request
	UploadSignal     = "signal"      // ended by a signal nobody asked for
	UploadLost       = "lost"        // gone without an exit status (a restart lost it)
	UploadNotStarted = "not_started" // could not be started
)

// Stats is the state of the Manager at one moment, for metrics.
type Stats struct {
	// Jobs counts the jobs by state and target.
	Jobs map[StatsKey]int
	// Uploading is the number of uploaders running, MaxUploads the slots.
	Uploading, MaxUploads int
	// BytesReceived counts the image bytes received since the Manager
	// opened; BytesUploaded the bytes uploaders reported done (finished
	// jobs and running ones).
	BytesReceived, BytesUploaded int64
	// UploadRate is the sum of the current rates of running uploads, in
	// bytes per second.
	UploadRate float64
}

// StatsKey is a state and a target.
type StatsKey struct {
	State  cloudupload.State
	Target string
}

// Stats counts the jobs and reads the running uploads' progress (one stat
// of a file each). Its cost grows with the number of jobs kept.
func (m *Manager) Stats() Stats {
	st := Stats{Jobs: make(map[StatsKey]int), MaxUploads: m.cfg.MaxUploads, BytesReceived: m.received.Load()}
	var running []*entry
	m.mu.RLock()
	// Under the lock that commit holds when a job ends: a job's bytes are
	// either in uploaded or in its live figures, never in both or neither.
	st.BytesUploaded = m.uploaded.Load()
	for _, e := range m.jobs {
		st.Jobs[StatsKey{e.job.State, e.job.Target}]++
		if e.job.State == cloudupload.StateUploading {
			running = append(running, e)
		}
	}
	m.mu.RUnlock()
	st.Uploading = len(running)
	for _, e := range running {
		j := m.withProgress(e, m.snapshot(e))
		st.BytesUploaded += j.BytesDone
		st.UploadRate += j.Rate
	}
	return st
}

// finished tells the Observer that job j became final, coming from prev.
func (m *Manager) finished(prev, j cloudupload.Job) {
	if m.cfg.Observer == nil {
		return
	}
	upload := ""
	if prev.State == cloudupload.StateUploading {
		upload = m.uploadEnd(j)
	}
	m.cfg.Observer.JobFinished(j, upload)
}

// uploadEnd says how final job j's uploader ended.
func (m *Manager) uploadEnd(j cloudupload.Job) string {
	switch {
	case j.State == cloudupload.StateSucceeded:
		return UploadSucceeded
	case j.Details == detailsKilled:
		return UploadKilled
	case j.Details == reasonCannotStart:
		return UploadNotStarted
	case j.Details == reasonLost || j.Details == reasonLostStart || j.Details == reasonNoExitStatus:
		return UploadLost
	}
	b, _ := os.ReadFile(filepath.Join(m.doneJobDir(j.ID), fileExit))
	if strings.HasPrefix(string(b), "signal:") {
		return UploadSignal
	}
	return UploadFailed
}
