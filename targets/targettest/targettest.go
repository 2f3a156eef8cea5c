// Package targettest is the conformance suite every target runs from its
// tests, in a few lines of wiring:
//
//	func TestConformance(t *testing.T) {
//		targettest.Run(t, targettest.Harness{
//			New:       func(t *testing.T) targets.Target { return mirror.New() },
//			ValidData: func(t *testing.T) []byte { return []byte(`{"tree":"…"}`) },
//			Invalid:   []targettest.InvalidCase{{Data: []byte(`{}`), Field: "tree"}},
//			Verify:    func(t *testing.T, result string, want []byte) { … },
//			Leftovers: func(t *testing.T) []string { … },
//		})
//	}
//
// Run checks the contract of targets.Target: Check accepts valid data and
// rejects each invalid case with an EINVALID error naming the field; Upload
// rejects invalid data before touching the image; a raw image with holes and
// its .raw.xz publish and Verify passes; an upload cancelled while it reads
// the image returns an error wrapping context.Canceled; an upload whose
// image fails to read fails; after each of these nothing unfinished is left
// at the destination (Leftovers), every disk stream the target opened is
// closed, and no secret appears in the log, result or error. A successful
// upload reports its transfer in the progress file (targets.Log.Progress)
// and ends it with all of it done.
package targettest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	cloudupload "github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// Harness wires a target into the suite.
type Harness struct {
	// New returns the target under test (called once per subtest).
	New func(t *testing.T) targets.Target
	// Job is the job uploads run as; its Filename is set by the suite.
	// Empty fields get defaults (ID "42", user "tester", arch x86_64, …).
	Job targets.Job
	// ValidData returns valid target data. It is called once per subtest:
	// targets whose results must be unique (an AMI name) derive them from
	// t.Name().
	ValidData func(t *testing.T) []byte
	// Invalid lists target data Check must reject, each naming Field.
	Invalid []InvalidCase
	// Getenv is the environment given to Check and Upload (os.Getenv when
	// nil).
	Getenv func(string) string
	// Verify checks what a successful upload published: result is what
	// Upload returned; want is the disk's bytes when WantsDisk, else the
	// file as received.
	Verify func(t *testing.T, result string, want []byte)
	// Leftovers lists unfinished things at the destination (staging files,
	// incomplete snapshots, multipart uploads). It must be empty after every
	// upload, successful or not.
	Leftovers func(t *testing.T) []string
	// WantsDisk says the target publishes the disk (decompressed, through
	// Image.OpenDisk), not the file as received (Image.Path). A disk target
	// is cancelled, or its read fails, after a quarter of the disk has been
	// read through OpenDisk. A file target reads a path the suite cannot
	// watch: it is cancelled when it asks for Image.Path, and for the read
	// failure Image.Path names a file that cannot be opened.
	WantsDisk bool
	// Secrets must never appear in the log, the result or an error.
	Secrets []string
	// Timeout bounds each upload (default 2 minutes).
	Timeout time.Duration
}

// InvalidCase is target data that Check must reject.
type InvalidCase struct {
	Name  string // optional subtest name; Field when empty
	Data  []byte
	Field string // must appear in the error message
}

// ImageSize is the size of the generated test disk.
const ImageSize = 4 << 20

// Disk returns the test disk: 512 KiB blocks of data, of zeros, and of zeros
// with a single non-zero byte, so targets that skip zero blocks must look at
// every byte.
func Disk() []byte {
	b := make([]byte, ImageSize)
	const block = 512 << 10
	x := uint32(2463534242)
	for i := 0; i < ImageSize/block; i++ {
		blk := b[i*block : (i+1)*block]
		switch i % 4 {
		case 0, 3: // data
			for k := range blk {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				blk[k] = byte(x)
			}
		case 1: // zeros
		case 2: // one byte in the middle
			blk[block/2+7] = 1
		}
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	if h.New == nil || h.ValidData == nil || h.Verify == nil || h.Leftovers == nil {
		t.Fatal("targettest: Harness needs New, ValidData, Verify and Leftovers")
	}
	s := &suite{h: h}
	if s.h.Getenv == nil {
		s.h.Getenv = os.Getenv
	}
	if s.h.Timeout == 0 {
		s.h.Timeout = 2 * time.Minute
	}
	s.disk = Disk()
	dir := t.TempDir()
	s.raw = filepath.Join(dir, "appliance.x86_64-1.0.0-Build1.1.raw")
	if err := os.WriteFile(s.raw, s.disk, 0o644); err != nil {
		t.Fatal(err)
	}
	s.xz = s.raw + ".xz"
	if err := writeXZ(s.xz, s.disk); err != nil {
		t.Fatal(err)
	}

	t.Run("Name", s.testName)
	t.Run("Check", s.testCheck)
	t.Run("UploadRejectsInvalidData", s.testUploadInvalid)
	t.Run("UploadRaw", func(t *testing.T) { s.testUpload(t, s.raw) })
	t.Run("UploadRawXZ", func(t *testing.T) { s.testUpload(t, s.xz) })
	t.Run("CancelWhileReading", s.testCancel)
	t.Run("ImageReadFails", s.testReadFails)
}

type suite struct {
	h       Harness
	disk    []byte
	raw, xz string
}

// writeXZ compresses data into path: with the xz binary when there is one
// (much faster, above all under the race detector), else in Go.
func writeXZ(path string, data []byte) error {
	if xzPath, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command(xzPath, "-c", "-0", "-T2", "--block-size=1MiB")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("xz: %w", err)
		}
		return os.WriteFile(path, out, 0o644)
	}
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func (s *suite) job(filename string) targets.Job {
	j := s.h.Job
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&j.ID, "42")
	def(&j.User, "tester")
	def(&j.Project, "home:tester")
	def(&j.Repository, "images")
	def(&j.Arch, "x86_64")
	def(&j.Package, "appliance")
	j.Filename = filename
	return j
}

