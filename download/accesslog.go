package download

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// logWriter records what the access log needs while passing everything
// through; ReadFrom keeps the sendfile path of the underlying writer.
type logWriter struct {
	http.ResponseWriter
	status  int
	bytes   int64
	wrote   bool
	start   time.Time
	user    string
	licence string // open, denied, required, accepted:cookie, accepted:explicit, declined, …
}

func (l *logWriter) WriteHeader(code int) {
	if !l.wrote {
		l.status, l.wrote = code, true
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *logWriter) Write(b []byte) (int, error) {
	l.wrote = true
	n, err := l.ResponseWriter.Write(b)
	l.bytes += int64(n)
	return n, err
}

func (l *logWriter) ReadFrom(r io.Reader) (int64, error) {
	l.wrote = true
	var n int64
	var err error
	if rf, ok := l.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(l.ResponseWriter, r)
	}
	l.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (l *logWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// logAccess writes one line in the Combined Log Format followed by three
// fields of ours, e.g.
//
//	192.0.2.7 - alice [30/Nov/2026:10:02:03 +0000] "GET /snapshots/kernel/42/vmlinux.img HTTP/1.1" 200 1048576 "-" "curl/8.5.0" licence=accepted:cookie ms=12
//
// The user is the authenticated one ("-" when anonymous); licence is open,
// denied, groups (not a member), groups-ok, required (licence page shown),
// accepted:cookie, accepted:explicit (a script's header or parameter),
// accepted:form (the Accept button), declined, bad-credentials or -.
func (h *Handler) logAccess(l *logWriter, r *http.Request) {
	if h.cfg.AccessLog == nil {
		return
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	user := l.user
	if user == "" {
		user = "-"
	}
	line := fmt.Sprintf("%s - %s [%s] %s %d %d %s %s licence=%s ms=%d\n",
		host, clfField(user), l.start.Format("02/Jan/2006:15:04:05 -0700"),
		strconv.Quote(r.Method+" "+r.URL.RequestURI()+" "+r.Proto),
		l.status, l.bytes, quoteOrDash(r.Referer()), quoteOrDash(r.UserAgent()),
		l.licence, time.Since(l.start).Milliseconds())
	h.alMu.Lock()
	defer h.alMu.Unlock()
	io.WriteString(h.cfg.AccessLog, line)
}

func quoteOrDash(s string) string {
	if s == "" {
		return `"-"`
	}
	return strconv.Quote(s)
}

// clfField keeps a user name on one field: no spaces, no control characters.
func clfField(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == '"' {
			return '_'
		}
		return r
	}, s)
}
