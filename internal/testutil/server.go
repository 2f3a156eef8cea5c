package testutil

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildCommands builds the project's commands (e.g. "cloudupload-server",
// "clouduploader") with `go build -o` into one temporary directory per
// test binary, and returns that directory. Call RemoveBuilt from TestMain
// after m.Run to delete it.
func BuildCommands(t testing.TB, names ...string) string {
	t.Helper()
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "cloudupload-bin")
		if err != nil {
			t.Fatal(err)
		}
		built.dir, built.names = dir, map[string]bool{}
	}
	var pkgs []string
	for _, n := range names {
		if !built.names[n] {
			pkgs = append(pkgs, "github.com/cloudupload/cloudupload/cmd/"+n)
		}
	}
	if len(pkgs) > 0 {
		cmd := exec.Command("go", append([]string{"build", "-o", built.dir + "/"}, pkgs...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		for _, n := range names {
			built.names[n] = true
		}
	}
	return built.dir
}

var built struct {
	mu    sync.Mutex
	dir   string
	names map[string]bool
}

// RemoveBuilt removes the directory of BuildCommands.
func RemoveBuilt() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

var listeningRE = regexp.MustCompile(`https?://127\.0\.0\.1:\d+`)

// StartServer runs bin/cloudupload-server with args (which should include
// --listen 127.0.0.1:0 and a temporary --state-dir) and env (nil: the
// test's environment), waits until it says where it listens and returns
// that URL. The server is stopped with SIGTERM at the end of the test (its
// process group is killed if it does not stop within 30 s); its log is
// shown when the test failed.
func StartServer(t testing.TB, bin string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "cloudupload-server"), args...)
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
	var log SyncBuffer
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			log.Write([]byte(line + "\n"))
			if u := listeningRE.FindString(line); u != "" && strings.Contains(line, "listening") {
				select {
				case found <- u:
				default:
				}
			}
		}
	}()
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
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	})
	select {
	case u := <-found:
		return u
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not say where it listens:\n%s", log.String())
	}
	return ""
}
