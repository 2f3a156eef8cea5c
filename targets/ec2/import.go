package ec2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cloudupload/cloudupload/targets"
	s3target "github.com/cloudupload/cloudupload/targets/s3"
)

const (
	minPartSize   = 16 << 20
	maxParts      = 10000
	partBufBudget = 128 << 20 // memory for parts in flight
	maxPartConns  = 4
)

// importSnapshot stages the raw disk in s3_bucket, imports it with
// ImportSnapshot and waits for the snapshot. The S3 object and any
// unfinished multipart upload are always removed.
func (r *run) importSnapshot(ctx context.Context, size int64) (snap string, err error) {
	bucket := r.d.S3Bucket
	key := fmt.Sprintf("cloudupload/job-%s-%s-%d/disk.raw", r.job.ID, r.token[:12], time.Now().UnixNano())
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if _, derr := r.s3.DeleteObject(cctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); derr != nil && !isNotFound(derr) {
			r.log.Printf("could not remove s3://%s/%s: %v (remove it by hand)", bucket, key, derr)
		} else {
			r.log.Printf("removed staging object s3://%s/%s", bucket, key)
		}
	}()
	if err := r.putObject(ctx, bucket, key, size); err != nil {
		return "", err
	}

	done := r.log.Step("import snapshot from s3://%s/%s", bucket, key)
	out, err := r.ec2.ImportSnapshot(ctx, &ec2.ImportSnapshotInput{
		ClientToken: aws.String("cloudupload-" + r.token),
		Description: aws.String(r.description()),
		DiskContainer: &types.SnapshotDiskContainer{
			Description: aws.String(r.job.Filename),
			Format:      aws.String("RAW"),
			UserBucket:  &types.UserBucket{S3Bucket: aws.String(bucket), S3Key: aws.String(key)},
		},
	})
	if err != nil {
		return "", fmt.Errorf("import snapshot from s3://%s/%s: %w", bucket, key, err)
	}
	task := aws.ToString(out.ImportTaskId)
	r.record(r.d.Region, "import", task)
	snap, err = r.waitImport(ctx, task)
	if snap != "" {
		r.record(r.d.Region, "snapshot", snap)
	}
	if err != nil {
		return "", err
	}
	if err := r.tag(ctx, r.ec2, snap); err != nil {
		return "", err
	}
	done()
	return snap, nil
}

// waitImport polls the import task until it completes. Unlike the SDK's
// stock waiter it treats deleting/deleted (how a failed import ends) as
// failure, with AWS's status message.
func (r *run) waitImport(ctx context.Context, task string) (string, error) {
	var snap, last string
	err := r.wait(ctx, "import task "+task, func() (bool, error) {
		out, err := r.ec2.DescribeImportSnapshotTasks(ctx, &ec2.DescribeImportSnapshotTasksInput{ImportTaskIds: []string{task}})
		if isNotFound(err) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		for _, t := range out.ImportSnapshotTasks {
			d := t.SnapshotTaskDetail
			if d == nil {
				continue
			}
			snap = aws.ToString(d.SnapshotId)
			status, msg := aws.ToString(d.Status), aws.ToString(d.StatusMessage)
			if now := status + " " + aws.ToString(d.Progress) + " " + msg; now != last {
				last = now
				r.log.Printf("import task %s: %s (progress %s%%) %s", task, status, aws.ToString(d.Progress), msg)
			}
			switch status {
			case "completed":
				if snap == "" {
					return false, fmt.Errorf("import task %s completed without a snapshot", task)
				}
				return true, nil
			case "deleting", "deleted", "error", "failed":
				if msg == "" {
					msg = "no reason given"
				}
				return false, fmt.Errorf("import task %s ended %s: %s", task, status, msg)
			}
		}
		return false, nil
	})
	return snap, err
}

// putObject uploads the raw disk as a multipart upload with bounded memory,
// aborting the upload on failure.
func (r *run) putObject(ctx context.Context, bucket, key string, size int64) (err error) {
	partSize := int64(minPartSize)
	if need := (size + maxParts - 1) / maxParts; need > partSize {
		partSize = (need + 1<<20 - 1) &^ (1<<20 - 1)
	}
	conns := int(min(max(partBufBudget/partSize, 1), maxPartConns))

	disk, err := r.img.OpenDisk(ctx)
	if err != nil {
		return fmt.Errorf("open disk of %s: %w", r.job.Filename, err)
	}
	defer disk.Close()

	done := r.log.Step("upload %s to s3://%s/%s in parts of %s", targets.MiB(size), bucket, key, targets.MiB(partSize))
	mp, err := r.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("start upload to s3://%s/%s: %w", bucket, key, err)
	}
	uploadID := mp.UploadId
	completed := false
	defer func() {
		if completed {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if aerr := s3target.AbortMultipartUpload(cctx, r.s3, bucket, key, uploadID); aerr != nil {
			r.log.Printf("could not abort the multipart upload to s3://%s/%s: %v (abort it by hand)", bucket, key, aerr)
		} else {
			r.log.Printf("aborted the multipart upload to s3://%s/%s", bucket, key)
		}
	}()

	progress := r.log.Progress("upload to s3://"+bucket, size)
	nparts := int((size + partSize - 1) / partSize)
	parts := make([]s3types.CompletedPart, nparts)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	free := make(chan []byte, conns+1)
	for range conns + 1 {
		free <- nil
	}
	type part struct {
		num int32
		buf []byte
	}
	work := make(chan part)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				out, err := r.s3.UploadPart(ctx, &s3.UploadPartInput{
					Bucket: aws.String(bucket), Key: aws.String(key), UploadId: uploadID,
					PartNumber: aws.Int32(p.num), Body: bytes.NewReader(p.buf), ContentLength: aws.Int64(int64(len(p.buf))),
				})
				if err != nil {
					cancel(fmt.Errorf("upload part %d to s3://%s/%s: %w", p.num, bucket, key, err))
				} else {
					parts[p.num-1] = s3types.CompletedPart{PartNumber: aws.Int32(p.num), ETag: out.ETag,
						ChecksumCRC32: out.ChecksumCRC32, ChecksumCRC32C: out.ChecksumCRC32C,
						ChecksumCRC64NVME: out.ChecksumCRC64NVME, ChecksumSHA1: out.ChecksumSHA1, ChecksumSHA256: out.ChecksumSHA256}
					progress.Add(int64(len(p.buf)))
				}
				free <- p.buf[:cap(p.buf)]
			}
		}()
	}
	readErr := func() error {
		defer close(work)
		var off int64
		for num := int32(1); off < size; num++ {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return nil
			}
			if buf == nil {
				buf = make([]byte, partSize)
			}
			n := min(size-off, partSize)
			if _, err := io.ReadFull(disk, buf[:n]); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					err = fmt.Errorf("image ended early, before %d of %d bytes", off+n, size)
				}
				return fmt.Errorf("read disk: %w", err)
			}
			off += n
			select {
			case work <- part{num, buf[:n]}:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	}()
	wg.Wait()
	if readErr != nil {
		return readErr
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if _, err := r.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(key), UploadId: uploadID,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
	}); err != nil {
		return fmt.Errorf("complete upload to s3://%s/%s: %w", bucket, key, err)
	}
	completed = true
	progress.Done()
	done()
	return nil
}
