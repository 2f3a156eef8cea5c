package targets

import (
	"bytes"
	"strings"
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
