package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cloudupload/cloudupload/client"
)

// clean makes text from the server safe to print: control characters
// (escape sequences a job's details could carry) become spaces, and it is
// cut to max runes (0: no limit).
func clean(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); max > 0 && len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// bytesHuman writes n in binary units: 512 B, 1.5 KiB, 16.0 MiB.
func bytesHuman(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= 1024
		if f < 1024 || u == "TiB" {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return ""
}

// duration writes d for a person: 42s, 3m05s, 2h10m.
func duration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// figures is how far a transfer is, as shown: any field may be unknown
// (negative).
type figures struct {
	Percent     int     // 0–100, -1 unknown
	Done, Total int64   // bytes, -1 unknown
	Rate        float64 // bytes/s, -1 unknown
	ETA         float64 // seconds, -1 unknown
}

func unknownFigures() figures { return figures{Percent: -1, Done: -1, Total: -1, Rate: -1, ETA: -1} }

// text is the figures on one line: "45%  120.0 MiB of 256.0 MiB  35.2 MiB/s  ETA 4s".
func (f figures) text() string {
	var parts []string
	if f.Percent >= 0 {
		parts = append(parts, fmt.Sprintf("%3d%%", f.Percent))
	}
	switch {
	case f.Done >= 0 && f.Total > 0:
		parts = append(parts, bytesHuman(f.Done)+" of "+bytesHuman(f.Total))
	case f.Done >= 0:
		parts = append(parts, bytesHuman(f.Done))
	}
	if f.Rate > 0 {
		parts = append(parts, bytesHuman(int64(f.Rate))+"/s")
	}
	if f.ETA >= 0 && f.Percent < 100 {
		parts = append(parts, "ETA "+duration(time.Duration(f.ETA*float64(time.Second))))
	}
	return strings.Join(parts, "  ")
}

// bar draws "label [=====>    ] figures" in width columns.
func bar(label string, f figures, width int) string {
	text := f.text()
	room := width - len([]rune(label)) - len([]rune(text)) - 5
	if f.Percent < 0 || room < 10 {
		return clean(label+"  "+text, width-1)
	}
	room = min(room, 40)
	full := room * f.Percent / 100
	b := strings.Repeat("=", full)
	if full < room {
		b += ">" + strings.Repeat(" ", room-full-1)
	}
	return clean(label+" ["+b+"] "+text, width-1)
}

// meter shows progress on stderr: a bar redrawn in place on a terminal,
// or, when not a terminal, a plain line at most every interval and when
// the label changes. Log text printed meanwhile goes through Write, which
// takes the bar off the screen before and puts it back after.
type meter struct {
	mu       sync.Mutex
	err      io.Writer // where the bar goes
	out      io.Writer // where Write sends text
	tty      bool
	width    func() int
	interval time.Duration // plain lines

	line      string // the bar on screen, "" none
	lastLabel string
	lastPlain time.Time
	partial   []byte // text of an unfinished line, held back on a terminal
}

// show draws label and f.
func (m *meter) show(label string, f figures) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.tty {
		now := time.Now()
		if label == m.lastLabel && now.Sub(m.lastPlain) < m.interval {
			return
		}
		m.lastLabel, m.lastPlain = label, now
		fmt.Fprintln(m.err, clean(strings.TrimSpace(label+"  "+f.text()), 0))
		return
	}
	m.line = bar(label, f, m.width())
	fmt.Fprint(m.err, "\r\x1b[K"+m.line)
}

// clear takes the bar off the screen for good.
func (m *meter) clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.line != "" {
		fmt.Fprint(m.err, "\r\x1b[K")
		m.line = ""
	}
	if len(m.partial) > 0 {
		m.out.Write(m.partial)
		m.partial = nil
	}
}

// Write prints log text. On a terminal with a bar shown, only whole lines
// are printed, between taking the bar off and drawing it again.
func (m *meter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.tty || m.line == "" {
		if len(m.partial) > 0 {
			if _, err := m.out.Write(m.partial); err != nil {
				return 0, err
			}
			m.partial = nil
		}
		return m.out.Write(p)
	}
	m.partial = append(m.partial, p...)
	i := strings.LastIndexByte(string(m.partial), '\n')
	if i < 0 {
		if len(m.partial) < 64<<10 {
			return len(p), nil
		}
		i = len(m.partial) - 1
	}
	fmt.Fprint(m.err, "\r\x1b[K")
	if _, err := m.out.Write(m.partial[:i+1]); err != nil {
		return 0, err
	}
	m.partial = append(m.partial[:0], m.partial[i+1:]...)
	fmt.Fprint(m.err, m.line)
	return len(p), nil
}

// jobFigures reads what a job document says of its progress; rate and ETA
// the server did not give are estimated from the previous sample.
type estimator struct {
	state     string
	firstAt   time.Time
	firstDone int64
}

func (e *estimator) figures(j client.Job, now time.Time) figures {
	f := unknownFigures()
	if j.Progress != nil {
		f.Percent = *j.Progress
	}
	t := j.Transfer
	if t == nil {
		return f
	}
	if t.Total > 0 {
		f.Total = t.Total
	}
	f.Done = t.Done
	if f.Percent < 0 && t.Total > 0 {
		f.Percent = int(min(100, t.Done*100/t.Total))
	}
	if e.state != string(j.State) || t.Done < e.firstDone {
		e.state, e.firstAt, e.firstDone = string(j.State), now, t.Done
	}
	if t.Rate > 0 {
		f.Rate = t.Rate
	} else if el := now.Sub(e.firstAt).Seconds(); el >= 1 && t.Done > e.firstDone {
		f.Rate = float64(t.Done-e.firstDone) / el
	}
	if t.ETA > 0 {
		f.ETA = t.ETA
	} else if f.Rate > 0 && t.Total > 0 {
		f.ETA = float64(t.Total-t.Done) / f.Rate
	}
	return f
}
