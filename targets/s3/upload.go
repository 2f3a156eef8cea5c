package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

// uploadAPI is the part of the S3 client an upload uses. *s3.Client
// satisfies it; unit tests use recording fakes.
type uploadAPI interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	CreateMultipartUpload(context.Context, *s3.CreateMultipartUploadInput, ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(context.Context, *s3.UploadPartInput, ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	ListParts(context.Context, *s3.ListPartsInput, ...func(*s3.Options)) (*s3.ListPartsOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Sizes of the upload.
const (
	minPartSize = 16 << 20          // parts are at least this large
	maxParts    = 10000             // S3's limit per multipart upload
	maxPartSize = 5 << 30           // S3's limit per part
	maxObject   = 5 << 40           // S3's limit per object
	maxBuffers  = 256 << 20         // memory for part buffers when streaming
	parallel    = 8                 // parts in flight
	cleanupTime = 2 * time.Minute   // budget for aborting after a kill
	maxAborts   = 6                 // aborts of one multipart upload before giving up
	hashBuffer  = 1 << 20           // read size of the checksum pass
	metaSHA256  = "sha256"          // x-amz-meta-sha256: hex SHA-256 of the object
	metaJob     = "cloudupload-job" // x-amz-meta-cloudupload-job: "<job id> <start>"
)

// partSize chooses the part size for an object of size bytes: 16 MiB, or
// more (in whole MiB) when that would need more than 10,000 parts.
func partSize(size int64) int64 {
	ps := int64(minPartSize)
	if need := (size + maxParts - 1) / maxParts; need > ps {
		ps = (need + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return ps
}

// object is what to store and where.
type object struct {
	bucket, key  string
	size         int64 // -1: a stream whose size is learnt by reading it
	contentType  string
	storageClass string
	tagging      string // URL-encoded, as the x-amz-tagging header
	public       bool
	owner        string // identifies this upload in metadata, for cleanup
	// Exactly one of file and open is set. file is read in place, part by
	// part (a plain file); open gives the bytes as a stream read once for
	// the checksum and once for the upload (a decompressed disk).
	file io.ReaderAt
	open func(ctx context.Context) (io.ReadCloser, error)
}

// uploader puts objects into S3.
type uploader struct {
	api      uploadAPI
	log      *targets.Log
	parallel int           // parts in flight (default parallel)
	partSize int64         // fixed part size (≥ 5 MiB), for tests; 0 = partSize(size)
	stall    time.Duration // how long a part may take, for tests; 0 = from its size
}

func (u *uploader) partSizeFor(size int64) int64 {
	if u.partSize > 0 {
		return u.partSize
	}
	return partSize(size)
}

func (u *uploader) workers() int {
	if u.parallel > 0 {
		return u.parallel
	}
	return parallel
}

// put stores o and returns its SHA-256. The checksum is computed first, in
// one sequential pass, because S3 takes metadata only when an upload
// starts; then the bytes are sent with a SHA-256 checksum per part (or for
// the whole object when it fits in one PUT), which S3 verifies. On failure
// or cancellation nothing is left: the multipart upload is aborted and an
// object this upload completed is deleted.
func (u *uploader) put(ctx context.Context, o *object) (sum [sha256.Size]byte, err error) {
	if o.size > maxObject {
		return sum, cloudupload.Errorf(cloudupload.EINVALID, "the image is %s; S3 objects are at most 5 TiB", targets.MiB(o.size))
	}
	sized := o.size >= 0
	ps := u.partSizeFor(o.size)
	multi := sized && o.size >= ps
	var partSums [][sha256.Size]byte
	if sum, partSums, err = u.checksum(ctx, o, multi, ps); err != nil {
		return sum, err
	}
	if !sized {
		ps = u.partSizeFor(o.size)
		multi = o.size >= ps
	}
	if o.size > maxObject {
		return sum, cloudupload.Errorf(cloudupload.EINVALID, "the image is %s; S3 objects are at most 5 TiB", targets.MiB(o.size))
	}
	meta := map[string]string{metaSHA256: hex.EncodeToString(sum[:]), metaJob: o.owner}
	if multi {
		err = u.multipart(ctx, o, sum, partSums, meta)
	} else {
		err = u.single(ctx, o, sum, meta)
	}
	if err != nil {
		u.removeIfOurs(ctx, o)
		return sum, err
	}
	return sum, nil
}

// checksum reads the whole source once and returns its SHA-256. For a
// plain file sent in parts it also returns each part's SHA-256, computed
// alongside by other goroutines (the whole-file hash is sequential and
// keeps one core busy; the parts' hashes use the others while the network
// is idle), so the upload itself hashes nothing.
func (u *uploader) checksum(ctx context.Context, o *object, multi bool, ps int64) (sum [sha256.Size]byte, partSums [][sha256.Size]byte, err error) {
	what := "checksum of the disk"
	if o.size >= 0 {
		what = "checksum " + targets.MiB(o.size)
	}
	done := u.log.Step("%s", what)
	var r io.Reader
	if o.file != nil {
		r = io.NewSectionReader(o.file, 0, o.size)
		if multi {
			ctx2, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			var wg sync.WaitGroup
			defer func() {
				if err != nil {
					cancel(err)
				}
				wg.Wait()
				if err == nil {
					err = context.Cause(ctx2)
				}
			}()
			partSums = u.hashParts(ctx2, cancel, &wg, o, ps)
			ctx = ctx2
		}
	} else {
		rc, err := o.open(ctx)
		if err != nil {
			return sum, nil, fmt.Errorf("open image: %w", err)
		}
		defer rc.Close()
		r = rc
	}
	h := sha256.New()
	p := u.log.Pass("checksum", max(o.size, 0))
	buf := make([]byte, hashBuffer)
	var n int64
	for {
		if ctx.Err() != nil {
			return sum, nil, fmt.Errorf("checksum: %w", context.Cause(ctx))
		}
		m, err := r.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		p.Add(int64(m))
		if err == io.EOF {
			break
		} else if err != nil {
			return sum, nil, fmt.Errorf("read image: %w", err)
		}
	}
	if o.size < 0 {
		o.size = n // a stream whose size was not known: now it is
	} else if n != o.size {
		return sum, nil, fmt.Errorf("read image: %d bytes, expected %d", n, o.size)
	}
	copy(sum[:], h.Sum(nil))
	done()
	return sum, partSums, nil
}

// hashParts starts goroutines (one per spare core) that hash the parts of a
// plain file. wg ends when they are done; a read error cancels ctx.
func (u *uploader) hashParts(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup, o *object, ps int64) [][sha256.Size]byte {
	nparts := int((o.size + ps - 1) / ps)
	sums := make([][sha256.Size]byte, nparts)
	var next atomic.Int64
	for range max(1, min(runtime.NumCPU()-1, u.workers())) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, hashBuffer)
			for n := int(next.Add(1) - 1); n < nparts && ctx.Err() == nil; n = int(next.Add(1) - 1) {
				off := int64(n) * ps
				h := sha256.New()
				if _, err := io.CopyBuffer(h, io.NewSectionReader(o.file, off, min(ps, o.size-off)), buf); err != nil {
					cancel(fmt.Errorf("read image: %w", err))
					return
				}
				h.Sum(sums[n][:0])
			}
		}()
	}
	return sums
}

func (u *uploader) single(ctx context.Context, o *object, sum [sha256.Size]byte, meta map[string]string) error {
	done := u.log.Step("upload s3://%s/%s (%s, one request)", o.bucket, o.key, targets.MiB(o.size))
	var body io.ReadSeeker
	if o.file != nil {
		body = io.NewSectionReader(o.file, 0, o.size)
	} else {
		buf, err := readAll(ctx, o)
		if err != nil {
			return err
		}
		if sha256.Sum256(buf) != sum {
			return fmt.Errorf("read image: the second read gave different bytes than the first")
		}
		body = bytes.NewReader(buf)
	}
	in := &s3.PutObjectInput{
		Bucket: &o.bucket, Key: &o.key, Body: body, ContentLength: aws.Int64(o.size),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		Metadata:       meta,
	}
	o.apply(&in.ContentType, &in.StorageClass, &in.Tagging, &in.ACL)
	// One request below the part size: its progress is all or nothing.
	progress := u.log.Progress("upload", o.size)
	if _, err := u.api.PutObject(ctx, in, unsignedPayload); err != nil {
		return s3Error(fmt.Sprintf("upload s3://%s/%s", o.bucket, o.key), err)
	}
	progress.Add(o.size)
	progress.Done()
	done()
	return nil
}

// readAll reads a small streamed source completely.
func readAll(ctx context.Context, o *object) ([]byte, error) {
	rc, err := o.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	defer rc.Close()
	buf := make([]byte, o.size+1)
	n, err := io.ReadFull(rc, buf)
	switch {
	case err != nil && err != io.ErrUnexpectedEOF && err != io.EOF:
		return nil, fmt.Errorf("read image: %w", err)
	case n != int(o.size):
		return nil, fmt.Errorf("read image: the second read gave different bytes than the first")
	}
	return buf[:n], nil
}

func (o *object) apply(ct **string, sc *types.StorageClass, tagging **string, acl *types.ObjectCannedACL) {
	if o.contentType != "" {
		*ct = aws.String(o.contentType)
	}
	*sc = types.StorageClass(o.storageClass)
	if o.tagging != "" {
		*tagging = aws.String(o.tagging)
	}
	if o.public {
		*acl = types.ObjectCannedACLPublicRead
	}
}

// part is one part to send: its index (PartNumber-1) and, when streaming,
// its bytes in a pooled buffer.
type part struct {
	n   int
	buf []byte
}

func (u *uploader) multipart(ctx context.Context, o *object, sum [sha256.Size]byte, partSums [][sha256.Size]byte, meta map[string]string) (err error) {
	ps := u.partSizeFor(o.size)
	nparts := int((o.size + ps - 1) / ps)
	workers := u.workers()
	nbuf := 0
	if o.file == nil {
		// Streaming: one buffer being filled, the others being sent.
		nbuf = min(workers+1, max(2, int(maxBuffers/ps)))
		workers = min(workers, nbuf-1)
	}
	done := u.log.Step("upload s3://%s/%s (%s in %d parts of %s, %d in parallel)", o.bucket, o.key, targets.MiB(o.size), nparts, targets.MiB(ps), workers)
	in := &s3.CreateMultipartUploadInput{Bucket: &o.bucket, Key: &o.key, ChecksumAlgorithm: types.ChecksumAlgorithmSha256, Metadata: meta}
	o.apply(&in.ContentType, &in.StorageClass, &in.Tagging, &in.ACL)
	created, err := u.api.CreateMultipartUpload(ctx, in)
	if err != nil {
		return s3Error(fmt.Sprintf("start upload to s3://%s/%s", o.bucket, o.key), err)
	}
	id := created.UploadId
	defer func() {
		if err != nil {
			u.abort(ctx, o, id)
		}
	}()

	ctx2, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fail := func(err error) { cancel(err) }
	progress := u.log.Progress("upload", o.size)
	parts := make([]types.CompletedPart, nparts)
	work := make(chan part)
	pool := make(chan []byte, nbuf)
	for range nbuf {
		pool <- make([]byte, ps)
	}

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				off := int64(p.n) * ps
				size := min(ps, o.size-off)
				var body io.ReadSeeker
				var psum [sha256.Size]byte
				if p.buf != nil {
					body, psum = bytes.NewReader(p.buf), sha256.Sum256(p.buf)
				} else {
					body, psum = io.NewSectionReader(o.file, off, size), partSums[p.n]
				}
				// The part's SHA-256 goes in a signed header that S3
				// checks; the payload itself is not hashed again for
				// the signature.
				out, err := u.uploadPart(ctx2, &s3.UploadPartInput{
					Bucket: &o.bucket, Key: &o.key, UploadId: id,
					PartNumber: aws.Int32(int32(p.n + 1)), Body: body, ContentLength: aws.Int64(size),
					ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(psum[:])),
				})
				if p.buf != nil {
					pool <- p.buf[:cap(p.buf)]
				}
				if err != nil {
					fail(s3Error(fmt.Sprintf("upload part %d of s3://%s/%s", p.n+1, o.bucket, o.key), err))
					continue // drain work so the producer never blocks
				}
				parts[p.n] = types.CompletedPart{PartNumber: aws.Int32(int32(p.n + 1)), ETag: out.ETag,
					ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(psum[:]))}
				progress.Add(size)
			}
		}()
	}

	// Produce the parts in order.
	if o.file != nil {
		for n := 0; n < nparts && ctx2.Err() == nil; n++ {
			select {
			case work <- part{n: n}:
			case <-ctx2.Done():
			}
		}
	} else if err := u.stream(ctx2, o, sum, ps, nparts, pool, work); err != nil {
		fail(err)
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx2); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("upload s3://%s/%s: %w", o.bucket, o.key, ctx.Err())
		}
		return err
	}
	progress.Done()

	_, err = u.api.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &o.bucket, Key: &o.key, UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return s3Error(fmt.Sprintf("complete upload to s3://%s/%s", o.bucket, o.key), err)
	}
	done()
	return nil
}

