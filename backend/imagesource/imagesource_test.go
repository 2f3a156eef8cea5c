package imagesource

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
)

var testJob = cloudupload.Job{ID: 7, Project: "home:alice", Repository: "images", Arch: "x86_64",
	Package: "jeos", Filename: "jeos image#1.raw.xz"}

func content(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// dstFile returns a new file holding prefix, positioned at its end, as the
// Manager hands it to Fetch.
func dstFile(t *testing.T, prefix []byte) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "image"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(prefix); err != nil {
		t.Fatal(err)
	}
	return f
}

func fileContent(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildRoot(t *testing.T) {
	dir := t.TempDir()
	img := content(3<<20 + 17)
	imgDir := filepath.Join(dir, "home:alice", "images", "x86_64", "jeos")
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(imgDir, testJob.Filename), img, 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("secret"), 0o600)
	os.Symlink(secret, filepath.Join(imgDir, "escape.raw"))
	os.Symlink(testJob.Filename, filepath.Join(imgDir, "inside.raw"))
	os.Mkdir(filepath.Join(imgDir, "dir.raw"), 0o755)

	b, err := NewBuildRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if size, err := b.Stat(ctx, testJob); err != nil || size != int64(len(img)) {
		t.Fatalf("Stat: %d, %v", size, err)
	}
	for _, offset := range []int{0, 1 << 20, len(img) + 5} {
		// What dst holds may come from an older build: it is replaced.
		f := dstFile(t, bytes.Repeat([]byte("z"), offset))
		size, err := b.Fetch(ctx, testJob, f, int64(offset))
		if err != nil || size != int64(len(img)) {
			t.Fatalf("Fetch from %d: %d, %v", offset, size, err)
		}
		if !bytes.Equal(fileContent(t, f), img) {
			t.Errorf("Fetch from %d: content differs", offset)
		}
	}
	inside := testJob
	inside.Filename = "inside.raw"
	if size, err := b.Stat(ctx, inside); err != nil || size != int64(len(img)) {
		t.Errorf("link inside the tree: %d, %v", size, err)
	}
	for name, want := range map[string]string{
		"missing.raw.xz": "image not found: home:alice/images/x86_64/jeos/missing.raw.xz",
		"escape.raw":     "image not found: home:alice/images/x86_64/jeos/escape.raw",
		"dir.raw":        "image not found: home:alice/images/x86_64/jeos/dir.raw",
	} {
		j := testJob
		j.Filename = name
		_, err := b.Stat(ctx, j)
		if cloudupload.ErrorCode(err) != cloudupload.ENOTFOUND || cloudupload.ErrorMessage(err) != want {
			t.Errorf("Stat %s: %v", name, err)
		}
		if _, err := b.Fetch(ctx, j, dstFile(t, nil), 0); cloudupload.ErrorCode(err) != cloudupload.ENOTFOUND {
			t.Errorf("Fetch %s: %v", name, err)
		}
	}
	for _, name := range []string{"..", "../../etc/passwd", "/etc/passwd"} {
		j := testJob
		j.Package = name
		if _, err := b.Stat(ctx, j); cloudupload.ErrorCode(err) != cloudupload.EINVALID {
			t.Errorf("package %q: %v", name, err)
		}
	}
	if _, err := NewBuildRoot(filepath.Join(dir, "nope")); err == nil {
		t.Error("NewBuildRoot accepted a missing directory")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Fetch(cctx, testJob, dstFile(t, nil), 0); err != context.Canceled {
		t.Errorf("cancelled Fetch: %v", err)
	}
}

// imageServer serves img at the path of testJob. Requests are counted;
// behave decides per request (1-based) how to answer: "ok" (Range honoured),
// "full" (Range ignored), "drop" (headers for the whole remainder, half of
// it, then the connection is closed), "stall" (half, then silence), "404",
// "503".
type imageServer struct {
	*httptest.Server
	mu       sync.Mutex
	n        int
	ranges   []string
	ifRanges []string
}

func newImageServer(t *testing.T, img []byte, behave func(n int) string) *imageServer {
	s := &imageServer{}
	want := "/build/home:alice/images/x86_64/jeos/jeos%20image%231.raw.xz"
	stop := make(chan struct{})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.EscapedPath() != want {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.n++
		n := s.n
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.ifRanges = append(s.ifRanges, r.Header.Get("If-Range"))
		s.mu.Unlock()
		w.Header().Set("ETag", `"v1"`)
		var start int64
		if rg := r.Header.Get("Range"); rg != "" {
			fmt.Sscanf(rg, "bytes=%d-", &start)
		}
		switch behave(n) {
		case "ok":
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(img))
		case "full":
			w.Header().Set("Content-Length", fmt.Sprint(len(img)))
			w.Write(img)
		case "drop", "stall":
			rest := img[start:]
			if start > 0 {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(img)-1, len(img)))
				w.Header().Set("Content-Length", fmt.Sprint(len(rest)))
				w.WriteHeader(http.StatusPartialContent)
			} else {
				w.Header().Set("Content-Length", fmt.Sprint(len(rest)))
			}
			w.Write(rest[:len(rest)/2])
			w.(http.Flusher).Flush()
			if behave(n) == "stall" {
				select {
				case <-r.Context().Done():
				case <-stop:
				}
				return
			}
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case "503":
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { close(stop); s.Close() })
	return s
}

