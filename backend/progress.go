package backend

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudupload/cloudupload"
)

// Progress of a job's transfer, as the job document shows it.
//
// While a job receives its image, the receive loop counts the bytes in
// memory (progress.received); the image file's size stands in for images
// fetched by a Fetcher, which writes the file itself. While it uploads, the
// uploader writes {"done":N,"total":M} to the file named by
// CLOUDUPLOAD_PROGRESS_FILE (see targets.Log.ReportProgress); the daemon
// reads it when the job is asked for, which costs one stat while it has not
// changed. Rate and ETA come from the samples seen in the last
// rateWindow; they change only when the bytes done do (or fall to 0 after
// rateWindow without any), so that polls between two reports get the same
// document and its ETag a 304. When the job becomes final, its last
// figures are written to job.json with it (100% for a succeeded job).
const (
	fileProgress     = "progress"
	envProgressFile  = "CLOUDUPLOAD_PROGRESS_FILE"
	maxProgressFile  = 4 << 10
	rateWindow       = 10 * time.Second
	minSampleSpacing = 250 * time.Millisecond
	maxSamples       = int(rateWindow/minSampleSpacing) + 2
)

// progress is the live transfer of one job (entry.progress).
type progress struct {
	received atomic.Int64 // bytes received by the receive loop (PUT)

	mu      sync.Mutex
	phase   cloudupload.State // the state the samples belong to
	start   time.Time         // when the phase began, as far as known
	samples []sample          // ascending times, at most maxSamples
	// The figures as last shown: kept while done does not change, so that
	// a poll between two reports gets the same document (and a 304).
	shownDone  int64
	shownRate  float64
	shownSince time.Time // when done last changed
	// The progress file as last read.
	fileMod  time.Time
	fileSize int64
	fileDone int64
	fileTot  int64
}

type sample struct {
	t    time.Time
	done int64
}

// progressFile is the content of the uploader's progress file.
type progressFile struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// readProgressFile reads an uploader's progress file: bounded, both numbers
// non-negative.
func readProgressFile(path string) (progressFile, error) {
	var p progressFile
	f, err := os.Open(path)
	if err != nil {
		return p, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProgressFile+1))
	if err != nil {
		return p, err
	}
	if len(b) > maxProgressFile {
		return p, errors.New("progress file too large")
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, err
	}
	if p.Done < 0 || p.Total < 0 {
		return p, errors.New("negative progress")
	}
	return p, nil
}

// countingReader counts what is read from r into job e's progress and the
// Manager's total of bytes received.
type countingReader struct {
	m *Manager
	e *entry
	r io.Reader
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.e.progress.received.Add(int64(n))
	c.m.received.Add(int64(n))
	return n, err
}

