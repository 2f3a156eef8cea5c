package download

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// identity is who made a request.
type identity struct {
	user   string // "" when anonymous
	groups []string
	via    string // "token", "basic", "proxy" or ""
	bad    bool   // credentials were sent and are wrong
}

func (id identity) inAny(groups []string) bool {
	for _, g := range groups {
		for _, h := range id.groups {
			if g == h {
				return true
			}
		}
	}
	return false
}

// identify reads a bearer token, an HTTP Basic password (the token, the
// user name must be the entry's name), or, only from the trusted proxy,
// its user and groups headers. Headers of the same names from any other
// address are ignored.
func (h *Handler) identify(r *http.Request) identity {
	if auth := r.Header.Get("Authorization"); auth != "" {
		if h.cfg.Users == nil {
			return identity{bad: true}
		}
		if tok, ok := strings.CutPrefix(auth, "Bearer "); ok {
			if e := h.cfg.Users.Lookup(strings.TrimSpace(tok)); e != nil {
				g, _ := e.Get("groups")
				return identity{user: e.Name, groups: g, via: "token"}
			}
			return identity{bad: true}
		}
		if name, tok, ok := r.BasicAuth(); ok {
			if e := h.cfg.Users.Lookup(tok); e != nil && e.Name == name {
				g, _ := e.Get("groups")
				return identity{user: e.Name, groups: g, via: "basic"}
			}
		}
		return identity{bad: true}
	}
	if h.fromProxy(r) {
		if u := strings.TrimSpace(r.Header.Get(h.cfg.UserHeader)); u != "" {
			// One header with a comma-separated list, or one header
			// per group (oauth2-proxy adds a value per group).
			var groups []string
			for _, v := range r.Header.Values(h.cfg.GroupsHeader) {
				for _, g := range strings.Split(v, ",") {
					if g = strings.TrimSpace(g); g != "" {
						groups = append(groups, g)
					}
				}
			}
			return identity{user: u, groups: groups, via: "proxy"}
		}
	}
	return identity{}
}

func (h *Handler) fromProxy(r *http.Request) bool {
	if !h.cfg.TrustProxy.IsValid() {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && h.cfg.TrustProxy.Contains(a.Unmap())
}
