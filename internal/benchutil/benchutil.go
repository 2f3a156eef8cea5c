package benchutil

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/uploader/image"
)

// DecodeTime opens the image at path as the uploader does, reads (and
// decompresses) its whole disk to nothing, and returns how long the reading
// took and how many bytes it gave.
func DecodeTime(tb testing.TB, path string) (time.Duration, int64) {
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