func (s *suite) testName(t *testing.T) {
	tg := s.h.New(t)
	if err := cloudupload.CheckTargetName(tg.Name()); err != nil {
		t.Errorf("Name() = %q: %v", tg.Name(), err)
	}
}

func (s *suite) testCheck(t *testing.T) {
	t.Run("Valid", func(t *testing.T) {
		tg := s.h.New(t)
		if err := tg.Check(s.job(filepath.Base(s.raw)), s.h.ValidData(t), s.h.Getenv); err != nil {
			t.Errorf("Check rejects valid data: %v", err)
		}
	})
	for i, c := range s.h.Invalid {
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("%d-%s", i, c.Field)
		}
		t.Run(name, func(t *testing.T) {
			tg := s.h.New(t)
			err := tg.Check(s.job(filepath.Base(s.raw)), c.Data, s.h.Getenv)
			checkInvalid(t, err, c)
		})
	}
}

func checkInvalid(t *testing.T, err error, c InvalidCase) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("data %s accepted, want an error naming %q", c.Data, c.Field)
	case cloudupload.ErrorCode(err) != cloudupload.EINVALID:
		t.Errorf("data %s: error code %q, want %q (%v)", c.Data, cloudupload.ErrorCode(err), cloudupload.EINVALID, err)
	case !strings.Contains(cloudupload.ErrorMessage(err), c.Field):
		t.Errorf("data %s: message %q does not name %q", c.Data, cloudupload.ErrorMessage(err), c.Field)
	case strings.Contains(cloudupload.ErrorMessage(err), "\n"):
		t.Errorf("data %s: message %q is more than one line", c.Data, cloudupload.ErrorMessage(err))
	}
}

func (s *suite) testUploadInvalid(t *testing.T) {
	if len(s.h.Invalid) == 0 {
		t.Skip("no invalid cases")
	}
	c := s.h.Invalid[0]
	im := s.open(t, s.raw)
	w := &watched{Image: im, t: t}
	res, err := s.upload(t, context.Background(), c.Data, filepath.Base(s.raw), w)
	checkInvalid(t, err, c)
	if res != "" {
		t.Errorf("result %q for invalid data", res)
	}
	if w.touched() {
		t.Errorf("Upload read the image before rejecting invalid data")
	}
	s.checkLeftovers(t)
}

func (s *suite) open(t *testing.T, path string) targets.Image {
	t.Helper()
	im, err := image.Open(path, filepath.Base(path))
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// upload runs Upload with a bounded context and checks the log, result and
// error for secrets.
func (s *suite) upload(t *testing.T, ctx context.Context, data []byte, filename string, im targets.Image) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, s.h.Timeout)
	defer cancel()
	log := &syncWriter{w: &bytes.Buffer{}}
	req := targets.Request{
		Job:    s.job(filename),
		Data:   data,
		Image:  im,
		Log:    targets.NewLog(log),
		Getenv: s.h.Getenv,
	}
	progress := filepath.Join(t.TempDir(), "progress")
	req.Log.ReportProgress(progress)
	tg := s.h.New(t)
	res, err := tg.Upload(ctx, req)
	if err == nil {
		checkProgress(t, progress)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Upload did not finish within %s: %v", s.h.Timeout, err)
	}
	logText := log.String()
	t.Logf("log:\n%s", logText)
	for _, secret := range s.h.Secrets {
		if secret == "" {
			continue
		}
		if strings.Contains(logText, secret) {
			t.Errorf("a secret appears in the log")
		}
		if strings.Contains(res, secret) || err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("a secret appears in the result or error")
		}
	}
	if err == nil && logText == "" {
		t.Errorf("Upload logged nothing: the log should tell a person each step")
	}
	return res, err
}

