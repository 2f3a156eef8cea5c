package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/client"
)

func TestFiguresText(t *testing.T) {
	for _, tc := range []struct {
		f    figures
		want string
	}{
		{unknownFigures(), ""},
		{figures{Percent: 45, Done: 120 << 20, Total: 256 << 20, Rate: 35 << 20, ETA: 4}, " 45%  120.0 MiB of 256.0 MiB  35.0 MiB/s  ETA 4s"},
		{figures{Percent: -1, Done: 512, Total: -1, Rate: -1, ETA: -1}, "512 B"},
		{figures{Percent: 100, Done: 1 << 30, Total: 1 << 30, Rate: -1, ETA: 0}, "100%  1.0 GiB of 1.0 GiB"},
		{figures{Percent: 3, Done: -1, Total: -1, Rate: -1, ETA: 3725}, "  3%  ETA 1h02m"},
	} {
		if got := tc.f.text(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestBar(t *testing.T) {
	f := figures{Percent: 50, Done: 5 << 20, Total: 10 << 20, Rate: -1, ETA: -1}
	got := bar("job 7 uploading", f, 80)
	if !strings.HasPrefix(got, "job 7 uploading [") || !strings.Contains(got, "=>") || !strings.HasSuffix(got, "]  50%  5.0 MiB of 10.0 MiB") || len([]rune(got)) >= 80 {
		t.Errorf("bar: %q", got)
	}
	if n := strings.Count(got, "="); n < 10 || n > 21 {
		t.Errorf("bar of 50%% has %d '=': %q", n, got)
	}
	// Too narrow for a bar: the figures alone, cut to the width.
	if got := bar("job 7 uploading", f, 30); strings.Contains(got, "[") || len([]rune(got)) > 29 {
		t.Errorf("narrow bar: %q", got)
	}
	// Control characters from the server never reach the terminal.
	if got := bar("job \x1b[31m", unknownFigures(), 80); strings.ContainsRune(got, 0x1b) {
		t.Errorf("escape in bar: %q", got)
	}
}

// TestMeterTerminal: on a terminal the bar is redrawn in place, and log
// text printed meanwhile takes it off the screen and puts it back, whole
// lines only.
func TestMeterTerminal(t *testing.T) {
	var screen bytes.Buffer
	m := &meter{err: &screen, out: &screen, tty: true, width: func() int { return 60 }}
	m.show("job 1 uploading", figures{Percent: 10, Done: -1, Total: -1, Rate: -1, ETA: -1})
	m.Write([]byte("line one\npart"))
	m.Write([]byte("ial\n"))
	m.clear()
	got := screen.String()
	want := "\r\x1b[Kjob 1 uploading [===>" // start of the bar
	if !strings.HasPrefix(got, want) {
		t.Fatalf("screen starts %q, want %q", got, want)
	}
	// Each line of log: bar cleared, the line, bar redrawn.
	if strings.Count(got, "\r\x1b[K") != 4 || !strings.Contains(got, "\r\x1b[Kline one\njob 1 uploading [") ||
		!strings.Contains(got, "\r\x1b[Kpartial\njob 1 uploading [") || !strings.HasSuffix(got, "\r\x1b[K") {
		t.Errorf("screen: %q", got)
	}
}

// TestMeterPlain: without a terminal, progress is plain lines, at most one
// per interval unless the label changes, and log text passes untouched.
func TestMeterPlain(t *testing.T) {
	var errOut, out bytes.Buffer
	m := &meter{err: &errOut, out: &out, interval: time.Hour}
	f := figures{Percent: 10, Done: -1, Total: -1, Rate: -1, ETA: -1}
	m.show("job 1 receiving", f)
	m.show("job 1 receiving", f) // within the interval: not shown
	m.show("job 1 uploading", f)
	m.Write([]byte("partial"))
	m.clear()
	if got := errOut.String(); got != "job 1 receiving   10%\njob 1 uploading   10%\n" {
		t.Errorf("plain lines: %q", got)
	}
	if out.String() != "partial" {
		t.Errorf("log text: %q", out.String())
	}
}

// TestEstimator: rate and ETA the server does not give are estimated from
// the bytes done since the state began; those it gives are used as they are.
func TestEstimator(t *testing.T) {
	var e estimator
	t0 := time.Unix(1000, 0)
	job := func(done int64, rate, eta float64) client.Job {
		return client.Job{State: "uploading", Transfer: &client.Transfer{Done: done, Total: 1000, Rate: rate, ETA: eta}}
	}
	if f := e.figures(job(100, 0, 0), t0); f.Percent != 10 || f.Rate != -1 || f.ETA != -1 {
		t.Errorf("first sample: %+v", f)
	}
	if f := e.figures(job(300, 0, 0), t0.Add(2*time.Second)); f.Rate != 100 || f.ETA != 7 {
		t.Errorf("estimated: %+v", f)
	}
	if f := e.figures(job(300, 50, 9), t0.Add(3*time.Second)); f.Rate != 50 || f.ETA != 9 {
		t.Errorf("from the server: %+v", f)
	}
	p := 42
	if f := e.figures(client.Job{State: "uploading", Progress: &p}, t0); f.Percent != 42 || f.Done != -1 {
		t.Errorf("percentage only: %+v", f)
	}
}

func TestInterleave(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Bool("json", false, "")
	fs.String("target", "", "")
	got := strings.Join(interleave(fs, []string{"5", "--json", "--target", "mirror", "-", "--", "-x"}), " ")
	if got != "--json --target mirror -- 5 - -x" {
		t.Errorf("interleave: %q", got)
	}
}

func TestClean(t *testing.T) {
	if got := clean("a\x1b[2Jb\nc\u009bd", 0); got != "a [2Jb c d" {
		t.Errorf("clean: %q", got)
	}
	if got := clean("ünïcødé and more", 8); got != "ünïcødé…" {
		t.Errorf("clean cut: %q", got)
	}
}
