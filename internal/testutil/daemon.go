package testutil

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BuildBinaries builds the daemon, its shim and the uploader into a temporary
// directory and returns it, for end-to-end tests through the real
// binaries.
func BuildBinaries(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/cloudupload/cloudupload/cmd/cloudupload-server", "github.com/cloudupload/cloudupload/cmd/clouduploader",
		"github.com/cloudupload/cloudupload/cmd/cloudupload-shim")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// Daemon is a cloudupload-server started by StartDaemon.
type Daemon struct {
	URL      string // http://127.0.0.1:PORT
	StateDir string
	log      SyncBuffer
}

// Log is what the daemon wrote so far.
func (d *Daemon) Log() string { return d.log.String() }

var listenURLRE = regexp.MustCompile(`https?://127\.0\.0\.1:\d+`)

// StartDaemon runs bin/cloudupload-server on a free loopback port with the
// given build root and environment (nothing else of the test's), in its own
// process group, and stops it (SIGTERM, then SIGKILL to the group) when the
// test ends. The daemon's log is shown when the test failed.
func StartDaemon(t testing.TB, bin, buildRoot string, env []string, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{StateDir: filepath.Join(t.TempDir(), "state")}
	StopStrays(t, d.StateDir)
	cmd := exec.Command(filepath.Join(bin, "cloudupload-server"), append([]string{"--listen", "127.0.0.1:0",
		"--state-dir", d.StateDir, "--build-root", buildRoot, "--kill-grace", "20s"}, args...)...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.log.Write([]byte(line + "\n"))
			if u := listenURLRE.FindString(line); u != "" && strings.Contains(line, "listening") {
				select {
				case found <- u:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", d.Log())
		}
	})
	select {
	case d.URL = <-found:
		return d
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not say where it listens:\n%s", d.Log())
	}
	return nil
}

// Do sends one request to the daemon and returns the status and body.
func (d *Daemon) Do(t testing.TB, method, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, d.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
