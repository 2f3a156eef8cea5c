package httpapi

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// writeRaw writes an error response with reason as the status line's
// phrase by taking over the HTTP/1.x connection, then closes it. It reports
// false when the connection cannot be taken over (nothing was written then).
func writeRaw(w http.ResponseWriter, r *http.Request, status int, reason string, doc []byte) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	h := w.Header().Clone()
	conn, rw, err := hj.Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	h.Set("Content-Type", "text/xml")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	rw.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + reasonPhrase(reason) + "\r\n")
	h.Write(rw)
	rw.WriteString("\r\n")
	if r.Method != http.MethodHead {
		rw.Write(doc)
	}
	if rw.Flush() != nil {
		return true
	}
	linger(conn, rw.Reader)
	return true
}

// linger half-closes conn and reads what the client still sends (a request
// body nobody read, up to a bound and a deadline), so that the client sees
// the response rather than a reset connection.
func linger(conn net.Conn, br *bufio.Reader) {
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.CopyN(io.Discard, br, 8<<20)
}

// reasonPhrase makes s fit an HTTP reason phrase: one line of printable
// characters, at most 200 bytes.
func reasonPhrase(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "")
	}
	return s
}
