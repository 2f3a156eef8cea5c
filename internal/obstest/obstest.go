package obstest

import (
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"
)

// ServerDir is where Debian's obs-server installs OBS's backend programs.
var ServerDir = "/usr/lib/obs/server"

const install = "install OBS's backend (apt-get install obs-server, or run scripts/ensure-obs-server.sh, which make bench does)"

// bsConfig replaces OBS's /etc/obs/BSConfig.pm for both programs: state
// under $CLOUDUPLOAD_OBS_BSDIR, no user to drop privileges to (OBS would
// switch to obsrun), and write access for loopback clients only. OBS's
// defaults are kept otherwise, so it is as durable as an OBS installation:
// the worker fdatasyncs each job file before renaming it
// ($disable_data_sync unset); the server syncs nothing, not even the image.
const bsConfig = `package BSConfig;
our $bsdir = $ENV{'CLOUDUPLOAD_OBS_BSDIR'} || die("CLOUDUPLOAD_OBS_BSDIR is not set\n");
our $rundir = "$bsdir/run";
our $logdir = "$bsdir/log";
our $ipaccess = { '127\..*' => 'rw' };
our $clouduploadserver = 'http://127.0.0.1:0';
our $bsuser;
our $bsgroup;
1;
`

// InstantUploader is an uploader that succeeds at once, writing "ok" as its
// result: with OBS's argv (<user> <target> <image> <target data file>
// <filename> <result file>), as OBS's worker runs clouduploader, and also
// answering the project's daemon ("protocol", "validate"; it does not know
// "validate-stream", so the daemon validates with a process per create).
const InstantUploader = `#!/bin/sh
case "$1" in
protocol) echo "cloudupload-uploader 1"; exit 0 ;;
validate) cat >/dev/null; exit 0 ;;
validate-stream) exit 2 ;;
esac
printf ok >"$6"
`

// WriteInstantUploader writes InstantUploader as an executable file in a
// new temporary directory and returns its path.
func WriteInstantUploader(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "instant-uploader")
	if err := os.WriteFile(path, []byte(InstantUploader), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Server is OBS's cloud upload server and worker started by Start.
type Server struct {
	URL string // http://127.0.0.1:PORT
	Dir string // OBS's bsdir: cloudupload/ holds the jobs, cloudupload/done/ the finished ones

	log testutil.SyncBuffer // both programs' standard output and error
}

// Log is what the server and the worker wrote so far.
func (s *Server) Log() string { return s.log.String() }

// Start runs OBS's cloud upload server and worker with uploader (a path) as
// their clouduploader, each in its own process group, and stops them when
// the benchmark ends. It fails the benchmark, with the programs' output,
// when either is missing or does not start within 30 seconds.
func Start(tb testing.TB, uploader string) *Server {
	tb.Helper()
	server := filepath.Join(ServerDir, "bs_clouduploadserver")
	worker := filepath.Join(ServerDir, "bs_clouduploadworker")
	for _, p := range []string{server, worker} {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("OBS's cloud upload server is missing (%v): %s", err, install)
		}
	}
	perl, err := exec.LookPath("perl")
	if err != nil {
		tb.Fatalf("perl, which runs OBS's server, is missing: %s", install)
	}
	uploader, err = filepath.Abs(uploader)
	if err != nil {
		tb.Fatal(err)
	}

	dir := tb.TempDir()
	// Last cleanup to run: whatever a program left (a worker's job process
	// in a session of its own) names dir on its command line.
	testutil.StopStrays(tb, dir)
	s := &Server{Dir: filepath.Join(dir, "srv")}
	lib, bin := filepath.Join(dir, "lib"), filepath.Join(dir, "bin")
	for _, d := range []string{lib, bin, s.Dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lib, "BSConfig.pm"), []byte(bsConfig), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink(uploader, filepath.Join(bin, "clouduploader")); err != nil {
		tb.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.URL = "http://" + ln.Addr().String()
	sock, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		tb.Fatal(err)
	}
	defer sock.Close()
	// OBS's server accepts in blocking mode; Fd clears O_NONBLOCK, which the
	// duplicate shares with Go's (closed) listener.
	sock.Fd()

	// -MBSConfig loads our BSConfig.pm before the program puts its own
	// directory (with /etc/obs/BSConfig.pm) first on @INC.
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "CLOUDUPLOAD_OBS_BSDIR=" + s.Dir, "LC_ALL=C"}
	srv := s.command(tb, perl, lib, env, server, "--port", "&=3")
	srv.ExtraFiles = []*os.File{sock} // descriptor 3
	wrk := s.command(tb, perl, lib, env, worker)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("OBS's cloud upload server and worker wrote:\n%s", s.Log())
		}
	})
	exited := make(chan string, 2)
	for _, c := range []*exec.Cmd{srv, wrk} {
		if err := c.Start(); err != nil {
			tb.Fatalf("start %s: %v", c.Args[3], err)
		}
		tb.Cleanup(func() { stop(c) })
		go func() {
			err := c.Wait()
			exited <- filepath.Base(c.Args[3]) + ": " + errString(err)
		}()
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case e := <-exited:
			tb.Fatalf("OBS's cloud upload server did not start (%s):\n%s", e, s.Log())
		default:
		}
		if s.ready() {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("OBS's cloud upload server did not answer or its worker did not start within 30s:\n%s", s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// command is perl running program with BSConfig from lib, output to the
// log, in a process group of its own.
func (s *Server) command(tb testing.TB, perl, lib string, env []string, program string, args ...string) *exec.Cmd {
	c := exec.Command(perl, append([]string{"-I" + lib, "-MBSConfig", program}, args...)...)
	c.Env = env
	c.Dir = s.Dir
	c.Stdout, c.Stderr = &s.log, &s.log
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c
}

// ready reports whether the server answers GET / and the worker waits for
// jobs.
func (s *Server) ready() bool {
	if !strings.Contains(s.Log(), "bs_clouduploadworker started") {
		return false
	}
	resp, err := http.Get(s.URL + "/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop ends c's process group: SIGTERM, then SIGKILL after 10 seconds.
// Both programs lead their group (the server's setsid makes it the leader
// of a session of its own), which also holds the server's per-request and
// AJAX children.
func stop(c *exec.Cmd) {
	pid := c.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(-pid, 0) != nil {
			return
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

func errString(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	if err == nil {
		return "exited"
	}
	return err.Error()
}