// stream reads the source into pooled buffers, part by part, and hands
// them to the workers. It checks that the bytes hash as in the first pass.
func (u *uploader) stream(ctx context.Context, o *object, sum [sha256.Size]byte, ps int64, nparts int, pool chan []byte, work chan<- part) error {
	rc, err := o.open(ctx)
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	defer rc.Close()
	h := sha256.New()
	for n := 0; n < nparts; n++ {
		var buf []byte
		select {
		case buf = <-pool:
		case <-ctx.Done():
			return nil
		}
		size := min(ps, o.size-int64(n)*ps)
		buf = buf[:size]
		if _, err := io.ReadFull(rc, buf); err != nil {
			return fmt.Errorf("read image: %w", err)
		}
		h.Write(buf)
		if n == nparts-1 {
			// Check before the last part leaves, so a changed source
			// can never complete.
			var one [1]byte
			m, err := io.ReadFull(rc, one[:])
			if err != nil && err != io.EOF {
				return fmt.Errorf("read image: %w", err)
			}
			if m != 0 || !bytes.Equal(h.Sum(nil), sum[:]) {
				return fmt.Errorf("read image: the second read gave different bytes than the first")
			}
		}
		select {
		case work <- part{n: n, buf: buf}:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// Stalls: a part request that makes no progress is given up after
// stallTime plus the time the part takes at minRate, and sent again, at most
// stallTries times in all (the SDK's own retries cover errors, not stalls).
const (
	stallTime  = time.Minute
	minRate    = 64 << 10 // bytes per second
	stallTries = 3
)

// uploadPart sends one part, again when a try stalls.
func (u *uploader) uploadPart(ctx context.Context, in *s3.UploadPartInput) (*s3.UploadPartOutput, error) {
	limit := u.stall
	if limit == 0 {
		limit = stallTime + time.Duration(*in.ContentLength/minRate)*time.Second
	}
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, limit)
		out, err := u.api.UploadPart(tctx, in, unsignedPayload)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) || try == stallTries {
			return out, err
		}
		u.log.Printf("part %d: no answer within %s, sending it again", *in.PartNumber, targets.Round(limit))
		if _, err := in.Body.(io.Seeker).Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
	}
}

