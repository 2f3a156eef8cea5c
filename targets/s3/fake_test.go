package s3

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cloudupload/cloudupload/internal/testutil"
	"github.com/cloudupload/cloudupload/targets"
)

// recorder is a fake S3 that records what the uploader sent.
type recorder struct {
	mu       sync.Mutex
	create   *s3.CreateMultipartUploadInput
	put      *s3.PutObjectInput
	parts    map[int32][]byte
	sums     map[int32]string
	complete *s3.CompleteMultipartUploadInput
	tagging  *s3.PutObjectTaggingInput
	aborts   int
	inFlight int
	peak     int
	abortAt  int // parts in flight when Abort came
	failPart int32
	delay    time.Duration
	stall    map[int32]int // tries of a part that hang until cancelled
	revives  int           // times the upload comes back after an abort (a late part)
}

func newRecorder() *recorder {
	return &recorder{parts: map[int32][]byte{}, sums: map[int32]string{}}
}

func (r *recorder) PutObject(ctx context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	b, _ := io.ReadAll(in.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.put = in
	r.parts[0] = b
	return &s3.PutObjectOutput{}, nil
}

func (r *recorder) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.create = in
	return &s3.CreateMultipartUploadOutput{UploadId: aws.String("up-1")}, nil
}

func (r *recorder) UploadPart(ctx context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	r.mu.Lock()
	r.inFlight++
	r.peak = max(r.peak, r.inFlight)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
	}()
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	stall := r.stall[*in.PartNumber] > 0
	if stall {
		r.stall[*in.PartNumber]--
	}
	r.mu.Unlock()
	if stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if int64(len(b)) != *in.ContentLength {
		return nil, fmt.Errorf("part %d: %d bytes, ContentLength %d", *in.PartNumber, len(b), *in.ContentLength)
	}
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if *in.PartNumber == r.failPart {
		return nil, errors.New("injected")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.parts[*in.PartNumber] = b
	r.sums[*in.PartNumber] = aws.ToString(in.ChecksumCRC32C)
	return &s3.UploadPartOutput{ETag: aws.String(fmt.Sprintf(`"etag-%d"`, *in.PartNumber))}, nil
}

func (r *recorder) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.complete = in
	return &s3.CompleteMultipartUploadOutput{}, nil
}

func (r *recorder) PutObjectTagging(ctx context.Context, in *s3.PutObjectTaggingInput, _ ...func(*s3.Options)) (*s3.PutObjectTaggingOutput, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tagging = in
	return &s3.PutObjectTaggingOutput{}, nil
}

func (r *recorder) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, _ ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.aborts++
	r.abortAt = r.inFlight
	return &s3.AbortMultipartUploadOutput{}, nil
}

// ListParts answers as S3 after an abort: 404 NoSuchUpload, unless a late
// part revives the upload (revives times).
func (r *recorder) ListParts(ctx context.Context, in *s3.ListPartsInput, _ ...func(*s3.Options)) (*s3.ListPartsOutput, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.revives > 0 {
		r.revives--
		return &s3.ListPartsOutput{}, nil
	}
	return nil, &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 404}},
		Err:      errors.New("NoSuchUpload"),
	}}
}

func (r *recorder) HeadObject(ctx context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	return nil, errors.New("not found")
}

func (r *recorder) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	return &s3.DeleteObjectOutput{}, nil
}

