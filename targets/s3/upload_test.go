package s3

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

const testPart = 5 << 20 // S3's smallest part size, so multipart tests stay small

// testData is size bytes of incompressible data.
func testData(size int, seed uint64) []byte {
	var key [32]byte
	key[0] = byte(seed)
	b := make([]byte, size)
	rand.NewChaCha8(key).Read(b)
	return b
}

// writeImage writes data as name in a temporary directory (gzip-compressed
// when name ends in .gz) and opens it as the uploader does.
func writeImage(t *testing.T, name string, data []byte) targets.Image {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	var content []byte
	if strings.HasSuffix(name, ".gz") {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.NoCompression)
		zw.Write(data)
		zw.Close()
		content = b.Bytes()
	} else {
		content = data
	}
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := image.Open(path, name)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func testJob(filename string) targets.Job {
	return targets.Job{ID: "7", User: "alice", Project: "home:alice", Repository: "images", Arch: "x86_64", Package: "appliance", Filename: filename}
}

func testPlan(t *testing.T, job targets.Job, bucket string, extra string, now time.Time) *plan {
	t.Helper()
	data := fmt.Sprintf(`{"arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1","bucket":%q%s}`, bucket, extra)
	p, err := makePlan(job, []byte(data), now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// logBuffer collects a target's log for assertions and failure messages.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newPublisher(t *testing.T, api client) (*publisher, *logBuffer) {
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("target log:\n%s", lb)
		}
	})
	return &publisher{api: api, log: targets.NewLog(lb), partSize: testPart, parallel: 3}, lb
}

// stored reads an object back: its bytes and metadata.
func (s *server) stored(t *testing.T, bucket, key string) ([]byte, map[string]string) {
	t.Helper()
	out, err := s.api.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, out.Metadata
}