// unsignedPayload makes a request sign "UNSIGNED-PAYLOAD" instead of the
// body's SHA-256 (which plain-HTTP requests would otherwise hash again):
// the body is protected by its signed x-amz-checksum-sha256 header instead.
func unsignedPayload(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// abort aborts a multipart upload with a fresh context (ctx may be the
// cancelled one of a killed job), after every part request has returned, so
// S3 keeps no parts.
func (u *uploader) abort(ctx context.Context, o *object, id *string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTime)
	defer cancel()
	if err := AbortMultipartUpload(cctx, u.api, o.bucket, o.key, id); err != nil {
		u.log.Printf("could not abort the multipart upload to s3://%s/%s (a bucket lifecycle rule for incomplete uploads would remove its parts): %s", o.bucket, o.key, summary(err))
		return
	}
	u.log.Printf("aborted the multipart upload to s3://%s/%s: no parts are left", o.bucket, o.key)
}

// AbortAPI is what AbortMultipartUpload needs of an S3 client.
type AbortAPI interface {
	AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	ListParts(context.Context, *s3.ListPartsInput, ...func(*s3.Options)) (*s3.ListPartsOutput, error)
}

// AbortMultipartUpload aborts multipart upload id of bucket/key and returns
// nil once S3 no longer knows it. A part the server was still storing when
// the abort arrived can bring the upload back (S3 documents that an upload
// may need aborting more than once), so after each abort the upload is
// looked up with ListParts and aborted again, up to maxAborts times with
// backoff, until S3 answers 404. The caller bounds the time with ctx.
func AbortMultipartUpload(ctx context.Context, api AbortAPI, bucket, key string, id *string) error {
	wait := 100 * time.Millisecond
	for try := 1; ; try++ {
		_, err := api.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: id})
		if err != nil && !isStatus(err, 404) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("confirm the abort: %w", ctx.Err())
		case <-time.After(wait):
		}
		_, err = api.ListParts(ctx, &s3.ListPartsInput{Bucket: &bucket, Key: &key, UploadId: id, MaxParts: aws.Int32(1)})
		switch {
		case isStatus(err, 404):
			return nil
		case err != nil:
			return fmt.Errorf("confirm the abort: %w", err)
		case try == maxAborts:
			return fmt.Errorf("the upload is still there after %d aborts", try)
		}
		wait *= 2
	}
}

