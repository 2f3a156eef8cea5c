package human

import (
	"testing"
	"time"
)

func TestRound(t *testing.T) {
	for d, want := range map[time.Duration]time.Duration{
		1234567 * time.Nanosecond:    time.Millisecond,
		1234567890 * time.Nanosecond: 1200 * time.Millisecond,
		61700 * time.Millisecond:     62 * time.Second,
	} {
		if got := Round(d); got != want {
			t.Errorf("Round(%v) = %v, want %v", d, got, want)
		}
	}
}