func newRep(t *testing.T, url string) *RepServer {
	t.Helper()
	r, err := NewRepServer(url)
	if err != nil {
		t.Fatal(err)
	}
	r.Backoff = time.Millisecond
	r.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return r
}

func TestRepServerResume(t *testing.T) {
	img := content(4<<20 + 3)
	for _, c := range []struct {
		name       string
		behave     func(int) string
		wantRanges []string
	}{
		{"resumes", func(n int) string {
			if n <= 2 {
				return "drop"
			}
			return "ok"
		}, []string{"", fmt.Sprintf("bytes=%d-", len(img)/2), fmt.Sprintf("bytes=%d-", len(img)/2+(len(img)-len(img)/2)/2)}},
		{"range-ignored", func(n int) string {
			if n == 1 {
				return "drop"
			}
			return "full"
		}, []string{"", fmt.Sprintf("bytes=%d-", len(img)/2)}},
		{"server-busy", func(n int) string {
			if n == 1 {
				return "503"
			}
			return "ok"
		}, []string{"", ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newImageServer(t, img, c.behave)
			r := newRep(t, s.URL+"/")
			f := dstFile(t, nil)
			size, err := r.Fetch(context.Background(), testJob, f, 0)
			if err != nil || size != int64(len(img)) {
				t.Fatalf("Fetch: %d, %v", size, err)
			}
			if !bytes.Equal(fileContent(t, f), img) {
				t.Error("content differs")
			}
			if fmt.Sprint(s.ranges) != fmt.Sprint(c.wantRanges) {
				t.Errorf("ranges %q, want %q", s.ranges, c.wantRanges)
			}
			// Resumes are conditional on the image being unchanged.
			for i, rg := range s.ranges {
				if rg != "" && s.ifRanges[i] != `"v1"` {
					t.Errorf("request %d: Range %q without If-Range (%q)", i+1, rg, s.ifRanges[i])
				}
			}
		})
	}
}

func TestRepServerResumeFromOffset(t *testing.T) {
	img := content(1 << 20)
	s := newImageServer(t, img, func(int) string { return "ok" })
	r := newRep(t, s.URL)
	job := testJob
	job.Size = int64(len(img)) // as Stat found it when the job was created
	f := dstFile(t, img[:1000])
	if size, err := r.Fetch(context.Background(), job, f, 1000); err != nil || size != int64(len(img)) {
		t.Fatalf("Fetch: %d, %v", size, err)
	}
	if !bytes.Equal(fileContent(t, f), img) || s.ranges[0] != "bytes=1000-" {
		t.Errorf("content differs or ranges %q", s.ranges)
	}
	// Already complete: the server answers 416 and the image is done.
	f = dstFile(t, img)
	if size, err := r.Fetch(context.Background(), job, f, int64(len(img))); err != nil || size != int64(len(img)) {
		t.Errorf("complete image: %d, %v", size, err)
	}

	// The image changed size since the job was created: what dst holds
	// belongs to the old one, so the download starts again.
	s.ranges = nil
	old := job
	old.Size = 999
	f = dstFile(t, []byte("old image head"))
	if size, err := r.Fetch(context.Background(), old, f, 14); err != nil || size != int64(len(img)) {
		t.Fatalf("changed image: %d, %v", size, err)
	}
	if !bytes.Equal(fileContent(t, f), img) || fmt.Sprint(s.ranges) != `[bytes=14- ]` {
		t.Errorf("changed image: content differs or ranges %q", s.ranges)
	}

	// Without a known size there is nothing to check a resume against.
	s.ranges = nil
	f = dstFile(t, []byte("unknown head"))
	if size, err := r.Fetch(context.Background(), testJob, f, 12); err != nil || size != int64(len(img)) {
		t.Fatalf("unknown size: %d, %v", size, err)
	}
	if !bytes.Equal(fileContent(t, f), img) || fmt.Sprint(s.ranges) != `[]` {
		t.Errorf("unknown size: content differs or ranges %q", s.ranges)
	}
}

