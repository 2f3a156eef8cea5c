package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// getTagged sends GET path with If-None-Match: tag (none when empty) and
// returns the status code, the ETag and the body.
func (e *env) getTagged(path, tag string) (int, string, string) {
	e.t.Helper()
	code, _, body, hdr := e.doFull("GET", path, "", "", "If-None-Match", tag)
	return code, hdr.Get("ETag"), body
}

// doFull sends a request (hdr: name, value pairs; empty values are left
// out) and returns the status code and line, the body and the headers.
func (e *env) doFull(method, path, ctype, body string, hdr ...string) (int, string, string, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] != "" {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Status, string(b), resp.Header
}

// A real daemon and an uploader that reports progress: the job document
// shows it moving (percentage in OBS's <progress>, bytes, rate and ETA
// after OBS's elements), polling with the ETag costs a 304 while nothing
// changed, and the finished job keeps 100%. Then the metrics count it.
func TestProgressEndToEnd(t *testing.T) {
	e := start(t)
	name := e.create("progress")
	var tag string
	var seen []int
	deadline := time.Now().Add(30 * time.Second)
	notModified := 0
	for len(seen) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("progress seen: %v", seen)
		}
		code, newTag, doc := e.getTagged("/cloudupload/"+name, tag)
		switch code {
		case http.StatusNotModified:
			notModified++
			if newTag != tag || doc != "" {
				t.Fatalf("304 with ETag %q (sent %q) and body %q", newTag, tag, doc)
			}
		case http.StatusOK:
			if newTag == tag {
				t.Fatalf("200 with the ETag sent: %q", tag)
			}
			tag = newTag
			if jobField(t, doc, "state") != "uploading" || jobField(t, doc, "progress") == "" {
				break
			}
			pct, _ := strconv.Atoi(jobField(t, doc, "progress"))
			done, _ := strconv.ParseInt(jobField(t, doc, "bytesdone"), 10, 64)
			if jobField(t, doc, "bytestotal") != "209715200" || int64(pct) != done*100/209715200 {
				t.Errorf("inconsistent progress:\n%s", doc)
			}
			if n := len(seen); n == 0 || seen[n-1] != pct {
				if n > 0 && pct < seen[n-1] {
					t.Errorf("progress went back: %v then %d", seen, pct)
				}
				seen = append(seen, pct)
			}
			if len(seen) >= 3 && (jobField(t, doc, "bytespersecond") == "" || jobField(t, doc, "etaseconds") == "") {
				t.Errorf("no rate or ETA while moving:\n%s", doc)
			}
			// OBS's elements first, ours after.
			if !regexp.MustCompile(`(?s)<progress>.*<created>.*<pid>.*</pid>\s*<bytesdone>.*<bytestotal>`).MatchString(doc) {
				t.Errorf("element order:\n%s", doc)
			}
		default:
			t.Fatalf("GET: %d %s", code, doc)
		}
		time.Sleep(30 * time.Millisecond)
	}
	// While the job moves, a poll may or may not find it changed (on a
	// loaded machine the uploader can report between any two polls); once
	// it is final, nothing changes: its tag must answer 304.
	t.Logf("%d polls of the moving job answered 304", notModified)
	// The list moves too, with its own ETag.
	code, listTag, list := e.getTagged("/cloudupload", "")
	if code != 200 || listTag == "" || !strings.Contains(list, "<bytesdone>") {
		t.Errorf("list: %d %q\n%s", code, listTag, list)
	}
	os.WriteFile(filepath.Join(e.release, "release"), nil, 0o644)
	doc := e.wait(name)
	if jobField(t, doc, "state") != "succeeded" || jobField(t, doc, "progress") != "100" ||
		jobField(t, doc, "bytesdone") != "209715200" || jobField(t, doc, "etaseconds") != "" {
		t.Errorf("finished job:\n%s", doc)
	}
	_, tag, _ = e.getTagged("/cloudupload/"+name, "")
	if code, _, body := e.getTagged("/cloudupload/"+name, tag); code != http.StatusNotModified || body != "" {
		t.Errorf("a finished job polled with its ETag: %d %q", code, body)
	}

	// Two more jobs: one fails, one is killed; then the metrics.
	failed := e.create("fail")
	e.wait(failed)
	os.Remove(filepath.Join(e.release, "release"))
	killed := e.create("slow")
	for jobField(t, e.getDoc(killed), "state") != "uploading" {
		time.Sleep(20 * time.Millisecond)
	}
	if code, _, body := e.do("POST", "/cloudupload/"+killed+"?cmd=kill", "", ""); code != 200 {
		t.Fatalf("kill: %s", body)
	}
	code, _, metrics, hdr := e.doFull("GET", "/metrics", "", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %s", code, hdr.Get("Content-Type"))
	}
	for _, want := range []string{
		`cloudupload_jobs{state="succeeded",target="test"} 1`,
		`cloudupload_jobs{state="failed",target="test"} 2`,
		`cloudupload_job_duration_seconds_count{outcome="succeeded",target="test"} 1`,
		`cloudupload_job_duration_seconds_count{outcome="failed",target="test"} 2`,
		`cloudupload_uploader_exits_total{outcome="succeeded",target="test"} 1`,
		`cloudupload_uploader_exits_total{outcome="failed",target="test"} 1`,
		`cloudupload_uploader_exits_total{outcome="killed",target="test"} 1`,
		`cloudupload_received_bytes_total 3.145728e+06`, // three 1 MiB images
		`cloudupload_uploaded_bytes_total 2.097152e+08`,
		`cloudupload_uploads_running 0`,
		`cloudupload_upload_slots_free 4`,
		`cloudupload_upload_rate_bytes_per_second 0`,
		`cloudupload_http_requests_total{code="200",route="POST /cloudupload"} 3`,
		`cloudupload_http_requests_total{code="304",route="GET /cloudupload/{id}"} `,
		`cloudupload_http_request_duration_seconds_bucket{route="GET /cloudupload/{id}",le="0.005"} `,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// No user data in labels: no user, no job id, no raw path.
	for _, bad := range []string{"alice", "jeos", `/cloudupload/` + name + `"`} {
		if strings.Contains(metrics, bad) {
			t.Errorf("metrics show %q", bad)
		}
	}
	if t.Failed() {
		t.Log(metrics)
	}
}

func (e *env) getDoc(name string) string {
	e.t.Helper()
	_, _, doc := e.do("GET", "/cloudupload/"+name, "", "")
	return doc
}
