package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
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
	PutObjectTagging(context.Context, *s3.PutObjectTaggingInput, ...func(*s3.Options)) (*s3.PutObjectTaggingOutput, error)
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
	hashBuffer  = 1 << 20           // read size of the hashing stage for a file
	metaSHA256  = "sha256"          // x-amz-meta-sha256: hex SHA-256 of the object
	metaJob     = "cloudupload-job" // x-amz-meta-cloudupload-job: "<job id> <start>"
	tagSHA256   = "sha256"          // object tag with the SHA-256 when it was learnt during the upload
	maxTags     = 10                // S3's limit of tags per object
)

// castagnoli is the CRC32C table: each part carries its CRC32C, which S3
// checks and from which it computes the object's full-object CRC32C.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

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
	size         int64
	contentType  string
	storageClass string
	tags         map[string]string
	public       bool
	owner        string // identifies this upload in metadata, for cleanup
	// want is the SHA-256 the bytes must have when it is known before the
	// upload (the daemon's CLOUDUPLOAD_IMAGE_SHA256 for a file sent as
	// received): it goes into the metadata at the start, and the upload
	// fails before completing when the bytes sent hash otherwise. nil: the
	// SHA-256 is learnt during the upload and stored as the tag sha256.
	want []byte
	// Exactly one of file and open is set. file is read in place, part by
	// part (a plain file); open gives the bytes as a stream, read once (a
	// decompressed disk).
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

// put stores o and returns its SHA-256, computed from the bytes as they are
// sent (one read of the source, no pass before the first part goes up). On
// failure or cancellation nothing is left: the multipart upload is aborted
// and an object this upload completed is deleted.
func (u *uploader) put(ctx context.Context, o *object) (sum [sha256.Size]byte, err error) {
	if o.size > maxObject {
		return sum, cloudupload.Errorf(cloudupload.EINVALID, "the image is %s; S3 objects are at most 5 TiB", targets.MiB(o.size))
	}
	ps := u.partSizeFor(o.size)
	if o.size < ps {
		sum, err = u.single(ctx, o)
	} else {
		if o.want == nil && len(o.tags) >= maxTags {
			return sum, invalid("tags has %d entries: S3 allows %d per object and the SHA-256, not known before the upload (%s is not set), needs the tag %s", len(o.tags), maxTags, targets.ImageSHA256Env, tagSHA256)
		}
		sum, err = u.multipart(ctx, o, ps)
	}
	if err != nil {
		u.removeIfOurs(ctx, o)
		return sum, err
	}
	return sum, nil
}

// mismatch is the error for bytes that do not hash as the daemon said.
func mismatch(got, want []byte) error {
	return fmt.Errorf("read image: its SHA-256 is %x, not %x as %s says: the file changed after it was received", got, want, targets.ImageSHA256Env)
}

// single stores an object smaller than one part with one PutObject carrying
// its SHA-256, which S3 verifies, in the metadata and as a checksum.
func (u *uploader) single(ctx context.Context, o *object) (sum [sha256.Size]byte, err error) {
	done := u.log.Step("upload s3://%s/%s (%s, one request)", o.bucket, o.key, targets.MiB(o.size))
	buf, err := readAll(ctx, o)
	if err != nil {
		return sum, err
	}
	sum = sha256.Sum256(buf)
	if o.want != nil && !bytes.Equal(sum[:], o.want) {
		return sum, mismatch(sum[:], o.want)
	}
	in := &s3.PutObjectInput{
		Bucket: &o.bucket, Key: &o.key, Body: bytes.NewReader(buf), ContentLength: aws.Int64(o.size),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		Metadata:       map[string]string{metaSHA256: hex.EncodeToString(sum[:]), metaJob: o.owner},
	}
	o.apply(&in.ContentType, &in.StorageClass, &in.Tagging, &in.ACL)
	// One request below the part size: its progress is all or nothing.
	progress := u.log.Progress("upload", o.size)
	if _, err := u.api.PutObject(ctx, in, unsignedPayload); err != nil {
		return sum, s3Error(fmt.Sprintf("upload s3://%s/%s", o.bucket, o.key), err)
	}
	progress.Add(o.size)
	progress.Done()
	done()
	return sum, nil
}

// readAll reads a source smaller than one part completely.
func readAll(ctx context.Context, o *object) ([]byte, error) {
	buf := make([]byte, o.size+1)
	var r io.Reader
	if o.file != nil {
		r = io.NewSectionReader(o.file, 0, o.size+1)
	} else {
		rc, err := o.open(ctx)
		if err != nil {
			return nil, fmt.Errorf("open image: %w", err)
		}
		defer rc.Close()
		r = rc
	}
	n, err := io.ReadFull(r, buf)
	switch {
	case err != nil && err != io.ErrUnexpectedEOF && err != io.EOF:
		return nil, fmt.Errorf("read image: %w", err)
	case n != int(o.size):
		return nil, fmt.Errorf("read image: %d bytes, expected %d", n, o.size)
	}
	return buf[:n], nil
}

