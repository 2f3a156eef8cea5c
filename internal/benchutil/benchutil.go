package benchutil

import (
	"context"
	"io"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/uploader/image"
)

// DecodeTime opens the image at path as the uploader does, reads (and
// decompresses) its whole disk to nothing, and returns how long the reading
// took and how many bytes it gave.
func DecodeTime(tb testing.TB, path string) (time.Duration, int64) {
	tb.Helper()
	d, n, _ := Decode(tb, path)
	return d, n
}

// Decode is DecodeTime that also returns the CPU time the decoding used:
// this process's and that of the decompressor processes it waited for
// (the xz binary). It assumes nothing else runs in the process meanwhile.
func Decode(tb testing.TB, path string) (time.Duration, int64, time.Duration) {
	tb.Helper()
	cpu0 := CPU()
	d, n := decode(tb, path)
	return d, n, CPU() - cpu0
}

// CPU is the CPU time (user and system) this process and its waited-for
// children have used so far.
func CPU() time.Duration {
	var t time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			t += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return t
}

func decode(tb testing.TB, path string) (time.Duration, int64) {
	tb.Helper()
	im, err := image.Open(path, filepath.Base(path))
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	rc, err := im.OpenDisk(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	n, err := io.CopyBuffer(io.Discard, rc, make([]byte, 1<<20))
	rc.Close()
	if err != nil {
		tb.Fatal(err)
	}
	return time.Since(start), n
}

// Text fills buffers with text-like bytes: words drawn from a vocabulary of
// 4096 random ones, which xz compresses about 3:1, like the files of an OS
// image.
type Text struct {
	r     *rand.Rand
	words [][]byte
}

// NewText makes a vocabulary with r and draws from it with r.
func NewText(r *rand.Rand) *Text {
	t := &Text{r: r}
	for range 4096 {
		w := make([]byte, 2+r.IntN(10))
		for k := range w {
			w[k] = byte('a' + r.IntN(26))
		}
		t.words = append(t.words, append(w, ' '))
	}
	return t
}

// Fill fills b with words.
func (t *Text) Fill(b []byte) {
	for i := 0; i < len(b); {
		i += copy(b[i:], t.words[t.r.IntN(len(t.words))])
	}
}
