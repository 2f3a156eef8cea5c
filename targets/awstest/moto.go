// Package awstest starts a real AWS-compatible server (moto) on a free
// loopback port for tests. A missing moto_server fails the test: CI must
// never pass by skipping AWS tests. Install it with `pip install
// 'moto[server]'` where the machine image does not have it.
package awstest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Moto is a running moto_server.
type Moto struct {
	URL string // http://127.0.0.1:PORT
	cmd *exec.Cmd
	out *lockedWriter
}

// Static credentials moto accepts; they are test values, not secrets.
const (
	AccessKey = "AKIAIOSFODNN7EXAMPLE"
	SecretKey = "test-secret-key-not-a-real-one"
	Region    = "us-east-1"
)

// Start starts moto_server and stops it when the test ends.
func Start(tb testing.TB) *Moto {
	tb.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		tb.Fatalf("moto_server not found on PATH: install it with `pip install 'moto[server]'` (tests against AWS APIs must not be skipped)")
	}
	var lastErr error
	for try := 0; try < 5; try++ {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		m := &Moto{URL: fmt.Sprintf("http://127.0.0.1:%d", port), out: &lockedWriter{w: &bytes.Buffer{}}}
		m.cmd = exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
		m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
		m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := m.cmd.Start(); err != nil {
			tb.Fatalf("start moto_server: %v", err)
		}
		if lastErr = m.wait(30 * time.Second); lastErr == nil {
			tb.Cleanup(m.stop)
			return m
		}
		m.stop()
	}
	tb.Fatalf("moto_server did not come up: %v", lastErr)
	return nil
}

func (m *Moto) wait(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	exited := make(chan struct{})
	go func() { m.cmd.Wait(); close(exited) }()
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("moto_server exited: %s", m.out.String())
		default:
		}
		resp, err := http.Get(m.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no answer within %s", limit)
}

func (m *Moto) stop() {
	if m.cmd.Process != nil {
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Reset clears every resource moto holds.
func (m *Moto) Reset(tb testing.TB) {
	resp, err := http.Post(m.URL+"/moto-api/reset", "application/json", nil)
	if err != nil {
		tb.Fatalf("reset moto: %v", err)
	}
	resp.Body.Close()
}

// Environ is the environment that points the SDK's default chain and every
// client (STS included) at this server.
func (m *Moto) Environ() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL=" + m.URL,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_CA_BUNDLE=",
	}
}

// Setenv sets Environ in the test process for the test's duration.
func (m *Moto) Setenv(t *testing.T) {
	for _, kv := range m.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Log is what moto printed so far, for failure messages.
func (m *Moto) Log() string { return m.out.String() }

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() > 1<<20 {
		return len(p), nil
	}
	return l.w.Write(p)
}
