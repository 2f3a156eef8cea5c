package httpapi

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/cloudupload/cloudupload"
)

// Holders is implemented by a Manager whose jobs may be held by other nodes
// of a cluster (backend.Manager with a shared store). Holder returns the
// base URL of the other live node that holds unfinished job id, or "" when
// this node answers for the job itself.
type Holders interface {
	Holder(id int64) string
}

// headerForwarded marks a request one node passed on to another, which
// then answers it itself: a request is forwarded at most once.
const headerForwarded = "X-Cloudupload-Forwarded"

// forward passes a request about job name on to the node that holds it, so
// that every node serves the whole API: the job's live figures, its
// running log, a kill, its image. It reports whether it did.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, name string) bool {
	h, ok := s.m.(Holders)
	if !ok || r.Header.Get(headerForwarded) != "" {
		return false
	}
	id, ok := ParseID(name)
	if !ok {
		return false
	}
	base := h.Holder(id)
	if base == "" {
		return false
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		s.log.Error("a node advertises an unusable URL", "job", id, "url", base)
		return false
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
			pr.Out.Header.Set(headerForwarded, "1")
		},
		FlushInterval: 100 * time.Millisecond, // a streamed log stays live
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Warn("cannot reach the node that holds the job", "job", id, "node", base, "err", err)
			s.fail(w, r, cloudupload.Errorf(cloudupload.EUNAVAILABLE, "the node that holds job %d cannot be reached; try again", id))
		},
	}
	p.ServeHTTP(w, r)
	return true
}
