package imagesource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload"
)

// RepServer fetches images from an OBS repository server:
// GET <URL>/build/<project>/<repository>/<arch>/<package>/<filename>.
// The download streams to the job's file; it has no overall time limit, but
// a connection that brings no byte for IdleTimeout is dropped. After a
// dropped connection the download resumes with a Range request, guarded by
// If-Range with the first answer's ETag or Last-Modified (a server that
// ignores Range, or an image that changed, is read again from the start),
// with growing pauses, until Retries attempts in a row brought no data; then
// it fails with a reason for people. A Fetch that starts with part of the
// image already on disk (after a daemon restart) resumes only when the
// image still has the size recorded in the job; otherwise it starts over.
type RepServer struct {
	base        *url.URL
	Client      *http.Client  // default: a client without overall timeout
	IdleTimeout time.Duration // default 2 minutes
	Retries     int           // attempts in a row without progress before giving up; default 5
	Backoff     time.Duration // first pause between attempts, doubled up to 1 minute; default 1s
	Logger      *slog.Logger  // default slog.Default()
}

// NewRepServer returns the fetcher of the repository server at rawURL
// (http or https, e.g. http://repserver:5252).
func NewRepServer(rawURL string) (*RepServer, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("repository server url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("repository server url %q: want http://host[:port]", rawURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("repository server url %q: must not have a query or fragment", rawURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 0 // the idle timeout covers waiting for headers
	return &RepServer{base: u, Client: &http.Client{Transport: tr}, IdleTimeout: 2 * time.Minute,
		Retries: 5, Backoff: time.Second}, nil
}

// imageURL is the URL of j's image, each segment path-escaped.
func (r *RepServer) imageURL(j cloudupload.Job) (string, error) {
	segs, err := checkNames(j)
	if err != nil {
		return "", err
	}
	p := r.base.EscapedPath() + "/build"
	for _, s := range segs {
		p += "/" + url.PathEscape(s)
	}
	u := *r.base
	u.Path, u.RawPath = "", ""
	return u.String() + p, nil
}

func (r *RepServer) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// unreachable is the error for a failed request, its cause kept for the log.
func unreachable(err error) error {
	return &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "the repository server cannot be reached", Err: err}
}

// Stat implements backend.Fetcher. It asks for the first byte only, so a
// large image is not sent.
func (r *RepServer) Stat(ctx context.Context, j cloudupload.Job) (int64, error) {
	u, err := r.imageURL(j)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.idle())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := r.Client.Do(req)
	if err != nil {
		return 0, unreachable(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return max(resp.ContentLength, 0), nil
	case http.StatusPartialContent:
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return 0, &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "the repository server sent a bad Content-Range", Err: err}
		}
		return max(total, 0), nil
	case http.StatusRequestedRangeNotSatisfiable: // an empty image
		return 0, nil
	case http.StatusNotFound:
		return 0, notFound(j)
	}
	return 0, statusError(resp)
}

func statusError(resp *http.Response) error {
	return cloudupload.Errorf(cloudupload.EINTERNAL, "the repository server answered %s", resp.Status)
}

func (r *RepServer) idle() time.Duration {
	if r.IdleTimeout > 0 {
		return r.IdleTimeout
	}
	return 2 * time.Minute
}

// errIdle cancels a download that brought no byte for the idle timeout.
var errIdle = errors.New("no data")

