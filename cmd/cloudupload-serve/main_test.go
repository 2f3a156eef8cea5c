package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/download"
	"github.com/cloudupload/cloudupload/internal/credfile"
	"github.com/cloudupload/cloudupload/internal/testutil"
)

func TestFlags(t *testing.T) {
	var out, errb bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errb}
	if err := m.ParseFlags([]string{"--help"}); err != errHelp || !strings.Contains(out.String(), "-trust-proxy ADDR") || errb.Len() != 0 {
		t.Errorf("--help: %v, stdout %q, stderr %q", err, out.String(), errb.String())
	}
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no tree to serve"},
		{[]string{"--mirror", "x"}, `want NAME=DIR`},
		{[]string{"--mirror", "../x=" + dir}, `must not`},
		{[]string{"--mirror", "a=" + dir, "--mirror", "a=" + dir}, "given twice"},
		{[]string{"--mirror", "a=" + dir, "--tls-cert", "c"}, "go together"},
		{[]string{"--mirror", "a=" + dir, "--trust-proxy", "proxy.example"}, "want an IP address"},
		{[]string{"--mirror", "a=" + dir, "--user-header", "X User"}, "not a header name"},
		{[]string{"--mirror", "a=" + dir, "--log-level", "loud"}, "--log-level"},
		{[]string{"--mirror", "a=" + dir, "extra"}, "unexpected argument"},
	} {
		m := &Main{Stdout: io.Discard, Stderr: io.Discard}
		if err := m.ParseFlags(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
	m = &Main{Stdout: io.Discard, Stderr: io.Discard}
	if err := m.ParseFlags([]string{"--mirror", "a=" + dir, "--trust-proxy", "10.1.2.3"}); err != nil || m.proxy.String() != "10.1.2.3/32" {
		t.Errorf("--trust-proxy: %v %v", err, m.proxy)
	}
}

func start(t *testing.T, args []string, hup chan os.Signal) (*Main, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	m := &Main{Stdout: io.Discard, Stderr: logs}
	if err := m.ParseFlags(append([]string{"--listen", "127.0.0.1:0"}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background(), hup); err != nil {
		t.Fatal(err)
	}
	return m, logs
}

func get(t *testing.T, url string, headers ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServe runs the server as the command wires it: a real tree, users
// re-read on SIGHUP, the access and user-data logs in files, and a cookie
// key that survives a restart.
func TestServe(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "b/BUILD-INFO.txt"), []byte("Format-Version: 0.5\n\nFiles-Pattern: *.bin\nLicense-Type: protected\nAuth-Groups: team\nCollect-User-Data: yes\nLicense-Text: <p>EULA</p>\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b/x.bin"), []byte("payload"), 0o644)
	users := filepath.Join(state, "users")
	os.WriteFile(users, []byte("ann sha256="+credfile.HashToken("tok-1")+" groups=team\n"), 0o600)
	access, userData, key := filepath.Join(state, "access.log"), filepath.Join(state, "ud.log"), filepath.Join(state, "cookie.key")
	args := []string{"--mirror", "m=" + dir, "--users", users, "--access-log", access, "--user-data-log", userData, "--cookie-key", key}
	hup := make(chan os.Signal, 1)
	m, logs := start(t, args, hup)
	base := "http://" + m.Addr()
	hdrs := []string{download.AcceptHeader + ": " + download.LicenceDigest("<p>EULA</p>"), download.NameHeader + ": Ann", download.EmailHeader + ": ann@example.org"}
	if code, body := get(t, base+"/m/b/x.bin", append(hdrs, "Authorization: Bearer tok-1")...); code != 200 || body != "payload" {
		t.Fatalf("with token: %d %q", code, body)
	}
	os.WriteFile(users, []byte("ann sha256="+credfile.HashToken("tok-2")+" groups=team\n"), 0o600)
	os.Rename(access, access+".1") // as logrotate does, before its SIGHUP
	hup <- syscall.SIGHUP
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "reopened the log files") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := get(t, base+"/m/b/x.bin", append(hdrs, "Authorization: Bearer tok-1")...); code != 401 {
		t.Errorf("old token after reload: %d", code)
	}
	if code, _ := get(t, base+"/m/b/x.bin", append(hdrs, "Authorization: Bearer tok-2")...); code != 200 {
		t.Errorf("new token after reload: %d", code)
	}
	k1, _ := os.ReadFile(key)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m, _ = start(t, args, nil)
	defer m.Close()
	if k2, _ := os.ReadFile(key); len(k1) != 32 || !bytes.Equal(k1, k2) {
		t.Errorf("the cookie key changed across a restart")
	}
	if old, _ := os.ReadFile(access + ".1"); strings.Count(string(old), "\n") != 1 {
		t.Errorf("rotated access log:\n%s", old)
	}
	al, _ := os.ReadFile(access)
	if n := strings.Count(string(al), "\n"); n != 2 || !strings.Contains(string(al), " - ann [") || strings.Contains(string(al), "tok-") {
		t.Errorf("access log:\n%s", al)
	}
	ud, _ := os.ReadFile(userData)
	if strings.Count(string(ud), "ann@example.org") != 2 {
		t.Errorf("user data log:\n%s", ud)
	}
	if fi, _ := os.Stat(userData); fi.Mode().Perm() != 0o600 {
		t.Errorf("user data log mode %v", fi.Mode())
	}
	if strings.Contains(logs.String(), "tok-") {
		t.Errorf("a token in the log:\n%s", logs.String())
	}
}

func TestThemeCSS(t *testing.T) {
	dir := t.TempDir()
	css := filepath.Join(dir, "theme.css")
	os.WriteFile(css, []byte("x{}</STYLE><script>"), 0o644)
	m := &Main{Stdout: io.Discard, Stderr: io.Discard}
	if err := m.ParseFlags([]string{"--mirror", "a=" + dir, "--listen", "127.0.0.1:0", "--theme-css", css}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "without </style") {
		t.Errorf("a stylesheet closing the style element: %v", err)
	}
	os.WriteFile(css, []byte("body.theme-acme h1{color:#c00}"), 0o644)
	m = &Main{Stdout: io.Discard, Stderr: io.Discard}
	if err := m.ParseFlags([]string{"--mirror", "a=" + dir, "--listen", "127.0.0.1:0", "--theme-css", css, "--access-log", ""}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if code, body := get(t, "http://"+m.Addr()+"/a/", "Accept: text/html"); code != 200 || !strings.Contains(body, "body.theme-acme h1{color:#c00}") {
		t.Errorf("listing without the theme stylesheet: %d\n%s", code, body)
	}
}
