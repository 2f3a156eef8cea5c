package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"
	"github.com/jackc/pgx/v5"
)

// serverUser runs the servers when the tests run as root.
const serverUser = "cloudupload-test"

const install = "install PostgreSQL (apt-get install postgresql, or run scripts/ensure-postgres.sh)"

// Server is a PostgreSQL server of the tests.
type Server struct {
	dir      string // server directory: data/, the socket, the log
	bin      string // directory of initdb and postgres
	cred     *syscall.Credential
	port     int
	password string // of the superuser postgres

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{} // closed when proc has ended
}

var (
	servers   sync.Map // *Server → struct{}: what Main stops
	dbCounter atomic.Int64
	shared    struct {
		once sync.Once
		s    *Server
		err  error
	}
)

// URL returns the URL of a new, empty database on the test binary's shared
// server, starting the server on first use. The database is dropped when
// the test ends.
func URL(t testing.TB) string {
	t.Helper()
	return Shared(t).URL(t)
}

// Shared returns the test binary's shared server, starting it on first
// use, for tests that want its admin URL. Do not stop it: other tests use
// it; NewServer gives a server to stop.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() { shared.s, shared.err = start() })
	if shared.err != nil {
		t.Fatalf("start PostgreSQL: %v", shared.err)
	}
	return shared.s
}

// NewServer starts a server for this test alone, stopped and removed when
// the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s, err := start()
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Main runs the tests and then stops every server they started; call it
// from TestMain. It does not return.
func Main(m *testing.M) {
	code := m.Run()
	StopAll()
	os.Exit(code)
}

// StopAll stops every server the tests started, for a TestMain that has
// more to do after the tests than Main does.
func StopAll() {
	servers.Range(func(k, _ any) bool {
		k.(*Server).Close()
		return true
	})
}

// AdminURL is the URL of the server's postgres database as its superuser.
func (s *Server) AdminURL() string { return s.urlOf("postgres") }

func (s *Server) urlOf(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", s.password),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// URL creates a new, empty database and returns its URL (with the
// superuser's password). The database is dropped when the test ends.
func (s *Server) URL(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", dbCounter.Add(1))
	if err := s.admin(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// Best effort: the test may have stopped the server.
		s.admin(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return s.urlOf(name)
}

// Exec runs sql on the database at url, failing the test on error.
func Exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	if _, err := connect(t, url).Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// QueryRow returns the one value sql selects from the database at url.
func QueryRow[T any](t testing.TB, url, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := connect(t, url).QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// connect opens a connection closed when the test ends.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// admin runs one statement in the postgres database.
func (s *Server) admin(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.AdminURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts the server down (fast shutdown: open connections are ended)
// and waits until it has; Start starts it again on the same port with the
// same data.
func (s *Server) Stop() error {
	s.mu.Lock()
	proc, exited := s.proc, s.exited
	s.mu.Unlock()
	if proc == nil {
		return nil
	}
	proc.Signal(syscall.SIGINT)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("postgres (pid %d) did not stop within 30s", proc.Pid)
	}
}

// Start starts a stopped server again.
func (s *Server) Start() error { return s.run() }

// Close stops the server at once (immediate shutdown) and removes its
// directory.
func (s *Server) Close() {
	s.mu.Lock()
	proc, exited := s.proc, s.exited
	s.mu.Unlock()
	if proc != nil {
		proc.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-proc.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	os.RemoveAll(s.dir)
	servers.Delete(s)
}

// start creates and starts a server.
func start() (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	removeStale()
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin, cred: cred, password: randomHex(16)}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(s.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--pwfile", pwfile, "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
	initdb.Dir = dir
	initdb.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	os.Remove(pwfile)
	servers.Store(s, struct{}{})
	// The free port may be taken by someone else before postgres binds it:
	// try a few.
	for attempt := 0; ; attempt++ {
		if s.port, err = testutil.FreePort(); err != nil {
			return nil, err
		}
		if err = s.run(); err == nil {
			ok = true
			return s, nil
		} else if attempt == 2 {
			return nil, err
		}
	}
}

// run starts postgres and waits until it accepts connections.
func (s *Server) run() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		// The parent-death signal is sent when the thread that started the
		// child ends, not the process: keep this goroutine on its thread
		// until postgres has ended.
		runtime.LockOSThread()
		cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.dir, "data"),
			"-p", strconv.Itoa(s.port), "-c", "listen_addresses=127.0.0.1",
			"-c", "unix_socket_directories="+s.dir, "-c", "max_connections=300",
			"-c", "logging_collector=off")
		cmd.Dir = s.dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
		cmd.Stdout, cmd.Stderr = logf, logf
		// SIGQUIT: immediate shutdown, the postmaster ends its backends too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		s.mu.Lock()
		s.proc, s.exited = cmd.Process, exited
		s.mu.Unlock()
		started <- nil
		cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, s.AdminURL())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres ended at start:\n%s", s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres does not accept connections after a minute: %v\n%s", err, s.logTail())
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// removeStale removes server directories that test binaries killed with
// SIGKILL left behind (their servers died with them): older than an hour,
// with no live postmaster.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgtest-*"))
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				continue
			}
		}
		os.RemoveAll(dir)
	}
}

// findBin returns the directory of initdb and postgres: that of initdb on
// PATH, else the newest /usr/lib/postgresql/*/bin.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL's initdb and postgres are neither on PATH nor in /usr/lib/postgresql/*/bin: %s", install)
}

func version(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

// credential returns who runs the server: nil (this process's user) unless
// the tests run as root, which PostgreSQL refuses; then serverUser, created
// when missing.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	var added []byte
	for attempt := 0; ; attempt++ {
		if u, err = user.Lookup(serverUser); err == nil {
			break
		} else if attempt == 20 {
			return nil, fmt.Errorf("PostgreSQL does not run as root and creating the user %s failed: %v: %s",
				serverUser, err, strings.TrimSpace(string(added)))
		}
		// Test binaries of several packages may race to create the user:
		// a failed useradd is retried after looking again.
		var aerr error
		added, aerr = exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", serverUser).CombinedOutput()
		if aerr != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %s: %w", serverUser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