func b64sum(b []byte) string {
	s := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

func b64crc(b []byte) string {
	return *crc32c(crc32.Checksum(b, castagnoli))
}

// TestMultipartRequests checks what a multipart upload sends: the object's
// settings at creation, with the daemon's SHA-256 in the metadata when it
// gave one, CRC32C full-object checksums, every part's CRC32C, the parts in
// order at completion with the object's size, at most `parallel` parts in
// flight, and, without the daemon's SHA-256, the tag sha256 after
// completion beside the user's tags.
func TestMultipartRequests(t *testing.T) {
	data := testData(7*fakePart+100, 3)
	sum := sha256.Sum256(data)
	for _, mode := range []string{"file", "file-digest", "stream"} {
		t.Run(mode, func(t *testing.T) {
			r := newRecorder()
			r.delay = 5 * time.Millisecond
			o := fakeObject(t, data, mode == "stream")
			if mode == "file-digest" {
				o.want = sum[:]
			}
			o.storageClass, o.tags, o.public = "STANDARD_IA", map[string]string{"a": "b"}, true
			u := &uploader{api: r, log: targets.NewLog(io.Discard), parallel: 3, partSize: fakePart}
			got, err := u.put(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if got != sum {
				t.Fatal("put returned the wrong SHA-256")
			}
			c := r.create
			if c.StorageClass != "STANDARD_IA" || aws.ToString(c.Tagging) != "a=b" || c.ACL != types.ObjectCannedACLPublicRead ||
				c.ChecksumAlgorithm != types.ChecksumAlgorithmCrc32c || c.ChecksumType != types.ChecksumTypeFullObject {
				t.Fatalf("CreateMultipartUpload sent class %q, tagging %v, ACL %q, checksum %q %q", c.StorageClass, c.Tagging, c.ACL, c.ChecksumAlgorithm, c.ChecksumType)
			}
			tags := map[string]string{}
			if r.tagging != nil {
				for _, tag := range r.tagging.Tagging.TagSet {
					tags[*tag.Key] = *tag.Value
				}
			}
			if o.want != nil {
				if c.Metadata[metaSHA256] != fmt.Sprintf("%x", sum) || r.tagging != nil {
					t.Fatalf("with the daemon's digest: metadata %v, tagging %v; want the SHA-256 in the metadata, no tagging", c.Metadata, tags)
				}
			} else if _, ok := c.Metadata[metaSHA256]; ok || fmt.Sprint(tags) != fmt.Sprintf("map[a:b sha256:%x]", sum) {
				t.Fatalf("without the daemon's digest: metadata %v, tags after completion %v; want the SHA-256 as a tag", c.Metadata, tags)
			}
			if len(r.parts) != 8 || r.peak > 3 {
				t.Fatalf("%d parts, %d in flight at most; want 8 and ≤ 3", len(r.parts), r.peak)
			}
			var joined []byte
			for i, p := range r.complete.MultipartUpload.Parts {
				n := int32(i + 1)
				if *p.PartNumber != n || aws.ToString(p.ETag) != fmt.Sprintf(`"etag-%d"`, n) {
					t.Fatalf("completion lists part %d as %d %v", n, *p.PartNumber, p.ETag)
				}
				want := b64crc(r.parts[n])
				if r.sums[n] != want || aws.ToString(p.ChecksumCRC32C) != want {
					t.Fatalf("part %d: sent checksum %q, completed with %q, want %q", n, r.sums[n], aws.ToString(p.ChecksumCRC32C), want)
				}
				joined = append(joined, r.parts[n]...)
			}
			if string(joined) != string(data) {
				t.Fatal("the parts do not join into the file")
			}
			if cc := r.complete; cc.ChecksumType != types.ChecksumTypeFullObject || aws.ToInt64(cc.MpuObjectSize) != int64(len(data)) {
				t.Fatalf("completion sent checksum type %q size %v, want FULL_OBJECT %d", cc.ChecksumType, cc.MpuObjectSize, len(data))
			}
		})
	}
}

func TestSinglePutRequest(t *testing.T) {
	data := testData(1000, 4)
	r := newRecorder()
	u := &uploader{api: r, log: targets.NewLog(io.Discard)}
	if _, err := u.put(context.Background(), fakeObject(t, data, false)); err != nil {
		t.Fatal(err)
	}
	if r.create != nil || aws.ToString(r.put.ChecksumSHA256) != b64sum(data) || r.put.Metadata[metaSHA256] != fmt.Sprintf("%x", sha256.Sum256(data)) {
		t.Fatalf("PutObject sent checksum %v metadata %v", r.put.ChecksumSHA256, r.put.Metadata)
	}
}

// TestDigestMismatch: bytes that do not hash as the daemon said fail the
// upload before the last part is sent, and the upload is aborted; a small
// object is not sent at all.
func TestDigestMismatch(t *testing.T) {
	wrong := sha256.Sum256([]byte("other bytes"))
	for _, size := range []int{1000, 6 * fakePart} {
		r := newRecorder()
		u := &uploader{api: r, log: targets.NewLog(io.Discard), parallel: 2, partSize: fakePart}
		o := fakeObject(t, testData(size, 7), false)
		o.want = wrong[:]
		_, err := u.put(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), targets.ImageSHA256Env) {
			t.Fatalf("size %d: got %v, want a refusal naming %s", size, err, targets.ImageSHA256Env)
		}
		r.mu.Lock()
		if r.put != nil || r.complete != nil || r.parts[6] != nil || size > fakePart && r.aborts != 1 {
			t.Fatalf("size %d: PutObject %v, completed %v, last part sent %v, %d aborts", size, r.put != nil, r.complete != nil, r.parts[6] != nil, r.aborts)
		}
		r.mu.Unlock()
	}
}

// TestAbortAfterParts: a failed part aborts the upload once, after every
// part request has returned (S3 may keep parts that finish after an abort).
func TestAbortAfterParts(t *testing.T) {
	for _, stream := range []bool{false, true} {
		r := newRecorder()
		r.delay, r.failPart = 20*time.Millisecond, 2
		u := &uploader{api: r, log: targets.NewLog(io.Discard), parallel: 4, partSize: fakePart}
		_, err := u.put(context.Background(), fakeObject(t, testData(8*fakePart, 5), stream))
		if err == nil {
			t.Fatal("a failed part did not fail the upload")
		}
		if r.complete != nil || r.aborts != 1 || r.abortAt != 0 {
			t.Fatalf("stream=%v: completed %v, %d aborts with %d parts in flight; want 1 abort, none in flight", stream, r.complete != nil, r.aborts, r.abortAt)
		}
	}
}

// TestAbortUntilGone: a late part that brings the upload back after the
// abort (S3 documents it may) gets the upload aborted again, until S3 no
// longer knows it.
func TestAbortUntilGone(t *testing.T) {
	r := newRecorder()
	r.failPart, r.revives = 2, 2
	var log testutil.SyncBuffer
	u := &uploader{api: r, log: targets.NewLog(&log), parallel: 4, partSize: fakePart}
	if _, err := u.put(context.Background(), fakeObject(t, testData(4*fakePart, 6), false)); err == nil {
		t.Fatal("a failed part did not fail the upload")
	}
	if r.aborts != 3 || !strings.Contains(log.String(), "no parts are left") {
		t.Fatalf("%d aborts, want 3; log:\n%s", r.aborts, log.String())
	}
}

func fakeObject(t *testing.T, data []byte, stream bool) *object {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	o := &object{bucket: "b", key: "k", size: int64(len(data)), owner: "1 now"}
	if stream {
		o.open = func(context.Context) (io.ReadCloser, error) { return os.Open(path) }
	} else {
		o.file = f
	}
	return o
}

// TestStalledPart: a part request that hangs is given up and sent again
// (from the start of its bytes); one that hangs every time fails the upload.
func TestStalledPart(t *testing.T) {
	data := testData(3*fakePart, 6)
	for _, stream := range []bool{false, true} {
		r := newRecorder()
		r.stall = map[int32]int{2: 2}
		u := &uploader{api: r, log: targets.NewLog(io.Discard), parallel: 2, partSize: fakePart, stall: 100 * time.Millisecond}
		if _, err := u.put(context.Background(), fakeObject(t, data, stream)); err != nil {
			t.Fatalf("stream=%v: %v", stream, err)
		}
		if string(r.parts[2]) != string(data[fakePart:2*fakePart]) || r.sums[2] != b64crc(r.parts[2]) {
			t.Fatalf("stream=%v: part 2 sent again with other bytes", stream)
		}
		r = newRecorder()
		r.stall = map[int32]int{1: stallTries}
		u.api = r
		_, err := u.put(context.Background(), fakeObject(t, data, stream))
		if !errors.Is(err, context.DeadlineExceeded) || r.aborts != 1 {
			t.Fatalf("stream=%v: a part stalling %d times gave %v and %d aborts", stream, stallTries, err, r.aborts)
		}
	}
}

// fakePart is the part size with fakes, which, unlike S3, take small parts.
const fakePart = 64 << 10