// imageSize is the size of job id's image file so far, 0 when missing.
func (m *Manager) imageSize(id int64) int64 {
	fi, err := os.Stat(filepath.Join(m.jobDir(id), fileImage))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// withProgress returns job j (of entry e) with its live transfer figures
// when it is receiving or uploading; other jobs as they are.
func (m *Manager) withProgress(e *entry, j cloudupload.Job) cloudupload.Job {
	switch j.State {
	case cloudupload.StateReceiving, cloudupload.StateUploading:
		e.progress.measure(m, &j, time.Now())
	}
	return j
}

// measure sets j's transfer figures from what job j's transfer says now.
func (p *progress) measure(m *Manager, j *cloudupload.Job, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase != j.State {
		// A phase this daemon did not see begin (it restarted since).
		start := now
		if j.State == cloudupload.StateUploading && j.Started > 0 {
			start = time.Unix(j.Started, 0)
		}
		p.reset(j.State, start)
	}
	var done, total int64
	if j.State == cloudupload.StateReceiving {
		done, total = p.received.Load(), j.Size
		if j.Origin == cloudupload.OriginFetch {
			done = m.imageSize(j.ID)
		}
	} else {
		path := filepath.Join(m.jobDir(j.ID), fileProgress)
		fi, err := os.Stat(path)
		if err != nil {
			return // none reported (yet): an uploader need not report
		}
		if !fi.ModTime().Equal(p.fileMod) || fi.Size() != p.fileSize {
			pf, err := readProgressFile(path)
			if err != nil {
				return // caught mid-write by a non-atomic writer, or garbage
			}
			p.fileMod, p.fileSize, p.fileDone, p.fileTot = fi.ModTime(), fi.Size(), pf.Done, pf.Total
		}
		done, total = p.fileDone, p.fileTot
	}
	if total > 0 && done > total {
		total = done
	}
	p.add(now, done)
	j.BytesDone, j.BytesTotal = done, total
	j.Progress = percent(done, total)
	switch {
	case done != p.shownDone || p.shownSince.IsZero():
		p.shownDone, p.shownRate, p.shownSince = done, p.rate(now, done), now
	case now.Sub(p.shownSince) > rateWindow:
		p.shownRate = 0 // stalled
	}
	j.Rate = p.shownRate
	j.ETA = 0
	if j.Rate > 0 && total > 0 {
		j.ETA = int64(float64(total-done)/j.Rate + 0.5)
	}
}

// add records a sample, keeping those of the last rateWindow plus the one
// just before it, at most one per minSampleSpacing.
func (p *progress) add(now time.Time, done int64) {
	if n := len(p.samples); n > 0 && now.Sub(p.samples[n-1].t) < minSampleSpacing {
		return
	}
	p.samples = append(p.samples, sample{now, done})
	cut := 0
	for cut+1 < len(p.samples) && now.Sub(p.samples[cut+1].t) > rateWindow {
		cut++
	}
	cut = max(cut, len(p.samples)-maxSamples)
	p.samples = append(p.samples[:0], p.samples[cut:]...)
}

// rate is the bytes per second from the oldest sample kept to done now;
// when that spans less than a second, the average since the phase began.
func (p *progress) rate(now time.Time, done int64) float64 {
	if len(p.samples) == 0 {
		return 0
	}
	first := p.samples[0]
	if now.Sub(first.t) < time.Second {
		first = sample{p.start, 0}
	}
	dt := now.Sub(first.t).Seconds()
	if dt <= 0 || done <= first.done {
		return 0
	}
	return float64(done-first.done) / dt
}

// begin starts the live figures of a new phase (receiving or uploading)
// at t.
func (p *progress) begin(phase cloudupload.State, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset(phase, t)
	p.received.Store(0)
}

// reset forgets the figures of the previous phase. The caller holds p.mu.
func (p *progress) reset(phase cloudupload.State, start time.Time) {
	p.phase, p.start, p.samples = phase, start, p.samples[:0]
	p.fileMod, p.fileSize, p.fileDone, p.fileTot = time.Time{}, 0, 0, 0
	p.shownDone, p.shownRate, p.shownSince = 0, 0, time.Time{}
}

// percent is done of total as an integer percentage, "" when total is
// unknown.
func percent(done, total int64) string {
	if total <= 0 {
		return ""
	}
	return strconv.FormatInt(min(100, done*100/total), 10)
}

// finalProgress sets the figures job j keeps once final: a succeeded job
// 100% (and all its bytes), a failed one where its transfer stopped. The
// rate is the transfer's average. Called with the job still in its job
// directory, before it is written.
func (m *Manager) finalProgress(e *entry, prev, j *cloudupload.Job) {
	if prev.State != cloudupload.StateReceiving && prev.State != cloudupload.StateUploading {
		return
	}
	now := time.Now()
	last := *prev
	last.BytesDone, last.BytesTotal, last.Progress = 0, 0, ""
	e.progress.measure(m, &last, now)
	e.progress.mu.Lock()
	start := e.progress.start
	e.progress.mu.Unlock()
	j.BytesDone, j.BytesTotal, j.Progress, j.ETA, j.Rate = last.BytesDone, last.BytesTotal, last.Progress, 0, 0
	if j.State == cloudupload.StateSucceeded {
		if j.BytesTotal == 0 {
			j.BytesTotal = j.BytesDone
		}
		j.BytesDone, j.Progress = j.BytesTotal, "100"
	}
	if d := now.Sub(start).Seconds(); j.BytesDone > 0 && d >= 1 {
		j.Rate = float64(j.BytesDone) / d
	}
}

// List returns the jobs with the given ids in the order asked, skipping
// unknown ids; ids nil returns every job in ascending id order. Jobs
// receiving or uploading carry their live transfer figures (one stat of
// their progress file each); the others are read from memory only.
func (m *Manager) List(ids []int64) []cloudupload.Job {
	jobs := m.listJobs(ids)
	for i := range jobs {
		if s := jobs[i].State; s == cloudupload.StateReceiving || s == cloudupload.StateUploading {
			if e, err := m.lookup(jobs[i].ID); err == nil {
				jobs[i] = m.withProgress(e, jobs[i])
			}
		}
	}
	if m.shared != nil {
		return m.storeList(ids, jobs)
	}
	return jobs
}
