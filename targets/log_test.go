package targets

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLogStepAndProgress(t *testing.T) {
	var buf bytes.Buffer
	l := NewLog(&buf)
	l.now = func() time.Time { return time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC) }
	done := l.Step("register image %s", "demo")
	done()
	p := l.Progress("upload", 100<<20)
	p.every = 0
	p.Add(50 << 20)
	p.Done()
	out := buf.String()
	for _, want := range []string{
		"2026-11-21 07:00:00 register image demo ...\n",
		"register image demo: done in ",
		"upload: 50.0 MiB of 100.0 MiB (50%), ",
		"upload: 50.0 MiB in ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestProgressRateLimited(t *testing.T) {
	var buf bytes.Buffer
	p := NewLog(&buf).Progress("copy", 0)
	for i := 0; i < 1000; i++ {
		p.Add(1)
	}
	if buf.Len() != 0 {
		t.Errorf("progress logged before its interval: %q", buf.String())
	}
}

func TestNilLog(t *testing.T) {
	var l *Log
	l.Printf("nothing %d", 1) // must not panic
}

func TestMiBAndRound(t *testing.T) {
	if MiB(10) != "10 bytes" || MiB(3<<20) != "3.0 MiB" {
		t.Errorf("MiB: %q %q", MiB(10), MiB(3<<20))
	}
	if Round(1234567*time.Microsecond) != 1200*time.Millisecond {
		t.Errorf("Round = %s", Round(1234567*time.Microsecond))
	}
}

func TestProgressFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "progress")
	l := NewLog(io.Discard)
	l.ReportProgress(path)
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// A preparatory pass is not the job's progress.
	c := l.Pass("checksum", 100)
	c.Add(100)
	c.Done()
	if _, err := os.Stat(path); err == nil {
		t.Errorf("a pass wrote the progress file: %q", read())
	}
	p := l.Progress("upload", 100)
	if got := read(); got != `{"done":0,"total":100}`+"\n" {
		t.Errorf("at start: %q", got)
	}
	// Within the interval, Add does not write.
	p.Add(10)
	p.Add(20)
	if got := read(); got != `{"done":0,"total":100}`+"\n" {
		t.Errorf("written within the interval: %q", got)
	}
	// After it, the next Add does.
	l.reportMu.Lock()
	l.lastReport = time.Now().Add(-ProgressInterval)
	l.reportMu.Unlock()
	p.Add(5)
	if got := read(); got != `{"done":35,"total":100}`+"\n" {
		t.Errorf("after the interval: %q", got)
	}
	// Done writes at once.
	p.Add(65)
	p.Done()
	if got := read(); got != `{"done":100,"total":100}`+"\n" {
		t.Errorf("when done: %q", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files left beside the progress file: %v", ents)
	}
}

func TestProgressFileUnwritable(t *testing.T) {
	var buf bytes.Buffer
	l := NewLog(&buf)
	l.ReportProgress(filepath.Join(t.TempDir(), "missing", "progress"))
	p := l.Progress("upload", 10)
	p.Add(10)
	p.Done()
	if n := strings.Count(buf.String(), "cannot report progress"); n != 1 {
		t.Errorf("%d complaints, want 1:\n%s", n, buf.String())
	}
}

// Transfers add from many goroutines (ec2's block writers): the final
// report has every byte.
func TestProgressFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "progress")
	l := NewLog(io.Discard)
	l.ReportProgress(path)
	p := l.Progress("snapshot", 8*1000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				p.Add(1)
			}
		})
	}
	wg.Wait()
	p.Done()
	if b, _ := os.ReadFile(path); string(b) != `{"done":8000,"total":8000}`+"\n" {
		t.Errorf("progress file %q", b)
	}
}
