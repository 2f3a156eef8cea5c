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

// The uploader process killed with SIGTERM while it copies the image: it
// exits as killed and the tree holds nothing of the publication.
func TestSIGTERMMidCopyLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	img := filepath.Join(dir, "image.raw")
	os.WriteFile(img, make([]byte, 4<<20), 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data.json")
	os.WriteFile(data, []byte(`{"tree":"t","series":"s","build_id":"1","links":["latest"]}`), 0o600)
	result := filepath.Join(dir, "result")
	log := &testutil.SyncBuffer{}
	cmd := exec.Command(os.Args[0], "alice", "mirror", img, data, "image.raw", result)
	cmd.Env = append(os.Environ(), "MIRROR_TEST_UPLOADER=1", "MIRROR_TEST_FIFO="+fifo, EnvMirrors+"=t="+tree, "CLOUDUPLOAD_JOB=7")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	opened := make(chan *os.File, 1)
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // waits for the copy to open it
		if err == nil {
			opened <- w
		}
	}()
	var w *os.File
	select {
	case w = <-opened:
	case err := <-exited:
		t.Fatalf("uploader exited (%v) before reading the image:\n%s", err, log.String())
	}
	defer w.Close()
	if _, err := w.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	// The copy is under way: its staging directory exists.
	waitFor(t, func() bool { return len(hidden(t, filepath.Join(tree, "s"), ".staging-")) == 1 })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Keep feeding the copy, never ending the file, so the copy cannot
	// finish: only the signal stops it. Writes fail once the reader is gone.
	go func() {
		for {
			if _, err := w.Write(make([]byte, 1<<10)); err != nil {
				return
			}
		}
	}()
	var err error
	select {
	case err = <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("uploader still running a minute after SIGTERM:\n%s", log.String())
	}
	t.Logf("uploader log:\n%s", log.String())
	if code := cmd.ProcessState.ExitCode(); code != uploader.ExitKilled {
		t.Fatalf("exit %d (%v), want %d", code, err, uploader.ExitKilled)
	}
	if b, _ := os.ReadFile(result); !strings.Contains(string(b), "killed") {
		t.Errorf("result file %q, want killed", b)
	}
	ents, _ := os.ReadDir(filepath.Join(tree, "s"))
	for _, e := range ents {
		if e.Name() != ".lock" {
			t.Errorf("left in the series: %s", e.Name())
		}
	}
}