func (o *object) apply(ct **string, sc *types.StorageClass, tags **string, acl *types.ObjectCannedACL) {
	if o.contentType != "" {
		*ct = aws.String(o.contentType)
	}
	*sc = types.StorageClass(o.storageClass)
	if len(o.tags) > 0 {
		*tags = aws.String(tagging(o.tags))
	}
	if o.public {
		*acl = types.ObjectCannedACLPublicRead
	}
}

// part is one part to send: its index (PartNumber-1), its bytes in a pooled
// buffer when streaming (nil: a section of the file), and its CRC32C.
type part struct {
	n   int
	buf []byte
	crc uint32
}

// crc32c is how S3 headers carry a CRC32C: base64 of its 4 big-endian bytes.
func crc32c(c uint32) *string {
	return aws.String(base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, c)))
}

// multipart sends the object in parts, through three stages: the calling
// goroutine reads the parts in order (a streamed source into pooled
// buffers; a file's parts are only numbered), one goroutine hashes them in
// order (the object's SHA-256 and each part's CRC32C), and the workers send
// them, each with its CRC32C, which S3
// checks: so the bytes S3 stores are the bytes the SHA-256 was computed
// from, even when a file's parts are read a second time to be sent. The
// hashing stage checks the SHA-256 against o.want before the last part may
// go, so an upload of other bytes never completes.
func (u *uploader) multipart(ctx context.Context, o *object, ps int64) (sum [sha256.Size]byte, err error) {
	nparts := int((o.size + ps - 1) / ps)
	workers := u.workers()
	nbuf := 0
	if o.file == nil {
		// Streaming: one buffer being filled, one being hashed, the
		// others being sent.
		nbuf = min(workers+2, max(3, int(maxBuffers/ps)))
		workers = min(workers, nbuf-2)
	}
	done := u.log.Step("upload s3://%s/%s (%s in %d parts of %s, %d in parallel)", o.bucket, o.key, targets.MiB(o.size), nparts, targets.MiB(ps), workers)
	meta := map[string]string{metaJob: o.owner}
	if o.want != nil {
		meta[metaSHA256] = hex.EncodeToString(o.want)
	}
	in := &s3.CreateMultipartUploadInput{Bucket: &o.bucket, Key: &o.key, Metadata: meta,
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c, ChecksumType: types.ChecksumTypeFullObject}
	o.apply(&in.ContentType, &in.StorageClass, &in.Tagging, &in.ACL)
	created, err := u.api.CreateMultipartUpload(ctx, in)
	if err != nil {
		return sum, s3Error(fmt.Sprintf("start upload to s3://%s/%s", o.bucket, o.key), err)
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
	toHash := make(chan part, 1)
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
				if p.buf != nil {
					body = bytes.NewReader(p.buf)
				} else {
					body = io.NewSectionReader(o.file, off, size)
				}
				// The part's CRC32C goes in a signed header that S3
				// checks; the payload itself is not hashed for the
				// signature.
				out, err := u.uploadPart(ctx2, &s3.UploadPartInput{
					Bucket: &o.bucket, Key: &o.key, UploadId: id,
					PartNumber: aws.Int32(int32(p.n + 1)), Body: body, ContentLength: aws.Int64(size),
					ChecksumCRC32C: crc32c(p.crc),
				})
				if p.buf != nil {
					pool <- p.buf[:cap(p.buf)]
				}
				if err != nil {
					fail(s3Error(fmt.Sprintf("upload part %d of s3://%s/%s", p.n+1, o.bucket, o.key), err))
					continue // drain work so the hashing stage never blocks
				}
				parts[p.n] = types.CompletedPart{PartNumber: aws.Int32(int32(p.n + 1)), ETag: out.ETag, ChecksumCRC32C: crc32c(p.crc)}
				progress.Add(size)
			}
		}()
	}

	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		defer close(work)
		sum = u.hash(ctx2, o, ps, nparts, toHash, work, pool, fail)
	}()

	if err := u.read(ctx2, o, ps, nparts, pool, toHash); err != nil {
		fail(err)
	}
	close(toHash)
	<-hashed
	wg.Wait()
	if err := context.Cause(ctx2); err != nil {
		if ctx.Err() != nil {
			return sum, fmt.Errorf("upload s3://%s/%s: %w", o.bucket, o.key, ctx.Err())
		}
		return sum, err
	}
	progress.Done()

	// S3 joins the parts into the object now: on some servers (versitygw
	// copies every byte) this is a step of its own that people should see.
	completing := time.Now()
	_, err = u.api.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &o.bucket, Key: &o.key, UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		ChecksumType:    types.ChecksumTypeFullObject, MpuObjectSize: aws.Int64(o.size),
	})
	if err != nil {
		return sum, s3Error(fmt.Sprintf("complete upload to s3://%s/%s", o.bucket, o.key), err)
	}
	u.log.Printf("the server joined the %d parts in %s", nparts, targets.Round(time.Since(completing)))
	done()
	if o.want == nil {
		if err := u.tagDigest(ctx, o, sum); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// read hands the parts to the hashing stage in order: a streamed source is
// read into pooled buffers (and must end where its size says); a file's
// parts are read by the later stages in place.
func (u *uploader) read(ctx context.Context, o *object, ps int64, nparts int, pool chan []byte, toHash chan<- part) error {
	if o.file != nil {
		for n := 0; n < nparts; n++ {
			select {
			case toHash <- part{n: n}:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	}
	rc, err := o.open(ctx)
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	defer rc.Close()
	for n := 0; n < nparts; n++ {
		var buf []byte
		select {
		case buf = <-pool:
		case <-ctx.Done():
			return nil
		}
		buf = buf[:min(ps, o.size-int64(n)*ps)]
		if _, err := io.ReadFull(rc, buf); err != nil {
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				err = fmt.Errorf("the disk ends before %s", targets.MiB(o.size))
			}
			return fmt.Errorf("read image: %w", err)
		}
		if n == nparts-1 {
			var one [1]byte
			if m, err := io.ReadFull(rc, one[:]); m != 0 {
				return fmt.Errorf("read image: the disk is longer than %s", targets.MiB(o.size))
			} else if err != io.EOF {
				return fmt.Errorf("read image: %w", err)
			}
		}
		select {
		case toHash <- part{n: n, buf: buf}:
		case <-ctx.Done():
			pool <- buf[:cap(buf)]
			return nil
		}
	}
	return nil
}

// hash is the hashing stage: it computes each part's CRC32C and, in order,
// the object's SHA-256, and passes the parts on to the workers.
// The last part is passed on only when the SHA-256 matches o.want.
func (u *uploader) hash(ctx context.Context, o *object, ps int64, nparts int, toHash <-chan part, work chan<- part, pool chan<- []byte, fail func(error)) (sum [sha256.Size]byte) {
	h := sha256.New()
	var buf []byte
	for p := range toHash {
		if ctx.Err() != nil {
			if p.buf != nil {
				pool <- p.buf[:cap(p.buf)] // drain, so the reading stage never blocks
			}
			continue
		}
		data := p.buf
		if data == nil {
			// A file's part, read in hashBuffer chunks.
			if buf == nil {
				buf = make([]byte, hashBuffer)
			}
			off := int64(p.n) * ps
			size := min(ps, o.size-off)
			sec := io.NewSectionReader(o.file, off, size)
			for read := int64(0); ; {
				m, err := io.ReadFull(sec, buf)
				read += int64(m)
				h.Write(buf[:m])
				p.crc = crc32.Update(p.crc, castagnoli, buf[:m])
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					if read != size {
						fail(fmt.Errorf("read image: the file is shorter than %s", targets.MiB(o.size)))
					}
					break
				}
				if err != nil {
					fail(fmt.Errorf("read image: %w", err))
					break
				}
			}
			if ctx.Err() != nil {
				continue
			}
		} else {
			h.Write(data)
			p.crc = crc32.Checksum(data, castagnoli)
		}
		if p.n == nparts-1 {
			h.Sum(sum[:0])
			if o.want != nil && !bytes.Equal(sum[:], o.want) {
				fail(mismatch(sum[:], o.want))
				if p.buf != nil {
					pool <- p.buf[:cap(p.buf)]
				}
				continue
			}
		}
		select {
		case work <- p:
		case <-ctx.Done():
			if p.buf != nil {
				pool <- p.buf[:cap(p.buf)]
			}
		}
	}
	return sum
}

// tagDigest stores a SHA-256 learnt during the upload as the object's tag
// sha256, beside the user's tags: S3 takes metadata only when an upload
// starts, and changing it later means copying the whole object.
func (u *uploader) tagDigest(ctx context.Context, o *object, sum [sha256.Size]byte) error {
	set := []types.Tag{{Key: aws.String(tagSHA256), Value: aws.String(hex.EncodeToString(sum[:]))}}
	for k, v := range o.tags {
		set = append(set, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	_, err := u.api.PutObjectTagging(ctx, &s3.PutObjectTaggingInput{Bucket: &o.bucket, Key: &o.key, Tagging: &types.Tagging{TagSet: set}})
	if err != nil {
		return s3Error(fmt.Sprintf("tag s3://%s/%s with its SHA-256", o.bucket, o.key), err)
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
