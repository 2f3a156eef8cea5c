package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
)

func TestUIFiles(t *testing.T) {
	ts, _ := start(t, Config{})
	for path, ctype := range map[string]string{
		"/ui/":          "text/html",
		"/ui/app.js":    "text/javascript",
		"/ui/style.css": "text/css",
	} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(b) == 0 {
			t.Errorf("%s: %s %q, %d bytes", path, resp.Status, resp.Header.Get("Content-Type"), len(b))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
	// /ui goes to /ui/; only GET and HEAD.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(ts.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if status, _ := do(t, ts, request{method: "POST", path: "/ui/"}); status != "400 unknown request: POST:/ui/" {
		t.Errorf("POST /ui/: %s", status)
	}
	// Without Metrics configured, /metrics is an unknown path as before.
	if status, _ := do(t, ts, request{method: "GET", path: "/metrics"}); status != "400 unknown request: GET:/metrics" {
		t.Errorf("GET /metrics without metrics: %s", status)
	}
}

func TestMetricsRoutes(t *testing.T) {
	m := NewMetrics()
	ts, _ := start(t, Config{Metrics: m})
	m.SetStats(func() backend.Stats { return backend.Stats{MaxUploads: 4} })
	for _, path := range []string{"/cloudupload/2", "/cloudupload/2", "/cloudupload/999", "/cloudupload/2/_log?nostream=1",
		"/cloudupload", "/nowhere/alice", "/cloudupload/x%2Fy", "/ui/app.js"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	m.JobFinished(cloudupload.Job{Target: "mirror", State: cloudupload.StateSucceeded, Created: 100, Finished: 130}, "succeeded")
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`cloudupload_http_requests_total{code="200",route="GET /cloudupload/{id}"} 2`,
		`cloudupload_http_requests_total{code="404",route="GET /cloudupload/{id}"} 1`,
		`cloudupload_http_requests_total{code="200",route="GET /cloudupload/{id}/_log"} 1`,
		`cloudupload_http_requests_total{code="200",route="GET /cloudupload"} 1`,
		`cloudupload_http_requests_total{code="400",route="other"} 2`, // /nowhere/alice, /cloudupload/x/y
		`cloudupload_http_requests_total{code="200",route="GET /ui/"} 1`,
		`cloudupload_job_duration_seconds_bucket{outcome="succeeded",target="mirror",le="32"} 1`,
		`cloudupload_uploader_exits_total{outcome="succeeded",target="mirror"} 1`,
		`cloudupload_uploads_running 0`,
		`cloudupload_upload_slots_free 4`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, bad := range []string{"alice", "nowhere", "999", "x/y"} {
		if strings.Contains(text, `"`+bad) || strings.Contains(text, bad+`"`) {
			t.Errorf("metrics show %q", bad)
		}
	}
}