func (s *suite) testUpload(t *testing.T, path string) {
	im := s.open(t, path)
	w := &watched{Image: im, t: t}
	res, err := s.upload(t, context.Background(), s.h.ValidData(t), filepath.Base(path), w)
	if err != nil {
		t.Fatalf("Upload %s: %v", filepath.Base(path), err)
	}
	w.checkClosed()
	if res == "" || strings.Contains(res, "\n") {
		t.Errorf("result %q: want one non-empty line", res)
	}
	want := s.disk
	if !s.h.WantsDisk {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want = b
	}
	s.h.Verify(t, res, want)
	s.checkLeftovers(t)
}

func (s *suite) testCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	im := s.open(t, s.raw)
	w := &watched{Image: im, t: t, after: ImageSize / 4, onAfter: func() error {
		cancel()
		return ctx.Err()
	}}
	if !s.h.WantsDisk {
		// The file is read through Path: cancel as the target asks for it.
		w.onPath = cancel
	}
	_, err := s.upload(t, ctx, s.h.ValidData(t), filepath.Base(s.raw), w)
	if !w.triggered() {
		t.Fatalf("the target never read the image (err %v)", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Upload error %v, want one wrapping context.Canceled", err)
	}
	w.checkClosed()
	s.checkLeftovers(t)
}

func (s *suite) testReadFails(t *testing.T) {
	im := s.open(t, s.raw)
	injected := errors.New("targettest: injected read failure")
	w := &watched{Image: im, t: t, after: ImageSize / 4, onAfter: func() error { return injected }}
	if !s.h.WantsDisk {
		// The file is read through Path: give one that cannot be opened.
		w.path = filepath.Join(t.TempDir(), "removed", filepath.Base(s.raw))
	}
	_, err := s.upload(t, context.Background(), s.h.ValidData(t), filepath.Base(s.raw), w)
	if err == nil {
		t.Fatal("Upload succeeded although the image could not be read")
	}
	if s.h.WantsDisk && !w.triggered() {
		t.Fatalf("the target never read the image through OpenDisk (err %v)", err)
	}
	w.checkClosed()
	s.checkLeftovers(t)
}

func (s *suite) checkLeftovers(t *testing.T) {
	t.Helper()
	if left := s.h.Leftovers(t); len(left) > 0 {
		t.Errorf("left at the destination: %q", left)
	}
}

// watched wraps an Image: it records access, can fail or cancel once
// after bytes have been read from OpenDisk's streams, and tracks that every
// stream is closed.
type watched struct {
	targets.Image
	t       *testing.T
	after   int64        // bytes before onAfter (0: never)
	onAfter func() error // its error is returned by every later Read
	onPath  func()       // called by Path
	path    string       // replaces the image's path when set

	mu      sync.Mutex
	read    int64
	fired   bool
	access  bool
	streams int // open
}

func (w *watched) Path() string {
	w.mu.Lock()
	w.access = true
	f := w.onPath
	if f != nil {
		w.fired = true
	}
	w.mu.Unlock()
	if f != nil {
		f()
	}
	if w.path != "" {
		return w.path
	}
	return w.Image.Path()
}

func (w *watched) DiskSize(ctx context.Context) (int64, error) {
	return w.Image.DiskSize(ctx)
}

func (w *watched) OpenDisk(ctx context.Context) (io.ReadCloser, error) {
	w.mu.Lock()
	w.access = true
	w.mu.Unlock()
	rc, err := w.Image.OpenDisk(ctx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.streams++
	w.mu.Unlock()
	return &watchedReader{w: w, rc: rc}, nil
}

func (w *watched) touched() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.access
}

func (w *watched) triggered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

func (w *watched) checkClosed() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.streams != 0 {
		w.t.Errorf("Upload returned with %d disk stream(s) not closed", w.streams)
	}
}

type watchedReader struct {
	w      *watched
	rc     io.ReadCloser
	err    error
	closed bool
}

func (r *watchedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	w := r.w
	if w.after > 0 {
		w.mu.Lock()
		if w.fired {
			w.mu.Unlock()
			r.err = w.onAfter()
			return 0, r.err
		}
		if room := w.after - w.read; int64(len(p)) >= room {
			p = p[:room]
			w.fired = true
		}
		w.mu.Unlock()
	}
	n, err := r.rc.Read(p)
	w.mu.Lock()
	w.read += int64(n)
	fired := w.fired && w.after > 0
	w.mu.Unlock()
	if fired {
		r.err = w.onAfter()
		if n > 0 {
			return n, nil // the error comes with the next Read
		}
		return 0, r.err
	}
	return n, err
}

func (r *watchedReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.w.mu.Lock()
	r.w.streams--
	r.w.mu.Unlock()
	return r.rc.Close()
}

// syncWriter serializes writes to a buffer read by the test.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// checkProgress checks the progress file a successful upload leaves: its
// transfer reported, complete.
func checkProgress(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("Upload reported no progress (use req.Log.Progress for the transfer): %v", err)
		return
	}
	var p struct{ Done, Total int64 }
	if err := json.Unmarshal(b, &p); err != nil || p.Done <= 0 || p.Done != p.Total {
		t.Errorf("progress file at the end %q: want all of a known total done", b)
	}
}
