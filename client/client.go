package client

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxDocument bounds the XML documents read from the server (a job list of
// many thousand jobs fits), so a misbehaving server cannot exhaust memory.
const MaxDocument = 64 << 20

// Client calls one server. Its zero value is not usable; use New.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
	// RequestTimeout bounds each short request (documents, kill); log
	// streams and image uploads are bounded only by their context.
	RequestTimeout time.Duration
	// RetryFor is how long FollowLog and Wait keep asking a server that
	// cannot be reached (restarting, say) before they give up.
	RetryFor time.Duration
}

// New returns a client of the server at baseURL (http or https, e.g.
// http://127.0.0.1:5452). token, when not empty, is sent as a bearer token
// on POST and PUT.
func New(baseURL, token string) (*Client, error) {
	if baseURL == "" {
		return nil, errors.New("no server URL given")
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://HOST:PORT or https://HOST:PORT", baseURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("server URL must not hold credentials; give the token separately")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.WriteBufferSize = 64 << 10 // images: fewer, larger writes than the default 4 KiB
	return &Client{base: u, token: token, http: &http.Client{Transport: tr}, RequestTimeout: time.Minute, RetryFor: time.Minute}, nil
}

// URL returns the server's base URL.
func (c *Client) URL() string { return c.base.String() }

// Error is the server's refusal of a request: the HTTP status and the
// summary of its <status> document (or the status text when the answer
// held no summary).
type Error struct {
	Status  int    // HTTP status code
	Summary string // written by the server for a person
	Op      string // what the client asked, e.g. "get job 5"
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Op, e.Summary, e.Status)
}

// NotFound reports whether err is the server's 404 (e.g. "no such job").
func NotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// ServerError is an error talking to the server: it could not be reached,
// the connection broke, or it answered something the contract does not
// allow. An *Error (a refusal) is not a ServerError.
type ServerError struct {
	Op  string
	Err error
}

func (e *ServerError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *ServerError) Unwrap() error { return e.Err }

// IsServerError reports whether err came from the server or the way to it
// (an *Error or a *ServerError), not from the caller's side.
func IsServerError(err error) bool {
	var e *Error
	var s *ServerError
	return errors.As(err, &e) || errors.As(err, &s)
}

// request is one call to the server.
type request struct {
	op      string // for errors: "get job 5"
	method  string
	path    string // below the base URL, starting with '/'
	query   url.Values
	body    io.Reader
	size    int64 // Content-Length of body; -1 unknown
	ctype   string
	stream  bool // no RequestTimeout: a log stream or an upload
	headers map[string]string
}

// do sends r and returns the response when its status is 2xx or 304;
// otherwise the server's *Error. The caller closes the body.
func (c *Client) do(ctx context.Context, r request) (*http.Response, context.CancelFunc, error) {
	cancel := context.CancelFunc(func() {})
	if !r.stream && c.RequestTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.RequestTimeout)
	}
	u := *c.base
	u.Path = c.base.Path + r.path
	u.RawQuery = r.query.Encode()
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), r.body)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("%s: %w", r.op, err)
	}
	if r.body != nil && r.size >= 0 {
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("User-Agent", "cloudupload-cli")
	if c.token != "" && r.method != http.MethodGet && r.method != http.MethodHead {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		return nil, nil, &ServerError{Op: r.op, Err: cleanURLError(err)}
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		return resp, cancel, nil
	}
	defer cancel()
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, nil, &Error{Status: resp.StatusCode, Summary: summaryOf(resp, body), Op: r.op}
}

// cleanURLError drops the URL wrapper of a transport error (the operation
// already says what was asked) but keeps its cause.
func cleanURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// summaryOf reads the <summary> of a <status> document, else the reason
// phrase of the status line, else the standard status text.
func summaryOf(resp *http.Response, body []byte) string {
	var st struct {
		XMLName xml.Name `xml:"status"`
		Summary string   `xml:"summary"`
	}
	if xml.Unmarshal(body, &st) == nil && strings.TrimSpace(st.Summary) != "" {
		return oneLine(st.Summary)
	}
	if _, reason, ok := strings.Cut(resp.Status, " "); ok && reason != "" {
		return oneLine(reason)
	}
	return http.StatusText(resp.StatusCode)
}

// oneLine makes s printable on one line of at most 300 bytes.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// document sends r and returns the body of the answer, at most MaxDocument
// bytes.
func (c *Client) document(ctx context.Context, r request) ([]byte, error) {
	resp, cancel, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(resp.Body, MaxDocument+1)); err != nil {
		return nil, &ServerError{Op: r.op, Err: err}
	}
	if b.Len() > MaxDocument {
		return nil, &ServerError{Op: r.op, Err: fmt.Errorf("answer is larger than %d MiB", MaxDocument>>20)}
	}
	return b.Bytes(), nil
}

// jobPath is the path of job id.
func jobPath(id int64) string { return "/cloudupload/" + strconv.FormatInt(id, 10) }