// checkStored asserts the object holds want and carries the SHA-256 of the
// bytes S3 returns: in the metadata when it was known as the upload started
// (where is "metadata"), else as the tag sha256 (where is "tag").
func (s *server) checkStored(t *testing.T, bucket, key string, want []byte) (where string) {
	t.Helper()
	got, meta := s.stored(t, bucket, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("s3://%s/%s holds %d bytes that differ from the %d uploaded", bucket, key, len(got), len(want))
	}
	h := sha256.Sum256(got)
	sum := hex.EncodeToString(h[:])
	if m, ok := meta[metaSHA256]; ok {
		if m != sum {
			t.Fatalf("x-amz-meta-sha256 = %q, want %s", m, sum)
		}
		return "metadata"
	}
	out, err := s.api.GetObjectTagging(context.Background(), &s3.GetObjectTaggingInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range out.TagSet {
		if *tag.Key == tagSHA256 {
			if *tag.Value != sum {
				t.Fatalf("tag sha256 = %q, want %s", *tag.Value, sum)
			}
			return "tag"
		}
	}
	t.Fatalf("s3://%s/%s has its SHA-256 neither in its metadata %v nor in its tags", bucket, key, meta)
	return ""
}

func (s *server) checkEmpty(t *testing.T, bucket string) {
	t.Helper()
	objects, uploads := s.leftovers(t, bucket)
	if len(objects)+len(uploads) > 0 {
		t.Fatalf("left behind: objects %q, unfinished multipart uploads %q", objects, uploads)
	}
}

// TestServers runs the upload against real S3 servers on loopback:
// versitygw (checks signatures and checksums) and moto.
func TestServers(t *testing.T) {
	for _, s := range []*server{versity(t), moto(t)} {
		t.Run(s.name, func(t *testing.T) { testServer(t, s) })
	}
}

func testServer(t *testing.T, s *server) {
	ctx := context.Background()
	now := time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC)

	cases := []struct {
		name, file, extra string
		size              int
		want              string // key
		digest            bool   // the daemon hands the SHA-256
	}{
		{"single", "appliance.x86_64.raw", "", 300 << 10, "home:alice/images/x86_64/appliance/appliance.x86_64.raw", false},
		{"multipart", "appliance.x86_64.raw", "", 3*testPart + 12345, "home:alice/images/x86_64/appliance/appliance.x86_64.raw", false},
		{"multipart-digest", "appliance.x86_64.raw", "", 3*testPart + 12345, "home:alice/images/x86_64/appliance/appliance.x86_64.raw", true},
		{"empty", "empty.raw", `,"prefix":"e/"`, 0, "e/empty.raw", false},
		{"decompress-multipart", "appliance.x86_64.raw.gz", `,"decompress":true,"prefix":"{package}/{date}/{filename}","tags":{"release":"16.0"}`, 2*testPart + 512, "appliance/20261121T070000Z/appliance.x86_64.raw", true},
		{"decompress-single", "appliance.x86_64.raw.gz", `,"decompress":true,"public":true`, 64 << 10, "home:alice/images/x86_64/appliance/appliance.x86_64.raw", false},
		{"as-received", "appliance.x86_64.raw.gz", `,"storage_class":"STANDARD","tags":{"release":"16.0","team":"build ops"}`, 2*testPart + 512, "home:alice/images/x86_64/appliance/appliance.x86_64.raw.gz", false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bucket := s.bucket(t)
			data := testData(c.size, uint64(i))
			img := writeImage(t, c.file, data)
			p := testPlan(t, testJob(c.file), bucket, c.extra, now)
			pub, _ := newPublisher(t, s.api)
			if c.digest {
				// As the daemon does: the SHA-256 of the file as
				// received (which decompress does not use).
				b, _ := os.ReadFile(img.Path())
				sum := sha256.Sum256(b)
				pub.digest = sum[:]
			}
			got, err := pub.publish(ctx, img, testJob(c.file), p, now)
			if err != nil {
				t.Fatal(err)
			}
			if want := "s3://" + bucket + "/" + c.want; got != want {
				t.Fatalf("result %q, want %q", got, want)
			}
			want := data
			if !p.cfg.Decompress {
				want, _ = os.ReadFile(img.Path())
			}
			where := s.checkStored(t, bucket, c.want, want)
			if multi := len(want) >= testPart; where != "metadata" && (!multi || c.digest && !p.cfg.Decompress) {
				t.Fatalf("SHA-256 stored as %s, want metadata (known when the upload started)", where)
			} else if where != "tag" && multi && (!c.digest || p.cfg.Decompress) {
				t.Fatalf("SHA-256 stored as %s, want the tag (learnt during the upload)", where)
			}
			if multi := len(want) >= testPart; multi && s.name == "versitygw" {
				// The full-object CRC32C S3 combined from the parts'.
				head, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &c.want, ChecksumMode: types.ChecksumModeEnabled})
				if err != nil {
					t.Fatal(err)
				}
				if aws.ToString(head.ChecksumCRC32C) != b64crc(want) || head.ChecksumType != types.ChecksumTypeFullObject {
					t.Fatalf("object checksum CRC32C %v type %q, want %s FULL_OBJECT", aws.ToString(head.ChecksumCRC32C), head.ChecksumType, b64crc(want))
				}
			}
			if len(p.cfg.Tags) > 0 {
				out, err := s.api.GetObjectTagging(ctx, &s3.GetObjectTaggingInput{Bucket: &bucket, Key: &c.want})
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]string{}
				for _, tag := range out.TagSet {
					if *tag.Key != tagSHA256 {
						got[*tag.Key] = *tag.Value
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(p.cfg.Tags) {
					t.Fatalf("object tags %v, want %v", got, p.cfg.Tags)
				}
			}
			if p.cfg.Public && s.name == "moto" { // versitygw has no object ACLs
				out, err := s.api.GetObjectAcl(ctx, &s3.GetObjectAclInput{Bucket: &bucket, Key: &c.want})
				if err != nil {
					t.Fatal(err)
				}
				public := false
				for _, g := range out.Grants {
					public = public || g.Grantee != nil && aws.ToString(g.Grantee.URI) == "http://acs.amazonaws.com/groups/global/AllUsers" && g.Permission == "READ"
				}
				if !public {
					t.Fatalf("public object has no public-read grant: %+v", out.Grants)
				}
			}
			objects, uploads := s.leftovers(t, bucket)
			if len(objects) != 1 || len(uploads) != 0 {
				t.Fatalf("bucket holds %q and uploads %q, want the object only", objects, uploads)
			}
		})
	}

	t.Run("kill", func(t *testing.T) {
		for _, file := range []string{"disk.raw", "disk.raw.gz"} {
			bucket := s.bucket(t)
			img := writeImage(t, file, testData(4*testPart, 9))
			ctx, cancel := context.WithCancel(context.Background())
			api := &hooked{client: s.api, afterPart: func(n int32) {
				if n == 1 {
					cancel()
				}
			}}
			pub, lb := newPublisher(t, api)
			p := testPlan(t, testJob(file), bucket, `,"decompress":true`, now)
			_, err := pub.publish(ctx, img, testJob(file), p, now)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: killed upload returned %v, want context.Canceled", file, err)
			}
			s.checkEmpty(t, bucket)
			if !strings.Contains(lb.String(), "aborted the multipart upload") {
				t.Fatalf("the log does not say the upload was aborted:\n%s", lb)
			}
		}
	})

	t.Run("failed-part", func(t *testing.T) {
		bucket := s.bucket(t)
		img := writeImage(t, "disk.raw", testData(4*testPart, 10))
		api := &hooked{client: s.api, failPart: 3}
		pub, _ := newPublisher(t, api)
		_, err := pub.publish(ctx, img, testJob("disk.raw"), testPlan(t, testJob("disk.raw"), bucket, "", now), now)
		if err == nil || !strings.Contains(err.Error(), "upload part 3") {
			t.Fatalf("got %v, want the failure of part 3", err)
		}
		s.checkEmpty(t, bucket)
	})

	// moto stores part checksums without checking them.
	verifies := s.name == "versitygw"
	t.Run("corrupt-part", func(t *testing.T) {
		if !verifies {
			return
		}
		// A part whose bytes do not match its CRC32C is refused by
		// the server (the checksum is checked, not only stored), and
		// the upload leaves nothing.
		bucket := s.bucket(t)
		img := writeImage(t, "disk.raw", testData(3*testPart, 13))
		pub, _ := newPublisher(t, &hooked{client: s.api, corruptPart: 2})
		_, err := pub.publish(ctx, img, testJob("disk.raw"), testPlan(t, testJob("disk.raw"), bucket, "", now), now)
		if err == nil || !strings.Contains(err.Error(), "upload part 2") {
			t.Fatalf("got %v, want part 2 refused for its checksum", err)
		}
		s.checkEmpty(t, bucket)
	})

	t.Run("lost-completion", func(t *testing.T) {
		// S3 completed the object but its answer never arrived: the
		// object is ours (metadata) and is removed.
		bucket := s.bucket(t)
		img := writeImage(t, "disk.raw", testData(2*testPart, 11))
		api := &hooked{client: s.api, loseCompletion: true}
		pub, _ := newPublisher(t, api)
		_, err := pub.publish(ctx, img, testJob("disk.raw"), testPlan(t, testJob("disk.raw"), bucket, "", now), now)
		if err == nil {
			t.Fatal("a lost completion succeeded")
		}
		s.checkEmpty(t, bucket)
	})

	t.Run("changed-file", func(t *testing.T) {
		// The file changed after the daemon hashed it: the upload
		// fails before completing and leaves nothing.
		for _, size := range []int{64 << 10, 3 * testPart} {
			bucket := s.bucket(t)
			data := testData(size, 12)
			sum := sha256.Sum256(data)
			data[size-1] ^= 1
			img := writeImage(t, "disk.raw", data)
			pub, _ := newPublisher(t, s.api)
			pub.digest = sum[:]
			_, err := pub.publish(ctx, img, testJob("disk.raw"), testPlan(t, testJob("disk.raw"), bucket, "", now), now)
			if err == nil || !strings.Contains(err.Error(), "changed after it was received") {
				t.Fatalf("size %d: got %v, want a refusal of a file that changed", size, err)
			}
			s.checkEmpty(t, bucket)
		}
	})

	t.Run("latest", func(t *testing.T) { testLatest(t, s) })
}

