package pgtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const envChild = "PGTEST_CHILD_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		// A test binary that starts a server, says the postmaster's pid and
		// waits to be killed.
		s, err := start()
		if err != nil {
			fmt.Println("start:", err)
			os.Exit(1)
		}
		fmt.Printf("ready %d %s\n", s.proc.Pid, s.dir)
		select {}
	}
	Main(m)
}

// Each URL is its own empty database on one server, reached over loopback
// TCP with a password.
func TestURL(t *testing.T) {
	a, b := URL(t), URL(t)
	if a == b {
		t.Fatalf("two calls gave the same database %s", a)
	}
	if !strings.Contains(a, "127.0.0.1:") {
		t.Fatalf("URL %s is not on loopback", a)
	}
	Exec(t, a, "CREATE TABLE t (x int)")
	if n := QueryRow[string](t, b, "SELECT count(*)::text FROM pg_tables WHERE tablename = 't'"); n != "0" {
		t.Fatalf("the second database is not empty: %s tables t", n)
	}
	bad := strings.Replace(a, ":"+Shared(t).password+"@", ":wrong@", 1)
	if _, err := pgx.Connect(context.Background(), bad); err == nil {
		t.Fatal("a wrong password was accepted: the server does not check passwords")
	}
}

// A server of the test's own can be stopped and started again with its
// data.
func TestServerStopStart(t *testing.T) {
	s := NewServer(t)
	url := s.URL(t)
	Exec(t, url, "CREATE TABLE kept (x int)")
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(context.Background(), url); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if n := QueryRow[string](t, url, "SELECT count(*)::text FROM pg_tables WHERE tablename = 'kept'"); n != "1" {
		t.Fatalf("table lost over a restart")
	}
	s.Close()
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Fatalf("server directory left after Close: %v", err)
	}
}

// The server does not outlive a test binary killed with SIGKILL.
func TestServerDiesWithTestBinary(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	var pid int
	var dir string
	if _, err := fmt.Sscanf(line, "ready %d %s", &pid, &dir); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q", line)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("postgres (pid %d) still runs 20s after its test binary was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Directories of servers that died with their test binary are removed
// after an hour; those of live servers and recent ones are kept.
func TestRemoveStale(t *testing.T) {
	old := time.Now().Add(-2 * time.Hour)
	mk := func(pid int, mtime time.Time) string {
		dir, err := os.MkdirTemp("", "pgtest-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if pid != 0 {
			os.Mkdir(dir+"/data", 0o700)
			os.WriteFile(dir+"/data/postmaster.pid", []byte(fmt.Sprintf("%d\n/data\n", pid)), 0o600)
		}
		os.Chtimes(dir, mtime, mtime)
		return dir
	}
	dead, live, recent := mk(0, old), mk(os.Getpid(), old), mk(0, time.Now())
	removeStale()
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("stale directory kept: %v", err)
	}
	for _, dir := range []string{live, recent} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("directory %s removed: %v", dir, err)
		}
	}
}