// permanent marks an error no retry can fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Fetch implements backend.Fetcher: it downloads the image from offset on
// into dst (positioned at offset) and returns the image's size.
func (r *RepServer) Fetch(ctx context.Context, j cloudupload.Job, dst *os.File, offset int64) (int64, error) {
	u, err := r.imageURL(j)
	if err != nil {
		return 0, err
	}
	log := r.logger().With("job", j.ID, "url", u)
	backoff := r.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	retries := r.Retries
	if retries <= 0 {
		retries = 5
	}
	failures := 0
	// A resume after a restart is only trusted when the image still has the
	// size it had when the job was created; within this call, If-Range
	// with the first answer's validator guards against a changed image.
	st := &transfer{wantTotal: -1}
	if offset > 0 && j.Size > 0 {
		st.wantTotal = j.Size
	} else if offset > 0 {
		if err := dst.Truncate(0); err != nil {
			return 0, err
		}
		offset = 0
	}
	for {
		start := offset
		var size int64
		offset, size, err = r.attempt(ctx, u, j, dst, offset, st)
		if err == nil {
			return size, nil
		}
		if ctx.Err() != nil {
			return offset, ctx.Err()
		}
		var p permanent
		if errors.As(err, &p) {
			return offset, p.error
		}
		if offset > start {
			failures = 0 // progress: the connection was worth it
		}
		failures++
		reason := cloudupload.ErrorMessage(err)
		if errors.Is(err, errIdle) {
			reason = fmt.Sprintf("no data for %s", r.idle())
		}
		if failures >= retries {
			return offset, &cloudupload.Error{Code: cloudupload.EINTERNAL,
				Message: fmt.Sprintf("download from the repository server failed %d times in a row (last: %s)", failures, reason), Err: err}
		}
		log.Warn("image download interrupted, retrying", "offset", offset, "attempt", failures, "reason", reason, "err", err, "pause", backoff)
		select {
		case <-ctx.Done():
			return offset, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// transfer is what one Fetch learnt about the image across attempts.
type transfer struct {
	validator string // ETag (strong) or Last-Modified of the first answer, for If-Range
	wantTotal int64  // the size a resumed image must have, -1 when unknown
}

// restart empties dst: the download starts again from the beginning.
func restart(dst *os.File) error {
	if err := dst.Truncate(0); err != nil {
		return permanent{err}
	}
	return nil
}

// attempt runs one GET from offset on and returns the new offset and, when
// the image is complete, its size.
func (r *RepServer) attempt(ctx context.Context, u string, j cloudupload.Job, dst *os.File, offset int64, st *transfer) (int64, int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := r.idle()
	timer := time.AfterFunc(idle, func() { cancel(errIdle) })
	defer timer.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return offset, 0, permanent{err}
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		if st.validator != "" {
			req.Header.Set("If-Range", st.validator)
		}
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errIdle) {
			return offset, 0, errIdle
		}
		return offset, 0, unreachable(err)
	}
	defer resp.Body.Close()
	total := int64(-1)
	switch {
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			// Range ignored, or the image changed (If-Range): start
			// again from the beginning.
			if err := restart(dst); err != nil {
				return offset, 0, err
			}
			offset = 0
		}
		total = resp.ContentLength
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		first, _, t, err := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil || first != offset:
			if err := restart(dst); err != nil {
				return offset, 0, err
			}
			return 0, 0, cloudupload.Errorf(cloudupload.EINTERNAL, "the repository server sent the wrong part of the image")
		case st.wantTotal >= 0 && t != st.wantTotal:
			if err := restart(dst); err != nil {
				return offset, 0, err
			}
			return 0, 0, cloudupload.Errorf(cloudupload.EINTERNAL, "the image changed on the repository server")
		}
		total = t
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0:
		// Asked for what follows the end: complete when the size agrees.
		if _, _, t, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil && t == offset && (st.wantTotal < 0 || t == st.wantTotal) {
			return offset, offset, nil
		}
		if err := restart(dst); err != nil {
			return offset, 0, err
		}
		return 0, 0, cloudupload.Errorf(cloudupload.EINTERNAL, "the repository server refused to resume")
	case resp.StatusCode == http.StatusNotFound:
		return offset, 0, permanent{notFound(j)}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return offset, 0, statusError(resp)
	default:
		return offset, 0, permanent{statusError(resp)}
	}
	if st.validator == "" {
		if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
			st.validator = et
		} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
			st.validator = lm
		}
	}
	// Once an image's size is known, every later answer must agree.
	if total >= 0 && st.wantTotal < 0 {
		st.wantTotal = total
	}
	if _, err := dst.Seek(offset, io.SeekStart); err != nil {
		return offset, 0, permanent{err}
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			timer.Reset(idle)
			if _, err := dst.Write(buf[:n]); err != nil {
				return offset, 0, permanent{&cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "storing the image failed", Err: err}}
			}
			offset += int64(n)
		}
		if rerr == io.EOF {
			break
		} else if rerr != nil {
			if errors.Is(context.Cause(ctx), errIdle) {
				return offset, 0, errIdle
			}
			return offset, 0, &cloudupload.Error{Code: cloudupload.EINTERNAL, Message: "the connection to the repository server was lost", Err: rerr}
		}
	}
	if total >= 0 && offset != total {
		return offset, 0, cloudupload.Errorf(cloudupload.EINTERNAL, "the repository server sent %d of %d bytes", offset, total)
	}
	return offset, offset, nil
}

// parseContentRange parses "bytes first-last/total" (total may be "*",
// returned as -1) and "bytes */total" (first and last -1).
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, bad
		}
	}
	if rng == "*" {
		return -1, -1, total, nil
	}
	f, l, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	first, err1 := strconv.ParseInt(f, 10, 64)
	last, err2 := strconv.ParseInt(l, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || total >= 0 && last >= total {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}