// hooked wraps a real client to observe or break single requests.
type hooked struct {
	client
	afterPart      func(part int32)
	failPart       int32
	corruptPart    int32 // sent with the CRC32C of other bytes
	loseCompletion bool
	failPointer    bool
}

func (h *hooked) UploadPart(ctx context.Context, in *s3.UploadPartInput, opt ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	if *in.PartNumber == h.failPart {
		return nil, errors.New("injected failure")
	}
	if *in.PartNumber == h.corruptPart {
		c := *in
		c.ChecksumCRC32C = crc32c(crc32.Checksum([]byte("other bytes"), castagnoli))
		in = &c
	}
	out, err := h.client.UploadPart(ctx, in, opt...)
	if h.afterPart != nil {
		h.afterPart(*in.PartNumber)
	}
	return out, err
}

func (h *hooked) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opt ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	out, err := h.client.CompleteMultipartUpload(ctx, in, opt...)
	if err == nil && h.loseCompletion {
		return nil, errors.New("injected: connection reset")
	}
	return out, err
}

func (h *hooked) PutObject(ctx context.Context, in *s3.PutObjectInput, opt ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if h.failPointer && strings.HasSuffix(*in.Key, "/latest") {
		return nil, errors.New("injected: access denied")
	}
	return h.client.PutObject(ctx, in, opt...)
}

