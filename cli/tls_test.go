package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}, &x509.Certificate{SerialNumber: big.NewInt(7)}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644) != nil ||
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600) != nil {
		t.Fatal("cannot write the certificate")
	}
	return certFile, keyFile
}

// TestHTTPS: the client speaks to a server with --tls-cert when the
// certificate's CA is trusted (here through SSL_CERT_FILE), and refuses an
// untrusted one with one line and exit 3.
func TestHTTPS(t *testing.T) {
	cert, key := selfSigned(t)
	e := start(t, "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(e.url, "https://") {
		t.Fatalf("server URL %s", e.url)
	}
	e.env = []string{"SSL_CERT_FILE=" + cert}
	r := e.run(`{"tree": "demo"}`, nil, "submit", "--target", "mirror", "--data", "-", "-f", "P/R/x86_64/K/img.raw")
	if r.code != 0 || !strings.Contains(r.stderr, "job 1 succeeded") {
		t.Errorf("over HTTPS: exit %d, %q", r.code, r.stderr)
	}
	r = e.run("", []string{"SSL_CERT_FILE=/dev/null"}, "show", "1")
	if r.code != 3 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("untrusted certificate: exit %d, %q", r.code, r.stderr)
	}
}
