package mirror

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader"
)

// TestMain lets the test binary act as clouduploader with the mirror
// target when MIRROR_TEST_UPLOADER is set. With MIRROR_TEST_FIFO set, the
// target reads the image from that FIFO instead (the uploader itself
// accepts only regular files), so the test controls how far the copy gets.
func TestMain(m *testing.M) {
	if os.Getenv("MIRROR_TEST_UPLOADER") == "1" {
		var t targets.Target = New()
		if fifo := os.Getenv("MIRROR_TEST_FIFO"); fifo != "" {
			t = fifoTarget{Target: t, fifo: fifo}
		}
		os.Exit(uploader.Main(context.Background(), os.Args[1:], uploader.Options{
			Targets: []targets.Target{t},
			Getenv:  os.Getenv,
			Stdout:  os.Stdout,
			Stderr:  os.Stderr,
			Exit:    os.Exit,
		}))
	}
	os.Exit(m.Run())
}

type fifoTarget struct {
	targets.Target
	fifo string
}

func (f fifoTarget) Upload(ctx context.Context, req targets.Request) (string, error) {
	req.Image = fifoImage{Image: req.Image, path: f.fifo}
	return f.Target.Upload(ctx, req)
}

type fifoImage struct {
	targets.Image
	path string
}

func (f fifoImage) Path() string { return f.path }

// fifoUploader is the test binary run as clouduploader with the mirror
// target reading its image from a FIFO that the test writes.
type fifoUploader struct {
	cmd    *exec.Cmd
	w      *os.File // the FIFO's writing end
	exited chan error
	log    *testutil.SyncBuffer
	result string // the result file
}

// startFIFOUploader starts the uploader publishing filename with target
// data data to the tree "t" at tree, and returns once it opened the FIFO.
func startFIFOUploader(t *testing.T, tree, filename, data string) *fifoUploader {
	dir := t.TempDir()
	img := filepath.Join(dir, filename)
	os.WriteFile(img, make([]byte, 4<<20), 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	dataFile := filepath.Join(dir, "data.json")
	os.WriteFile(dataFile, []byte(data), 0o600)
	u := &fifoUploader{exited: make(chan error, 1), log: &testutil.SyncBuffer{}, result: filepath.Join(dir, "result")}
	u.cmd = exec.Command(os.Args[0], "alice", "mirror", img, dataFile, filename, u.result)
	u.cmd.Env = append(os.Environ(), "MIRROR_TEST_UPLOADER=1", "MIRROR_TEST_FIFO="+fifo, EnvMirrors+"=t="+tree, "CLOUDUPLOAD_JOB=7")
	u.cmd.Stdout, u.cmd.Stderr = u.log, u.log
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { u.exited <- u.cmd.Wait() }()
	opened := make(chan *os.File, 1)
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // waits for the target to open it
		if err == nil {
			opened <- w
		}
	}()
	select {
	case u.w = <-opened:
	case err := <-u.exited:
		t.Fatalf("uploader exited (%v) before reading the image:\n%s", err, u.log.String())
	}
	t.Cleanup(func() { u.w.Close() })
	return u
}

// terminate sends SIGTERM while feeding the FIFO without ever ending it,
// so that only the signal can stop the upload, and checks that the
// uploader exits as killed and the series holds nothing but its lock.
func (u *fifoUploader) terminate(t *testing.T, series string) {
	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := u.w.Write(make([]byte, 1<<10)); err != nil {
				return // the reader is gone
			}
		}
	}()
	var err error
	select {
	case err = <-u.exited:
	case <-time.After(time.Minute):
		u.cmd.Process.Kill()
		t.Fatalf("uploader still running a minute after SIGTERM:\n%s", u.log.String())
	}
	t.Logf("uploader log:\n%s", u.log.String())
	if code := u.cmd.ProcessState.ExitCode(); code != uploader.ExitKilled {
		t.Fatalf("exit %d (%v), want %d", code, err, uploader.ExitKilled)
	}
	if b, _ := os.ReadFile(u.result); !strings.Contains(string(b), "killed") {
		t.Errorf("result file %q, want killed", b)
	}
	ents, _ := os.ReadDir(series)
	for _, e := range ents {
		if e.Name() != ".lock" {
			t.Errorf("left in the series: %s", e.Name())
		}
	}
}

// The uploader process killed with SIGTERM while it copies the image: it
// exits as killed and the tree holds nothing of the publication.
func TestSIGTERMMidCopyLeavesNothing(t *testing.T) {
	tree := t.TempDir()
	u := startFIFOUploader(t, tree, "image.raw", `{"tree":"t","series":"s","build_id":"1","links":["latest"]}`)
	if _, err := u.w.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	// The copy is under way: its staging directory exists.
	waitFor(t, func() bool { return len(hidden(t, filepath.Join(tree, "s"), ".staging-")) == 1 })
	u.terminate(t, filepath.Join(tree, "s"))
}
