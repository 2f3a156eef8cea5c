package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"
)

// stalledPut creates a job by skeleton for an image of size bytes and
// starts its PUT on a raw connection, sending only sent bytes of the body.
// It returns the job's name and the connection, stalled mid-body.
func stalledPut(t *testing.T, e *env, size, sent int) (string, net.Conn) {
	t.Helper()
	code, status, body := e.do("POST", "/cloudupload", "text/xml", skeletonFor("alice", int64(size), "instant"))
	if code != 200 {
		t.Fatalf("skeleton: %s %s", status, body)
	}
	name := jobField(t, body, "name")
	u, _ := url.Parse(e.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "PUT /cloudupload/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", name, u.Host, size)
	if _, err := conn.Write(make([]byte, sent)); err != nil {
		t.Fatal(err)
	}
	e.waitState(name, "receiving")
	return name, conn
}

// waitState polls job name until it is in state.
func (e *env) waitState(name, state string) string {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, doc := e.do("GET", "/cloudupload/"+name, "", "")
		if jobField(e.t, doc, "state") == state {
			return doc
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s not %s after 30s: %s", name, state, doc)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answerAndClose reads the server's answer on conn and requires that the
// server then closes the connection.
func answerAndClose(t *testing.T, conn net.Conn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the server did not close the PUT's connection: %v (read %q)", err, b)
	}
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

// TestKillStalledPut: a kill of a job whose PUT stalls mid-body does not
// wait for the kill grace (an hour here): the job is final, the PUT is
// answered and its connection closed, the partial image removed.
func TestKillStalledPut(t *testing.T) {
	e := start(t, "--kill-grace", "1h")
	name, conn := stalledPut(t, e, 8<<20, 1<<20)
	code, status, body := e.do("POST", "/cloudupload/"+name+"?cmd=kill", "", "")
	if code != 200 {
		t.Fatalf("kill: %s %s", status, body)
	}
	_, _, doc := e.do("GET", "/cloudupload/"+name, "", "")
	if jobField(t, doc, "state") != "failed" || jobField(t, doc, "details") != "killed" {
		t.Fatalf("after kill:\n%s", doc)
	}
	if line := answerAndClose(t, conn); line != "HTTP/1.1 400 job was killed" {
		t.Errorf("the stalled PUT was answered %q", line)
	}
	if _, err := os.Stat(filepath.Join(e.state, "done", name, "image")); !os.IsNotExist(err) {
		t.Errorf("the partial image is still there: %v", err)
	}
}

// TestStalledPutTimesOut: a PUT that stops sending fails its job after
// --receive-idle-timeout, and its connection is closed.
func TestStalledPutTimesOut(t *testing.T) {
	e := start(t, "--receive-idle-timeout", "500ms")
	name, conn := stalledPut(t, e, 4<<20, 64<<10)
	doc := e.wait(name)
	if d := jobField(t, doc, "details"); d != "the image stopped arriving (nothing received for 500ms)" {
		t.Fatalf("stalled PUT: %s", doc)
	}
	if line := answerAndClose(t, conn); line != "HTTP/1.1 400 the image stopped arriving (nothing received for 500ms)" {
		t.Errorf("the stalled PUT was answered %q", line)
	}
}

// smallFS mounts a tmpfs of size bytes at a new directory. It needs root
// (as CI has); a machine that refuses fails the test rather than skip it.
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	os.Mkdir(dir, 0o755)
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("cannot mount a %d-byte tmpfs for the full-disk test (it needs root): %v: %s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// putBody PUTs size zero bytes to job name and returns the answer's
// status line and body.
func putBody(t *testing.T, e *env, name string, size int64) (string, string) {
	t.Helper()
	req, _ := http.NewRequest("PUT", e.url+"/cloudupload/"+name, io.LimitReader(zeros{}, size))
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The server may answer before it read the whole body and close.
		t.Logf("PUT: %v", err)
		return "", ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, string(b)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestFullDisk runs the daemon with its state on a 32 MiB file system: an
// image larger than the disk fails its job with a reason and a 507, the
// space is freed, and the server goes on working. With a free-space floor,
// images that would go below it are refused before a byte is written.
func TestFullDisk(t *testing.T) {
	const fsSize = 32 << 20
	small := smallFS(t, fsSize)
	testutil.StopStrays(t, small)
	state := filepath.Join(small, "state")
	e := start(t, "--state-dir", state, "--min-free-space", "0")
	e.state = state
	before := freeBytes(t, small)

	code, status, body := e.do("POST", "/cloudupload", "text/xml", skeletonFor("alice", 64<<20, "instant"))
	if code != 200 {
		t.Fatalf("skeleton: %s %s", status, body)
	}
	name := jobField(t, body, "name")
	status, answer := putBody(t, e, name, 64<<20)
	if status != "" && (status != "507 the server ran out of disk space" || !strings.Contains(answer, `<status code="507">`)) {
		t.Errorf("PUT on a full disk answered %s\n%s", status, answer)
	}
	doc := e.wait(name)
	if d := jobField(t, doc, "details"); jobField(t, doc, "state") != "failed" || d != "the server ran out of disk space" {
		t.Fatalf("job on a full disk:\n%s", doc)
	}
	if after := freeBytes(t, small); after < before-(1<<20) {
		t.Errorf("%d bytes free after the failed job, %d before: the partial image was kept", after, before)
	}
	// The server goes on.
	code, _, body = e.do("POST", "/cloudupload", "text/xml", skeletonFor("alice", 4096, "instant"))
	name = jobField(t, body, "name")
	if status, _ := putBody(t, e, name, 4096); code != 200 || status != "200 OK" {
		t.Fatalf("small job after the full disk: %d, PUT %s", code, status)
	}
	if doc := e.wait(name); jobField(t, doc, "state") != "succeeded" {
		t.Fatalf("small job after the full disk:\n%s", doc)
	}

	// A floor of 24 MiB on the 32 MiB file system; one job was created
	// before it was set.
	_, _, body = e.do("POST", "/cloudupload", "text/xml", skeletonFor("alice", 16<<20, "instant"))
	early := jobField(t, body, "name")
	e.main.Close()
	e.args = append(e.args, "--min-free-space", "24M")
	e.restart()
	_, _, list := e.do("GET", "/cloudupload", "", "")
	jobs := strings.Count(list, "<clouduploadjob ")
	code, status, body = e.do("POST", query, "application/octet-stream", "instant") // a 1 MiB image, but: below the floor?
	if code != 200 {
		t.Fatalf("create of 1 MiB with 30 MiB free and a 24 MiB floor: %s %s", status, body)
	}
	e.wait(jobField(t, body, "name"))
	code, status, body = e.do("POST", "/cloudupload", "text/xml", skeletonFor("alice", 16<<20, "instant"))
	if code != 507 || status != "507 the server is low on disk space; try again later" {
		t.Errorf("skeleton for 16 MiB with a 24 MiB floor: %s\n%s", status, body)
	}
	_, _, list = e.do("GET", "/cloudupload", "", "")
	if n := strings.Count(list, "<clouduploadjob "); n != jobs+1 {
		t.Errorf("%d jobs after a refused create, want %d", n, jobs+1)
	}
	// The job created before the floor: its PUT is refused before a byte
	// is written.
	name = early
	free := freeBytes(t, small)
	req, _ := http.NewRequest("PUT", e.url+"/cloudupload/"+name, io.LimitReader(zeros{}, 16<<20))
	req.ContentLength = 16 << 20
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.Status != "507 the server is low on disk space; try again later" {
			t.Errorf("PUT of 16 MiB with a 24 MiB floor: %s", resp.Status)
		}
	}
	if got := freeBytes(t, small); got < free-(64<<10) {
		t.Errorf("a refused PUT wrote %d bytes", free-got)
	}
	if doc := e.wait(name); jobField(t, doc, "details") != "the server is low on disk space; try again later" {
		t.Errorf("refused PUT:\n%s", doc)
	}
}
