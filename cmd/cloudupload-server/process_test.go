package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcessRestart runs the real binary: SIGTERM while an upload runs
// stops the daemon cleanly but leaves the uploader (under cloudupload-shim)
// running; the restarted daemon takes the job over and records its success.
func TestProcessRestart(t *testing.T) {
	bin := buildServer(t)
	dir := t.TempDir()
	release := t.TempDir()
	t.Setenv("RELEASE_DIR", release) // inherited by the server and its uploaders
	p := startProcessIn(t, bin, dir)
	name, _ := submitPutMode(t, p.url, "alice", 3, strings.NewReader("abc"), "slow")
	deadline := time.Now().Add(30 * time.Second)
	var pid int
	for {
		doc := string(get(t, p.url+"/cloudupload/"+name))
		log := string(get(t, p.url+"/cloudupload/"+name+"/_log?nostream=1"))
		if jobField(t, doc, "state") == "uploading" && strings.Contains(log, "tick 2") {
			pid, _ = strconv.Atoi(jobField(t, doc, "pid"))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not uploading: %s", doc)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The job's process group leader is the shim: cloudupload-shim,
	// found beside the server.
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err != nil || exe != filepath.Join(filepath.Dir(bin), "cloudupload-shim") {
		t.Errorf("the job's shim runs %q (%v), want cloudupload-shim beside the server", exe, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v", err)
	}
	if pid == 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("the uploader (pid %d) did not survive the daemon's shutdown", pid)
	}

	q := startProcessIn(t, bin, dir)
	if doc := string(get(t, q.url+"/cloudupload/"+name)); jobField(t, doc, "state") != "uploading" {
		t.Errorf("after restart: %s", doc)
	}
	os.WriteFile(filepath.Join(release, "release"), nil, 0o644)
	if state, _ := waitFinal(t, q.url, name); state != "succeeded" {
		t.Errorf("job %s %s", name, state)
	}
	if log := string(get(t, q.url+"/cloudupload/"+name+"/_log?nostream=1")); !strings.Contains(log, "released\n") {
		t.Errorf("log: %q", log)
	}
}

// TestTLS serves HTTPS; error status lines still carry the summary.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	e := start(t, "--tls-cert", cert, "--tls-key", keyFile)
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(t, der))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + e.main.Addr()
	for path, want := range map[string]string{"/": "200 OK", "/cloudupload/77": "404 no such job"} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Status != want {
			t.Errorf("%s: %s, want %s", path, resp.Status, want)
		}
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
