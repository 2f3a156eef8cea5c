package azuretest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Azurite's well-known development account; test values, not secrets.
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is a running azurite-blob.
type Azurite struct {
	// URL is the service's base, https://127.0.0.1:PORT; blobs are
	// path-style: URL/ACCOUNT/CONTAINER/BLOB.
	URL string
	// Endpoint is the blob endpoint template the azure target reads from
	// CLOUDUPLOAD_AZURE_BLOB_ENDPOINT: URL/{account}.
	Endpoint string
	cmd      *exec.Cmd
	mu       sync.Mutex
	out      strings.Builder
}

var listenRE = regexp.MustCompile(`listens on https://127\.0\.0\.1:(\d+)`)

// StartAzurite runs azurite-blob on a free loopback port over HTTPS with a
// certificate from ca, accepting bearer tokens (--oauth basic) as well as
// shared keys, storing into a temporary directory. It stops when the test
// ends.
func StartAzurite(tb testing.TB, ca *CA) *Azurite {
	tb.Helper()
	return StartAzuriteIn(tb, ca, tb.TempDir())
}

// StartAzuriteIn is StartAzurite storing into dir (benchmarks use memory,
// /dev/shm, to measure the client rather than the disk).
func StartAzuriteIn(tb testing.TB, ca *CA, dir string) *Azurite {
	tb.Helper()
	bin, err := exec.LookPath("azurite-blob")
	if err != nil {
		tb.Fatalf("azurite-blob not found on PATH: run `make test-deps` (npm install -g azurite); tests against Azure Storage must not be skipped")
	}
	_, certFile, keyFile := ca.ServerCert(tb)
	a := &Azurite{}
	a.cmd = exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", dir,
		"--cert", certFile, "--key", keyFile, "--oauth", "basic",
		"--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent")
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := a.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	a.cmd.Stderr = a.cmd.Stdout
	if err := a.cmd.Start(); err != nil {
		tb.Fatalf("start azurite-blob: %v", err)
	}
	tb.Cleanup(a.stop)
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			a.mu.Lock()
			a.out.WriteString(line + "\n")
			a.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case port <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case p := <-port:
		a.URL = "https://127.0.0.1:" + p
		a.Endpoint = a.URL + "/{account}"
		return a
	case <-time.After(60 * time.Second):
		tb.Fatalf("azurite-blob did not say where it listens:\n%s", a.Output())
	}
	return nil
}

// Output is what Azurite printed.
func (a *Azurite) Output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// ContainerURL is the URL of a container of the development account.
func (a *Azurite) ContainerURL(container string) string {
	return fmt.Sprintf("%s/%s/%s", a.URL, Account, container)
}

func (a *Azurite) stop() {
	if a.cmd.Process == nil {
		return
	}
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// CPUSeconds is the CPU time Azurite's process has used so far (user and
// system), for benchmarks that report the server's share of the machine.
func (a *Azurite) CPUSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", a.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks; USER_HZ is 100 on Linux
}