func TestRepServerIdle(t *testing.T) {
	img := content(1 << 20)
	s := newImageServer(t, img, func(n int) string {
		if n == 1 {
			return "stall"
		}
		return "ok"
	})
	r := newRep(t, s.URL)
	r.IdleTimeout = 200 * time.Millisecond
	f := dstFile(t, nil)
	if size, err := r.Fetch(context.Background(), testJob, f, 0); err != nil || size != int64(len(img)) {
		t.Fatalf("Fetch: %d, %v", size, err)
	}
	if !bytes.Equal(fileContent(t, f), img) || len(s.ranges) != 2 || s.ranges[1] != fmt.Sprintf("bytes=%d-", len(img)/2) {
		t.Errorf("content differs or ranges %q", s.ranges)
	}
}

func TestRepServerGivesUp(t *testing.T) {
	img := content(1 << 20)
	s := newImageServer(t, img, func(int) string { return "503" })
	r := newRep(t, s.URL)
	r.Retries = 3
	_, err := r.Fetch(context.Background(), testJob, dstFile(t, nil), 0)
	want := "download from the repository server failed 3 times in a row (last: the repository server answered 503 Service Unavailable)"
	if cloudupload.ErrorMessage(err) != want {
		t.Errorf("%v", err)
	}
	if len(s.ranges) != 3 {
		t.Errorf("%d attempts", len(s.ranges))
	}

	// A server that goes away: the reason says so, not an address.
	s.Close()
	_, err = r.Fetch(context.Background(), testJob, dstFile(t, nil), 0)
	if msg := cloudupload.ErrorMessage(err); msg != "download from the repository server failed 3 times in a row (last: the repository server cannot be reached)" {
		t.Errorf("%q", msg)
	}
	if _, err := r.Stat(context.Background(), testJob); cloudupload.ErrorMessage(err) != "the repository server cannot be reached" {
		t.Errorf("Stat: %v", err)
	}
}

func TestRepServerStat(t *testing.T) {
	img := content(12345)
	s := newImageServer(t, img, func(int) string { return "ok" })
	r := newRep(t, s.URL)
	if size, err := r.Stat(context.Background(), testJob); err != nil || size != 12345 {
		t.Errorf("Stat: %d, %v", size, err)
	}
	if s.ranges[0] != "bytes=0-0" {
		t.Errorf("Stat asked %q", s.ranges[0])
	}
	s2 := newImageServer(t, img, func(int) string { return "full" })
	if size, err := newRep(t, s2.URL).Stat(context.Background(), testJob); err != nil || size != 12345 {
		t.Errorf("Stat without Range: %d, %v", size, err)
	}
	missing := testJob
	missing.Filename = "missing.raw"
	_, err := r.Stat(context.Background(), missing)
	if cloudupload.ErrorCode(err) != cloudupload.ENOTFOUND || cloudupload.ErrorMessage(err) != "image not found: home:alice/images/x86_64/jeos/missing.raw" {
		t.Errorf("Stat missing: %v", err)
	}
	if _, err := r.Fetch(context.Background(), missing, dstFile(t, nil), 0); cloudupload.ErrorCode(err) != cloudupload.ENOTFOUND {
		t.Errorf("Fetch missing: %v", err)
	}
	for _, u := range []string{"ftp://x", "http://", "http://h/?q=1", "::"} {
		if _, err := NewRepServer(u); err == nil {
			t.Errorf("NewRepServer(%q) accepted", u)
		}
	}
}

func TestImageURL(t *testing.T) {
	r := newRep(t, "http://rep:5252/obs/")
	u, err := r.imageURL(testJob)
	if want := "http://rep:5252/obs/build/home:alice/images/x86_64/jeos/jeos%20image%231.raw.xz"; err != nil || u != want {
		t.Errorf("%q, %v; want %q", u, err, want)
	}
	j := testJob
	j.Arch = "a?b"
	if u, _ := r.imageURL(j); !strings.Contains(u, "/a%3Fb/") {
		t.Errorf("%q", u)
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-0/10", "bytes */10", "bytes 5-9/*", "bytes 9-5/10", "bytes -1-2/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, err := parseContentRange(s)
		if err != nil {
			return
		}
		if first == -1 && last == -1 {
			return
		}
		if first < 0 || last < first || total >= 0 && last >= total {
			t.Fatalf("%q: %d-%d/%d", s, first, last, total)
		}
	})
}
