package httpapi

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/xmlapi"
)

// logFile is GET /cloudupload/<id>/_log: the uploader's log from start
// (negative: from the end) to end. With nostream=1, or once the job is
// final, what exists now; otherwise the log is streamed as it grows until
// the job is final and everything is sent. view=entry answers the log's
// size and mtime. A job without a log yet has an empty log.
func (s *Server) logFile(w http.ResponseWriter, r *http.Request, name string) {
	id, job, err := s.getJob(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q, err := parseQuery(r.URL.RawQuery, "start", "end", "nostream", "view")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var start, end int64 = 0, -1
	if v, ok := q["start"]; ok {
		if start, err = parseOffset("start", v, true); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if v, ok := q["end"]; ok {
		if end, err = parseOffset("end", v, false); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	nostream := false
	switch v := q.get("nostream"); v {
	case "", "0":
	case "1":
		nostream = true
	default:
		s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "nostream must be 0 or 1, not %q", truncate(v)))
		return
	}
	path, err := s.m.LogPath(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := openLog(path)
	if f == nil && err == nil {
		// The job may have ended and its log moved since it was read.
		if j, jerr := s.m.Get(id); jerr == nil && j.State != job.State {
			job = j
			if path, err = s.m.LogPath(id); err == nil {
				f, err = openLog(path)
			}
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if f != nil {
		defer f.Close()
	}
	var size, mtime int64
	if f != nil {
		fi, err := f.Stat()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		size, mtime = fi.Size(), fi.ModTime().Unix()
	}
	switch view := q.get("view"); view {
	case "":
	case "entry":
		if f == nil {
			mtime = job.Created
		}
		writeXML(w, xmlapi.LogEntry(size, mtime))
		return
	default:
		s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "unsupported view '%s'", truncate(view)))
		return
	}
	if start < 0 {
		start = max(size+start, 0)
	}
	w.Header().Set("Content-Type", "text/plain")
	if nostream || job.State.Final() || r.Method == http.MethodHead {
		if start > size {
			s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "start out of range: %d", start))
			return
		}
		n := size - start
		if end >= 0 {
			n = max(min(n, end-start), 0)
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		if r.Method != http.MethodHead && n > 0 {
			io.Copy(w, io.NewSectionReader(f, start, n))
		}
		return
	}
	s.stream(w, r, id, path, f, start, end)
}

// stream sends the log from offset on as it grows, until the job is final
// and everything written before that was sent, the end offset is reached,
// or the client goes away.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, id int64, path string, f *os.File, offset, end int64) {
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	buf := make([]byte, 64<<10)
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	for {
		// The state is read before the file: once it is final, the
		// uploader has exited and the read below sees all it wrote.
		job, err := s.m.Get(id)
		final := err != nil || job.State.Final()
		if f == nil {
			// The log may not exist yet, or have moved when the job ended
			// (the Manager archives finished jobs): ask for its path again.
			if p, err := s.m.LogPath(id); err == nil {
				path = p
			}
			if f, _ = openLog(path); f != nil {
				defer f.Close()
			}
		}
		for f != nil && (end < 0 || offset < end) {
			p := buf
			if end >= 0 && int64(len(p)) > end-offset {
				p = p[:end-offset]
			}
			n, err := f.ReadAt(p, offset)
			if n > 0 {
				if _, werr := w.Write(p[:n]); werr != nil {
					return
				}
				offset += int64(n)
			}
			if err != nil {
				break
			}
		}
		if final || end >= 0 && offset >= end {
			return
		}
		select {
		case <-s.stopping:
			return // the server shuts down; the client may ask again
		default:
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
		case <-tick.C:
		}
	}
}

// parseOffset parses the start or end parameter: a decimal byte offset of
// at most 18 digits, negative only for start.
func parseOffset(name string, v []string, negative bool) (int64, error) {
	if len(v) != 1 {
		return 0, cloudupload.Errorf(cloudupload.EINVALID, "parameter '%s' set multiple times", name)
	}
	s := v[0]
	bad := cloudupload.Errorf(cloudupload.EINVALID, "%s must be a byte offset, not %q", name, truncate(s))
	neg := negative && strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	if s == "" || len(s) > MaxIDDigits {
		return 0, bad
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, bad
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, bad
	}
	if neg {
		n = -n
	}
	return n, nil
}

// openLog opens a job log; a log that does not exist (yet) is (nil, nil).
func openLog(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return f, err
}
