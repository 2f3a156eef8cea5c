package s3

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
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
	r.sums[*in.PartNumber] = aws.ToString(in.ChecksumSHA256)
	return &s3.UploadPartOutput{ETag: aws.String(fmt.Sprintf(`"etag-%d"`, *in.PartNumber))}, nil
}

func (r *recorder) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.complete = in
	return &s3.CompleteMultipartUploadOutput{}, nil
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

// TestMultipartRequests checks what a multipart upload sends: the object's
// settings and SHA-256 at creation, every part's SHA-256, the parts in
// order at completion, at most `parallel` parts in flight.
func TestMultipartRequests(t *testing.T) {
	data := testData(7*fakePart+100, 3)
	for _, mode := range []string{"file", "stream", "stream-size-unknown"} {
		t.Run(mode, func(t *testing.T) {
			r := newRecorder()
			r.delay = 5 * time.Millisecond
			o := fakeObject(t, data, mode != "file")
			if mode == "stream-size-unknown" {
				o.size = -1
			}
			o.storageClass, o.tagging, o.public = "STANDARD_IA", "a=b", true
			u := &uploader{api: r, log: targets.NewLog(io.Discard), parallel: 3, partSize: fakePart}
			sum, err := u.put(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if sum != sha256.Sum256(data) {
				t.Fatal("put returned the wrong SHA-256")
			}
			c := r.create
			if c.Metadata[metaSHA256] != fmt.Sprintf("%x", sum) || c.StorageClass != "STANDARD_IA" || aws.ToString(c.Tagging) != "a=b" || c.ACL != types.ObjectCannedACLPublicRead {
				t.Fatalf("CreateMultipartUpload sent metadata %v, class %q, tagging %v, ACL %q", c.Metadata, c.StorageClass, c.Tagging, c.ACL)
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
				want := b64sum(r.parts[n])
				if r.sums[n] != want || aws.ToString(p.ChecksumSHA256) != want {
					t.Fatalf("part %d: sent checksum %q, completed with %q, want %q", n, r.sums[n], aws.ToString(p.ChecksumSHA256), want)
				}
				joined = append(joined, r.parts[n]...)
			}
			if string(joined) != string(data) {
				t.Fatal("the parts do not join into the file")
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
		if string(r.parts[2]) != string(data[fakePart:2*fakePart]) || r.sums[2] != b64sum(r.parts[2]) {
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