// removeIfOurs deletes the object if this upload created it (a completion
// whose answer was lost, or a later step that failed).
func (u *uploader) removeIfOurs(ctx context.Context, o *object) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTime)
	defer cancel()
	head, err := u.api.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &o.bucket, Key: &o.key})
	if err != nil || head.Metadata[metaJob] != o.owner {
		return
	}
	if _, err := u.api.DeleteObject(cctx, &s3.DeleteObjectInput{Bucket: &o.bucket, Key: &o.key}); err != nil {
		u.log.Printf("could not delete s3://%s/%s after the failure: %s", o.bucket, o.key, summary(err))
		return
	}
	u.log.Printf("deleted s3://%s/%s after the failure", o.bucket, o.key)
}

// s3Error makes an SDK error readable: what failed and S3's code and
// message. It keeps err in the chain (context.Canceled included).
func s3Error(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := what + ": " + summary(err)
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessControlListNotSupported":
			msg += " (the bucket has ACLs disabled: leave public false and grant read access with a bucket policy)"
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			msg += " (is region the bucket's region?)"
		case "AccessDenied":
			msg += " (the role needs the permissions listed in the s3 target's documentation)"
		}
	}
	return &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: msg, Err: err}
}

// summary is S3's error code and message, or the error itself.
func summary(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if m := ae.ErrorMessage(); m != "" {
			return ae.ErrorCode() + ": " + m
		}
		return ae.ErrorCode()
	}
	return err.Error()
}

// isStatus tells whether err is an HTTP answer with the given status.
func isStatus(err error, status int) bool {
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == status
}
