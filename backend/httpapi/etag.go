package httpapi

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"net/http"
	"strings"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/xmlapi"
)

// writeTagged writes the job document doc with a strong ETag over its
// exact bytes, so it changes whenever anything in the document does
// (progress included), and answers 304 Not Modified without a body when the
// request's If-None-Match names it: a frontend polling every few seconds
// then costs the network almost nothing. The list is tagged by writeList.
// Cache-Control no-cache makes browsers revalidate each time instead of
// guessing a freshness.
func writeTagged(w http.ResponseWriter, r *http.Request, doc []byte) {
	sum := sha256.Sum256(doc)
	writeWithTag(w, r, `"`+hex.EncodeToString(sum[:16])+`"`, func() []byte { return doc })
}

// writeList writes the job list of jobs as writeTagged does, with the tag
// of listTag: an unchanged list is answered 304 without being written.
func writeList(w http.ResponseWriter, r *http.Request, jobs []cloudupload.Job) {
	writeWithTag(w, r, listTag(jobs), func() []byte { return xmlapi.JobList(jobs) })
}

// writeWithTag answers 304 when If-None-Match names tag, else the document
// doc makes.
func writeWithTag(w http.ResponseWriter, r *http.Request, tag string, doc func() []byte) {
	h := w.Header()
	h.Set("ETag", tag)
	h.Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, tag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeXML(w, doc())
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

// listTag is the ETag of the job list document of jobs, computed without
// building it: a hash over every field of every job, in order, and over
// the version of the document's writer. The document is a function of
// exactly these, so the tag changes whenever the document does (it also
// changes with the daemon's bookkeeping fields, which merely costs a 200).
// It lets a poll of an unchanged list of thousands of jobs answer 304
// without writing the XML.
func listTag(jobs []cloudupload.Job) string {
	h := sha256.New()
	b := make([]byte, 0, 512)
	b = append(b, listTagVersion...)
	for i := range jobs {
		b = appendJob(b, &jobs[i])
		if len(b) > 32<<10 {
			h.Write(b)
			b = b[:0]
		}
	}
	h.Write(b)
	return `"l` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}

// listTagVersion changes when the list document's form changes (a field
// added to the job document), so that no client keeps an old one.
const listTagVersion = "clouduploadjoblist 2\x00"

// appendJob appends every field of j, numbers fixed-width and strings
// length-prefixed, so that no two different jobs encode alike.
func appendJob(b []byte, j *cloudupload.Job) []byte {
	for _, n := range []int64{j.ID, j.Created, j.Size, int64(j.Pid), j.BytesDone, j.BytesTotal,
		int64(math.Float64bits(j.Rate)), j.ETA, int64(j.PidStart), j.Updated, j.Started, j.Finished} {
		b = binary.LittleEndian.AppendUint64(b, uint64(n))
	}
	for _, s := range []string{string(j.State), j.Details, j.Progress, j.User, j.Target, j.Project,
		j.Repository, j.Package, j.Arch, j.Filename, string(j.Origin), j.Client} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}
