package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestPoller: with a server that sends an ETag, the second poll carries
// If-None-Match and a 304 gives the job read before; without ETag every
// poll reads the document. (A unit test against a recording fake: the
// project's server gains ETag on another branch; the end-to-end tests run
// against whichever server is built.)
func TestPoller(t *testing.T) {
	for _, etag := range []string{`"abc"`, ""} {
		var full, notModified atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if etag != "" {
				w.Header().Set("ETag", etag)
				if r.Header.Get("If-None-Match") == etag {
					notModified.Add(1)
					w.WriteHeader(http.StatusNotModified)
					return
				}
			} else if r.Header.Get("If-None-Match") != "" {
				t.Errorf("If-None-Match sent without an ETag")
			}
			full.Add(1)
			w.Write([]byte(`<clouduploadjob name="3"><state>uploading</state><progress>7</progress></clouduploadjob>`))
		}))
		c, err := New(srv.URL, "")
		if err != nil {
			t.Fatal(err)
		}
		p := c.Poller(3)
		for i := 0; i < 3; i++ {
			j, err := p.Get(context.Background())
			if err != nil || j.ID != 3 || j.State != "uploading" || *j.Progress != 7 {
				t.Fatalf("poll %d: %+v, %v", i, j, err)
			}
		}
		if etag != "" && (full.Load() != 1 || notModified.Load() != 2) || etag == "" && full.Load() != 3 {
			t.Errorf("etag %q: %d full answers, %d 304", etag, full.Load(), notModified.Load())
		}
		srv.Close()
	}
}
