package ec2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/smithy-go"

	"github.com/cloudupload/cloudupload/targets"
)

// blockSize is the EBS direct API's block size.
const blockSize = 512 << 10

// zeroBlock is compared against to skip all-zero blocks: a fresh snapshot
// reads zeros, so they need not be sent.
var zeroBlock = make([]byte, blockSize)

// blockWriter sends a disk to a started snapshot.
type blockWriter struct {
	api      ebsAPI
	snapshot string
	workers  int           // parallel PutSnapshotBlock requests
	timeout  time.Duration // per request, SDK retries included
	attempts int           // own attempts per block on top of the SDK's
	backoff  time.Duration // first pause between own attempts
	progress *targets.Progress
}

// blockStats counts what writeBlocks did.
type blockStats struct {
	Sent, Skipped int64 // blocks
	Retried       int64 // own retries (the SDK's are not counted)
}

type block struct {
	index int32
	buf   []byte
	n     int // bytes of the disk in buf; the rest is zero padding
}

// writeBlocks reads size bytes from r and sends every block that is not all
// zeros. Memory is bounded by (workers+2) blocks whatever the disk size.
// The first failure cancels the rest; ctx's cancellation returns an error
// wrapping ctx.Err() promptly.
func (w *blockWriter) writeBlocks(ctx context.Context, r io.Reader, size int64) (blockStats, error) {
	if size <= 0 {
		return blockStats{}, fmt.Errorf("disk is empty")
	}
	if size > int64(1<<31-1)*blockSize {
		return blockStats{}, fmt.Errorf("disk of %d bytes is too large for a snapshot", size)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	workers := max(w.workers, 1)
	free := make(chan []byte, workers+2)
	for range workers + 2 {
		free <- nil // allocated on first use, so small disks stay small
	}
	work := make(chan block)
	var stats blockStats
	var sent, retried atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				n, err := w.put(ctx, b)
				retried.Add(int64(n))
				if err != nil {
					cancel(err)
				} else {
					sent.Add(1)
					w.done(int64(b.n))
				}
				free <- b.buf
			}
		}()
	}

	readErr := func() error {
		defer close(work)
		holes, _ := r.(dataSeeker)
		var off int64
		for index := int32(0); off < size; index++ {
			if holes != nil {
				next, err := holes.NextData(off)
				if err != nil {
					return fmt.Errorf("find data in disk: %w", err)
				}
				if skip := (next - off) / blockSize; skip > 0 {
					stats.Skipped += skip
					w.done(min(skip*blockSize, size-off))
					index += int32(skip)
					off += skip * blockSize
					holes.SkipTo(off)
					if off >= size {
						break
					}
				}
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return nil
			}
			if buf == nil {
				buf = make([]byte, blockSize)
			}
			n := int(min(size-off, blockSize))
			if _, err := io.ReadFull(r, buf[:n]); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					err = fmt.Errorf("image ended early, before %d of %d bytes", off+int64(n), size)
				}
				return fmt.Errorf("read disk: %w", err)
			}
			clear(buf[n:])
			off += int64(n)
			if bytes.Equal(buf, zeroBlock) {
				stats.Skipped++
				w.done(int64(n))
				free <- buf
				continue
			}
			select {
			case work <- block{index: index, buf: buf, n: n}:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	}()
	wg.Wait()
	stats.Sent, stats.Retried = sent.Load(), retried.Load()
	if readErr != nil {
		return stats, readErr
	}
	if err := context.Cause(ctx); err != nil {
		return stats, err
	}
	return stats, nil
}

// put sends one block with its SHA-256, retrying timeouts, throttling and
// server errors the SDK gave up on. It returns how many own retries it made.
func (w *blockWriter) put(ctx context.Context, b block) (int, error) {
	sum := sha256.Sum256(b.buf)
	checksum := base64.StdEncoding.EncodeToString(sum[:])
	attempts := max(w.attempts, 1)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, w.timeout)
		_, err := w.api.PutSnapshotBlock(actx, &ebs.PutSnapshotBlockInput{
			SnapshotId:        aws.String(w.snapshot),
			BlockIndex:        aws.Int32(b.index),
			BlockData:         bytes.NewReader(b.buf),
			DataLength:        aws.Int32(blockSize),
			Checksum:          aws.String(checksum),
			ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		})
		timedOut := actx.Err() != nil
		cancel()
		if err == nil {
			return attempt - 1, nil
		}
		if ctx.Err() != nil {
			return attempt - 1, fmt.Errorf("put block %d: %w", b.index, context.Cause(ctx))
		}
		if attempt >= attempts || !(timedOut || retryable(err)) {
			return attempt - 1, fmt.Errorf("put block %d of snapshot %s: %w", b.index, w.snapshot, err)
		}
		pause := w.backoff << (attempt - 1)
		pause += time.Duration(rand.Int64N(int64(pause)/2 + 1))
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return attempt, fmt.Errorf("put block %d: %w", b.index, context.Cause(ctx))
		}
	}
}

// retryable reports whether err may go away when the request is repeated:
// anything but a client fault, throttling excepted.
func retryable(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ThrottlingException", "RequestThrottledException", "Throttling", "TooManyRequestsException",
			"RequestLimitExceeded", "InternalServerException", "ServiceUnavailableException", "RequestTimeout":
			return true
		}
		return ae.ErrorFault() != smithy.FaultClient
	}
	return true // transport errors, truncated responses, SDK attempts exhausted on them
}

func (w *blockWriter) done(n int64) {
	if w.progress != nil {
		w.progress.Add(n)
	}
}

// dataSeeker is implemented by disks that know where their holes are
// (image.Sparse): writeBlocks skips whole blocks of holes without reading
// them.
type dataSeeker interface {
	// NextData returns the offset of the first byte at or after off that
	// may hold data, or the disk size when none does.
	NextData(off int64) (int64, error)
	// SkipTo moves the read position forward to off.
	SkipTo(off int64)
}