func testLatest(t *testing.T, s *server) {
	ctx := context.Background()
	bucket := s.bucket(t)
	base := time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC)
	const extra = `,"latest":true,"prefix":"{project}/{package}/{job}/{filename}"`
	pointerKey := "home:alice/appliance/latest"
	publishAt := func(id string, minutes int) string {
		job := testJob("appliance-" + id + ".raw")
		job.ID = id
		at := base.Add(time.Duration(minutes) * time.Minute)
		p := testPlan(t, job, bucket, extra, at)
		if p.latest != pointerKey {
			t.Fatalf("pointer key %q, want %q", p.latest, pointerKey)
		}
		pub, _ := newPublisher(t, s.api)
		if _, err := pub.publish(ctx, writeImage(t, job.Filename, []byte(id)), job, p, at); err != nil {
			t.Fatal(err)
		}
		return p.key
	}
	names := func() string {
		b, meta := s.stored(t, bucket, pointerKey)
		if meta[metaOrder] == "" {
			t.Fatalf("pointer has no %s metadata", metaOrder)
		}
		return strings.TrimSuffix(string(b), "\n")
	}

	k10 := publishAt("10", 10)
	if got := names(); got != k10 {
		t.Fatalf("latest names %q, want %q", got, k10)
	}
	k30 := publishAt("30", 30)
	if got := names(); got != k30 {
		t.Fatalf("latest names %q, want %q", got, k30)
	}
	publishAt("20", 20) // started before 30: finishes later, must not move it back
	if got := names(); got != k30 {
		t.Fatalf("latest moved back to %q, want %q", got, k30)
	}
	head, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &pointerKey})
	if err != nil {
		t.Fatal(err)
	}
	if head.WebsiteRedirectLocation == nil || *head.WebsiteRedirectLocation != "/"+k30 {
		t.Fatalf("website redirect %v, want /%s", head.WebsiteRedirectLocation, k30)
	}

	t.Run("concurrent", func(t *testing.T) {
		// Many jobs race; whatever the order of their writes, the
		// pointer ends at the one that started last.
		key := "race/latest"
		var wg sync.WaitGroup
		lb := &logBuffer{}
		log := targets.NewLog(lb)
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				at := base.Add(time.Duration((i*7)%16) * time.Second)
				_, err := movePointer(ctx, s.api, log, pointer{bucket: bucket, key: key, target: fmt.Sprintf("race/%02d", (i*7)%16), started: at, job: fmt.Sprint(i)})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		b, _ := s.stored(t, bucket, key)
		if got := strings.TrimSpace(string(b)); got != "race/15" {
			t.Fatalf("after the race latest names %q, want race/15\n%s", got, lb)
		}
	})

	t.Run("pointer-failure", func(t *testing.T) {
		// A pointer that cannot be written fails the job and removes
		// the object it stored.
		bucket := s.bucket(t)
		job := testJob("x.raw")
		p := testPlan(t, job, bucket, extra, base)
		pub, _ := newPublisher(t, &hooked{client: s.api, failPointer: true})
		if _, err := pub.publish(ctx, writeImage(t, "x.raw", []byte("x")), job, p, base); err == nil {
			t.Fatal("publish succeeded without its pointer")
		}
		s.checkEmpty(t, bucket)
	})
}
