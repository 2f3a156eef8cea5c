package image

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// children returns the pids of this process's child processes (scanning
// /proc: a child's parent is the process, whichever thread started it).
func children(t *testing.T) []int {
	t.Helper()
	var pids []int
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces.
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 1 && f[1] == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// decompressorPid returns the pid of the decompressor behind a disk
// stream, 0 when there is none.
func decompressorPid(rc io.ReadCloser) int {
	var r io.Reader = rc
	if rc2, ok := r.(*readCloser); ok {
		r = rc2.Reader
	}
	if e, ok := r.(*exactReader); ok {
		r = e.r
	}
	if rc2, ok := r.(*readCloser); ok {
		r = rc2.Reader
	}
	if p, ok := r.(*procReader); ok {
		return p.cmd.Process.Pid
	}
	return 0
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

func TestCloseReapsDecompressor(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "zstd")
	dir := t.TempDir()
	disk := rawDisk(8<<20, 10)
	raw := writeFile(t, dir, "d.raw", disk)
	compress(t, filepath.Join(dir, "d.raw.xz"), raw, "xz", "-c", "-0")
	compress(t, filepath.Join(dir, "d.raw.zst"), raw, "zstd", "-q", "-c")
	xzPath, _ := exec.LookPath("xz")
	zstdPath, _ := exec.LookPath("zstd")
	o := options{xzBinary: xzPath, zstdBinary: zstdPath}
	for _, name := range []string{"d.raw.xz", "d.raw.zst"} {
		for _, readFirst := range []int64{0, 1 << 20} {
			im, err := open(filepath.Join(dir, name), name, o)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := im.OpenDisk(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			pid := decompressorPid(rc)
			if pid == 0 {
				t.Fatalf("%s: no decompressor process", name)
			}
			if readFirst > 0 {
				if _, err := io.CopyN(io.Discard, rc, readFirst); err != nil {
					t.Fatal(err)
				}
			}
			if err := rc.Close(); err != nil {
				t.Errorf("%s: Close: %v", name, err)
			}
			if alive(pid) {
				t.Errorf("%s: decompressor %d still exists after Close (not reaped)", name, pid)
			}
			if err := rc.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		}
	}
	if c := children(t); len(c) > 0 {
		t.Errorf("child processes left: %v", c)
	}
}

func TestCancelWhileReading(t *testing.T) {
	needTool(t, "xz")
	dir := t.TempDir()
	disk := rawDisk(8<<20, 11)
	raw := writeFile(t, dir, "d.raw", disk)
	compress(t, filepath.Join(dir, "d.raw.xz"), raw, "xz", "-c", "-0")
	compress(t, filepath.Join(dir, "d.raw.gz"), raw, "gzip", "-c", "-1")
	xzPath, _ := exec.LookPath("xz")
	for _, c := range []struct {
		name string
		o    options
	}{
		{"d.raw", options{}},
		{"d.raw.xz", options{xzBinary: xzPath}},
		{"d.raw.xz", options{}},
		{"d.raw.gz", options{}},
	} {
		im, err := open(filepath.Join(dir, c.name), c.name, c.o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		rc, err := im.OpenDisk(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, rc, 1<<20); err != nil {
			t.Fatal(err)
		}
		cancel()
		_, err = io.Copy(io.Discard, rc)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s (xz binary %v): read after cancel: %v, want context.Canceled", c.name, c.o.xzBinary != "", err)
		}
		rc.Close()
	}
	if c := children(t); len(c) > 0 {
		t.Errorf("child processes left: %v", c)
	}
}
