package httpapi

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/cloudupload/cloudupload"
)

// The dashboard: plain HTML, CSS and JavaScript embedded in the binary (no
// build step), served at /ui/. It reads the public XML API only (fetch and
// DOMParser), so it shows exactly what an OBS frontend sees: no secret and
// no server path is in it. The token a kill needs (when the server requires
// one) is asked for in the page and kept in the tab's sessionStorage, never
// in a URL.
const uiPrefix = "/ui/"

//go:embed ui
var uiFiles embed.FS

// newUI returns the handler of the dashboard's files.
func newUI() http.Handler {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	files := http.StripPrefix(uiPrefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// serveExtra serves what is not OBS's API: the dashboard under /ui/ and the
// metrics at /metrics (GET and HEAD only, open like the API's GETs). It
// reports whether it answered.
func (s *Server) serveExtra(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	isUI := p == "/ui" || strings.HasPrefix(p, uiPrefix)
	isMetrics := p == "/metrics" && s.metrics != nil
	if !isUI && !isMetrics {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "unknown request: %s:%s", r.Method, truncate(p)))
		return true
	}
	switch {
	case isMetrics:
		s.metrics.ServeHTTP(w, r)
	case p == "/ui":
		http.Redirect(w, r, uiPrefix, http.StatusMovedPermanently)
	default:
		s.ui.ServeHTTP(w, r)
	}
	return true
}
