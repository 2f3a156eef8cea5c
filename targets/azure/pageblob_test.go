package azure

import (
	"context"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"
)

// countingPages is a page blob that counts the bytes written to it.
type countingPages struct{ bytes atomic.Int64 }

func (c *countingPages) UploadPages(_ context.Context, body io.ReadSeekCloser, _ blob.HTTPRange, _ *pageblob.UploadPagesOptions) (pageblob.UploadPagesResponse, error) {
	n, err := io.Copy(io.Discard, body)
	c.bytes.Add(n)
	return pageblob.UploadPagesResponse{}, err
}

// slowDisk yields size bytes of data, 4 MiB at a time, pausing before
// each read, as a decompressor slower than the upload does.
type slowDisk struct{ left int }

func (s *slowDisk) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(5 * time.Millisecond)
	n := min(len(p), s.left, chunkSize)
	for i := range p[:n] {
		p[i] = 1
	}
	s.left -= n
	return n, nil
}

// TestSlowDiskFewBuffers: when the disk is read slower than it is sent,
// writeDisk holds a few chunk buffers, not one per worker.
func TestSlowDiskFewBuffers(t *testing.T) {
	const size = 20 * chunkSize
	api := &countingPages{}
	w := &pageWriter{api: api, workers: 16}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	stats, err := w.writeDisk(context.Background(), &slowDisk{left: size}, size)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Sent != size || api.bytes.Load() != size {
		t.Errorf("sent %d bytes, the blob got %d, want %d", stats.Sent, api.bytes.Load(), size)
	}
	// All 18 buffers would be 72 MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*chunkSize {
		t.Errorf("allocated %d MiB for a disk read slower than it is sent", alloc>>20)
	}
}
