package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/credfile"
)

// Clients finds the pushing client a bearer token belongs to;
// *credfile.Reloader (the server's --clients file, re-read on SIGHUP)
// implements it. Lookup compares in constant time and returns nil for an
// unknown token.
type Clients interface {
	Lookup(token string) *credfile.Entry
}

// Scope keys of a --clients entry. Each is a comma-separated list; a key
// that is absent allows anything.
const (
	ScopeTarget = "target" // the job's target
	ScopeUser   = "user"   // the job's user (the OBS user it publishes for)
	ScopeTree   = "tree"   // mirror target data "tree"
	ScopeSeries = "series" // mirror target data "series": P allows P and P/… on whole segments
)

// caller is who sent a request: a --clients entry, or nil for the shared
// token (--token-file) or a server without credentials, which are not
// limited by scope.
type caller struct {
	client *credfile.Entry
}

type callerKey struct{}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// bearer returns the request's bearer token, "" when it has none.
func bearer(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(auth[len(prefix):])
}

// identify finds who sent r. ok is false when credentials are configured
// and r carries none that is known; then the request is anonymous.
func (s *Server) identify(r *http.Request) (c caller, ok bool) {
	if len(s.token) == 0 && s.clients == nil {
		return caller{}, true
	}
	if s.authorized(r) && len(s.token) > 0 {
		return caller{}, true
	}
	if s.clients != nil {
		if tok := bearer(r); tok != "" {
			if e := s.clients.Lookup(tok); e != nil {
				return caller{client: e}, true
			}
		}
	}
	return caller{}, false
}

// withCaller checks r's credentials and returns r carrying its caller, or
// false when r may not be served without credentials (a change, or any
// request with PrivateReads).
func (s *Server) withCaller(r *http.Request) (*http.Request, bool) {
	c, ok := s.identify(r)
	if !ok && (s.privateReads || r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return r, false
	}
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c)), true
}

// scope checks that the caller of r may create job with target data data
// and returns the client's name to record in the job ("" for the shared
// token). A refusal is EFORBIDDEN naming what was refused.
//
// tree and series are read from the target data, a JSON object, as the
// mirror target reads them ("tree" and "series", case-sensitive, last
// duplicate wins): the daemon knows no target, so a client limited to trees
// or series can only create jobs whose data names them explicitly.
func (s *Server) scope(r *http.Request, job cloudupload.Job, data []byte) (string, error) {
	e := callerOf(r).client
	if e == nil {
		return "", nil
	}
	refuse := func(format string, args ...any) error {
		msg := fmt.Sprintf("client %s ", e.Name) + fmt.Sprintf(format, args...)
		s.log.Warn("request refused: outside the client's scope", "client", e.Name, "method", r.Method, "path", r.URL.Path, "reason", msg)
		return cloudupload.Errorf(cloudupload.EFORBIDDEN, "%s", msg)
	}
	if !e.Allows(ScopeTarget, job.Target) {
		return "", refuse("may not publish to target %s", truncate(job.Target))
	}
	if !e.Allows(ScopeUser, job.User) {
		return "", refuse("may not create jobs for user %s", truncate(job.User))
	}
	trees, limitTrees := e.Get(ScopeTree)
	series, limitSeries := e.Get(ScopeSeries)
	if !limitTrees && !limitSeries {
		return e.Name, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return "", refuse("may publish only to tree %s, series %s: the target data is not a JSON object naming them", list(trees), list(series))
	}
	str := func(k string) (string, bool) {
		var v string
		raw, ok := fields[k]
		return v, ok && json.Unmarshal(raw, &v) == nil && v != ""
	}
	if limitTrees {
		tree, ok := str("tree")
		switch {
		case !ok:
			return "", refuse("may publish only to tree %s: the target data names no tree", list(trees))
		case !e.Allows(ScopeTree, tree):
			return "", refuse("may not publish to tree %s", truncate(tree))
		}
	}
	if limitSeries {
		sr, ok := str("series")
		if !ok {
			return "", refuse("may publish only to series %s (and below): the target data must name its series", list(series))
		}
		if !seriesWithin(sr, series) {
			return "", refuse("may not publish to series %s", truncate(sr))
		}
	}
	return e.Name, nil
}

// seriesWithin reports whether series is one of allowed or below one of
// them on whole segments ("a/b" is below "a", "ab" is not). A series with
// an empty, "." or ".." segment is never within.
func seriesWithin(series string, allowed []string) bool {
	for _, seg := range strings.Split(series, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	for _, p := range allowed {
		p = strings.TrimSuffix(p, "/")
		if series == p || strings.HasPrefix(series, p+"/") {
			return true
		}
	}
	return false
}

// mayChange checks that the caller of r may PUT the image of job id or
// kill it: a client only its own jobs, the shared token any.
func (s *Server) mayChange(r *http.Request, id int64) error {
	e := callerOf(r).client
	if e == nil {
		return nil
	}
	job, err := s.m.Get(id)
	if err != nil {
		return err
	}
	if job.Client != e.Name {
		s.log.Warn("request refused: not the client's job", "client", e.Name, "job", id, "method", r.Method, "path", r.URL.Path)
		return cloudupload.Errorf(cloudupload.EFORBIDDEN, "client %s may not change job %d: another client created it", e.Name, id)
	}
	return nil
}

func list(items []string) string {
	if len(items) == 0 {
		return "(any)"
	}
	return strings.Join(items, ", ")
}
