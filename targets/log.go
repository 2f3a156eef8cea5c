package targets

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/cloudupload/cloudupload/internal/atomicfile"
	"github.com/cloudupload/cloudupload/internal/human"
)

// EnvProgressFile names the environment variable in which the daemon gives
// the uploader the path of the job's progress file (see Log.ReportProgress).
const EnvProgressFile = "CLOUDUPLOAD_PROGRESS_FILE"

// ProgressInterval is how often at most a transfer's progress is written to
// the progress file.
const ProgressInterval = time.Second

// Log writes lines for people into the job log: what is happening, progress,
// how long each step took. It is safe for concurrent use. It must never be
// given secrets.
type Log struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time

	// progressPath is where transfers report to ("" for nowhere); guarded
	// by reportMu with lastReport.
	reportMu     sync.Mutex
	progressPath string
	lastReport   time.Time
}

// ReportProgress makes every transfer started with Log.Progress also write
// how far it has come to path, as the JSON object {"done":N,"total":M}
// (bytes; total 0 when unknown): atomically (a temporary file renamed over
// path), at most once per ProgressInterval and once more when the transfer
// is done. The daemon gives the path in CLOUDUPLOAD_PROGRESS_FILE and shows
// it in the job document, so every target that reports its transfer with
// Log.Progress shows its progress to the job's owner. Write errors are
// logged once and otherwise ignored: progress is advisory.
func (l *Log) ReportProgress(path string) {
	l.reportMu.Lock()
	defer l.reportMu.Unlock()
	l.progressPath = path
}

// report writes done and total to the progress file when one is set and
// the interval has passed (or force).
func (l *Log) report(done, total int64, force bool) {
	if l == nil {
		return
	}
	l.reportMu.Lock()
	path := l.progressPath
	now := time.Now()
	if path == "" || !force && now.Sub(l.lastReport) < ProgressInterval {
		l.reportMu.Unlock()
		return
	}
	l.lastReport = now
	b := make([]byte, 0, 64)
	b = append(b, `{"done":`...)
	b = strconv.AppendInt(b, done, 10)
	b = append(b, `,"total":`...)
	b = strconv.AppendInt(b, total, 10)
	b = append(b, "}\n"...)
	err := atomicfile.Replace(path, b, 0o644)
	if err != nil {
		l.progressPath = "" // once is enough
	}
	l.reportMu.Unlock()
	if err != nil {
		l.Printf("cannot report progress to the server (%v); the upload goes on", err)
	}
}

// NewLog returns a Log writing to w.
func NewLog(w io.Writer) *Log { return &Log{w: w, now: time.Now} }

// Printf writes one timestamped line.
func (l *Log) Printf(format string, args ...any) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s %s\n", l.now().UTC().Format("2006-01-02 15:04:05"), fmt.Sprintf(format, args...))
}

// Step logs the start of a step and returns a function that logs its end
// with the time it took: `defer log.Step("register image %s", name)()`.
func (l *Log) Step(format string, args ...any) (done func()) {
	what := fmt.Sprintf(format, args...)
	l.Printf("%s ...", what)
	start := time.Now()
	return func() { l.Printf("%s: done in %s", what, Round(time.Since(start))) }
}

// Round shortens a duration for people (see human.Round).
func Round(d time.Duration) time.Duration { return human.Round(d) }

// Progress reports how far a transfer of Total bytes has come, at most once
// per Every, with percent and MiB/s, to the log and (see Log.ReportProgress)
// to the progress file. Add may be called from many goroutines.
type Progress struct {
	log      *Log
	what     string
	total    int64
	every    time.Duration
	start    time.Time
	reported bool // written to the progress file

	mu       sync.Mutex
	done     int64
	lastTime time.Time
	lastDone int64
}

// Progress starts reporting on a transfer called what of total bytes
// (0 = unknown) every 5 seconds.
func (l *Log) Progress(what string, total int64) *Progress {
	now := time.Now()
	p := &Progress{log: l, what: what, total: total, every: 5 * time.Second, start: now, lastTime: now, reported: true}
	l.report(0, total, true)
	return p
}

// Pass is Progress for a preparatory pass over the data (a checksum before
// the upload): logged the same way but not written to the progress file,
// so that the job's progress goes from 0 to 100 once, with the transfer
// that publishes.
func (l *Log) Pass(what string, total int64) *Progress {
	now := time.Now()
	return &Progress{log: l, what: what, total: total, every: 5 * time.Second, start: now, lastTime: now}
}

// Add records n more bytes done and logs if the interval has passed.
func (p *Progress) Add(n int64) {
	p.mu.Lock()
	p.done += n
	if p.reported {
		p.log.report(p.done, p.total, false)
	}
	now := time.Now()
	if now.Sub(p.lastTime) < p.every {
		p.mu.Unlock()
		return
	}
	rate := float64(p.done-p.lastDone) / now.Sub(p.lastTime).Seconds()
	p.lastTime, p.lastDone = now, p.done
	line := p.line(rate)
	p.mu.Unlock()
	p.log.Printf("%s", line)
}

// Done logs the final figures: bytes, time and average rate.
func (p *Progress) Done() {
	p.mu.Lock()
	d := time.Since(p.start)
	avg := float64(p.done) / d.Seconds()
	line := fmt.Sprintf("%s: %s in %s (%.1f MiB/s)", p.what, MiB(p.done), Round(d), avg/(1<<20))
	if p.reported {
		p.log.report(p.done, max(p.total, p.done), true)
	}
	p.mu.Unlock()
	p.log.Printf("%s", line)
}

func (p *Progress) line(rate float64) string {
	if p.total > 0 {
		return fmt.Sprintf("%s: %s of %s (%d%%), %.1f MiB/s", p.what, MiB(p.done), MiB(p.total), p.done*100/p.total, rate/(1<<20))
	}
	return fmt.Sprintf("%s: %s, %.1f MiB/s", p.what, MiB(p.done), rate/(1<<20))
}

// MiB formats a byte count for people.
func MiB(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
