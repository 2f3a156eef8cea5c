package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// writeTagged writes the job or list document doc with a strong ETag over
// its exact bytes, so it changes whenever anything in the document does
// (progress included), and answers 304 Not Modified without a body when the
// request's If-None-Match names it: a frontend polling every few seconds
// then costs the server one document built and hashed, and the network
// almost nothing. Cache-Control no-cache makes browsers revalidate each
// time instead of guessing a freshness.
func writeTagged(w http.ResponseWriter, r *http.Request, doc []byte) {
	sum := sha256.Sum256(doc)
	tag := `"` + hex.EncodeToString(sum[:16]) + `"`
	h := w.Header()
	h.Set("ETag", tag)
	h.Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, tag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeXML(w, doc)
}

// etagMatch reports whether the If-None-Match header value list names tag
// (weak comparison, as RFC 9110 prescribes for If-None-Match) or is "*".
func etagMatch(list, tag string) bool {
	for t := range strings.SplitSeq(list, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == tag {
			return true
		}
	}
	return false
}
