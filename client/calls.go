package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/cloudupload/cloudupload"
)

// Build names an image of a build: the OBS coordinates of a job.
type Build struct {
	Project, Repository, Arch, Package, Filename string
}

// check validates the names as the server will, so that a mistake is
// reported before anything is sent.
func (b Build) check(user, target string) error {
	return cloudupload.CheckJob(&cloudupload.Job{Project: b.Project, Repository: b.Repository, Arch: b.Arch,
		Package: b.Package, Filename: b.Filename, User: user, Target: target})
}

// Submit creates a job by the build-root route (POST /cloudupload with the
// names as query parameters): the server fetches the image from its build
// tree or repository server. data is the target data (JSON), maybe empty.
// The job is returned as created.
func (c *Client) Submit(ctx context.Context, user, target string, b Build, data []byte) (Job, error) {
	if err := b.check(user, target); err != nil {
		return Job{}, err
	}
	q := url.Values{"project": {b.Project}, "repository": {b.Repository}, "arch": {b.Arch},
		"package": {b.Package}, "filename": {b.Filename}, "user": {user}, "target": {target}}
	doc, err := c.document(ctx, request{op: "submit", method: http.MethodPost, path: "/cloudupload", query: q,
		body: bytes.NewReader(data), size: int64(len(data)), ctype: "application/octet-stream"})
	if err != nil {
		return Job{}, err
	}
	return c.parseJob("submit", doc)
}

// Skeleton creates a job by the source-server route (POST /cloudupload
// with an XML job skeleton); its image of size bytes must follow with Put.
func (c *Client) Skeleton(ctx context.Context, user, target string, b Build, size int64, data []byte) (Job, error) {
	if err := b.check(user, target); err != nil {
		return Job{}, err
	}
	if size < 0 {
		return Job{}, fmt.Errorf("image size %d is negative", size)
	}
	type skeleton struct {
		XMLName    xml.Name `xml:"clouduploadjob"`
		User       string   `xml:"user"`
		Target     string   `xml:"target"`
		Project    string   `xml:"project"`
		Repository string   `xml:"repository"`
		Package    string   `xml:"package"`
		Arch       string   `xml:"arch"`
		Filename   string   `xml:"filename"`
		Size       int64    `xml:"size"`
		Details    string   `xml:"details"`
	}
	body, err := xml.MarshalIndent(skeleton{User: user, Target: target, Project: b.Project, Repository: b.Repository,
		Package: b.Package, Arch: b.Arch, Filename: b.Filename, Size: size, Details: hex.EncodeToString(data)}, "", "  ")
	if err != nil {
		return Job{}, fmt.Errorf("job skeleton: %w", err)
	}
	doc, err := c.document(ctx, request{op: "create job", method: http.MethodPost, path: "/cloudupload",
		body: bytes.NewReader(body), size: int64(len(body)), ctype: "text/xml"})
	if err != nil {
		return Job{}, err
	}
	return c.parseJob("create job", doc)
}

// Put sends the image of a job made by Skeleton: exactly size bytes read
// from image. When image fails (a file that changed size, say), that error
// is returned rather than the broken connection it causes; the server then
// fails the job for its short image. Once the server has accepted the
// image (all size bytes), Put succeeds.
func (c *Client) Put(ctx context.Context, id int64, image io.Reader, size int64) error {
	br := &bodyReader{r: image}
	op := "send image of job " + strconv.FormatInt(id, 10)
	_, err := c.document(ctx, request{op: op, method: http.MethodPut, path: jobPath(id),
		body: br, size: size, ctype: "application/octet-stream", stream: true})
	if berr := br.error(); err != nil && berr != nil {
		return berr
	}
	return err
}

// bodyReader remembers the error of the request body, which the HTTP
// client would hide behind a broken connection. The transport may still
// read the body after the answer came: err is guarded.
type bodyReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *bodyReader) error() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Get returns job id.
func (c *Client) Get(ctx context.Context, id int64) (Job, error) {
	op := "job " + strconv.FormatInt(id, 10)
	doc, err := c.document(ctx, request{op: op, method: http.MethodGet, path: jobPath(id)})
	if err != nil {
		return Job{}, err
	}
	return c.parseJob(op, doc)
}

// Filter selects jobs of a list; empty fields select all.
type Filter struct {
	IDs    []int64             // these jobs, in this order (the server's name= parameters)
	States []cloudupload.State // any of these states
	User   string
	Target string
}

func (f Filter) match(j *Job) bool {
	if f.User != "" && j.User != f.User || f.Target != "" && j.Target != f.Target {
		return false
	}
	if len(f.States) == 0 {
		return true
	}
	for _, s := range f.States {
		if j.State == s {
			return true
		}
	}
	return false
}

// List returns the jobs f selects in ascending id order (or in the order of
// f.IDs). The server filters by id; state, user and target are filtered
// here, as the API has no such parameters.
func (c *Client) List(ctx context.Context, f Filter) ([]Job, error) {
	q := url.Values{}
	for _, id := range f.IDs {
		q.Add("name", strconv.FormatInt(id, 10))
	}
	doc, err := c.document(ctx, request{op: "list jobs", method: http.MethodGet, path: "/cloudupload", query: q})
	if err != nil {
		return nil, err
	}
	all, err := parseJobList(doc)
	if err != nil {
		return nil, &ServerError{Op: "list jobs", Err: err}
	}
	jobs := all[:0]
	for i := range all {
		if f.match(&all[i]) {
			jobs = append(jobs, all[i])
		}
	}
	return jobs, nil
}

// Kill kills job id. The server answers once the job is final; a job that
// was already final is left as it was. It returns the job as it is then.
func (c *Client) Kill(ctx context.Context, id int64) (Job, error) {
	op := "kill job " + strconv.FormatInt(id, 10)
	// The server waits for the uploader to exit (up to its kill grace):
	// no short timeout.
	_, err := c.document(ctx, request{op: op, method: http.MethodPost, path: jobPath(id),
		query: url.Values{"cmd": {"kill"}}, stream: true})
	if err != nil {
		return Job{}, err
	}
	return c.Get(ctx, id)
}

// Log writes the log of job id as it is now to w, from byte offset start
// (negative: that many bytes from the end), streamed (a log of any size
// takes no memory), and returns the number of bytes written.
func (c *Client) Log(ctx context.Context, id int64, start int64, w io.Writer) (int64, error) {
	q := url.Values{"nostream": {"1"}, "start": {strconv.FormatInt(start, 10)}}
	op := "log of job " + strconv.FormatInt(id, 10)
	resp, cancel, err := c.do(ctx, request{op: op, method: http.MethodGet, path: jobPath(id) + "/_log", query: q, stream: true})
	if err != nil {
		return 0, err
	}
	defer cancel()
	defer resp.Body.Close()
	n, err := io.Copy(markWriter{w}, resp.Body)
	var we *writeError
	if errors.As(err, &we) {
		return n, we.err
	} else if err != nil {
		return n, &ServerError{Op: op, Err: err}
	}
	return n, nil
}

// FollowLog writes the log of job id to w from byte offset start as it
// grows, until the job is final and all of its log was written. A stream
// that breaks (a server restart, a dropped connection) is asked again from
// where it stopped; only when the server stays unreachable for RetryFor
// does FollowLog fail. An error of w ends it at once. It returns the job as
// it ended.
func (c *Client) FollowLog(ctx context.Context, id int64, start int64, w io.Writer) (Job, error) {
	offset := start
	op := "log of job " + strconv.FormatInt(id, 10)
	var failingSince time.Time
	for {
		q := url.Values{"start": {strconv.FormatInt(offset, 10)}}
		resp, cancel, err := c.do(ctx, request{op: op, method: http.MethodGet, path: jobPath(id) + "/_log", query: q, stream: true})
		if err == nil {
			var n int64
			n, err = io.Copy(markWriter{w}, resp.Body)
			resp.Body.Close()
			cancel()
			offset += n
			if n > 0 {
				failingSince = time.Time{}
			}
			var we *writeError
			if errors.As(err, &we) {
				return Job{}, we.err
			}
		}
		var refused *Error
		if errors.As(err, &refused) || ctx.Err() != nil {
			return Job{}, err // the server said no (unknown job…), or the caller gave up
		}
		// The stream ended: the job is final, or the stream broke.
		job, gerr := c.Get(ctx, id)
		if gerr == nil && job.State.Final() {
			// Everything written before the job ended was sent
			// unless the stream broke: then fetch the rest.
			if err != nil {
				if _, lerr := c.Log(ctx, id, offset, w); lerr != nil {
					return job, lerr
				}
			}
			return job, nil
		}
		if errors.As(gerr, &refused) {
			return Job{}, gerr
		}
		if gerr != nil || err != nil {
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > c.RetryFor {
				return Job{}, cmp(err, gerr)
			}
		}
		select {
		case <-ctx.Done():
			return Job{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// writeError marks a failure of the caller's writer in FollowLog, which
// must not be retried as if the server had failed.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

// markWriter wraps the errors of w in *writeError.
type markWriter struct{ w io.Writer }

func (m markWriter) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	if err != nil {
		return n, &writeError{err}
	}
	return n, nil
}

// cmp returns the first non-nil error.
func cmp(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Wait polls job id every interval until it is final, calling seen (when
// not nil) with each document read, and returns the final job (on an
// error, the last job read). A server
// that cannot be reached is asked again for up to RetryFor; a refusal (an
// unknown job) ends the wait at once. It polls with a Poller: a document
// that did not change costs the server a 304.
func (c *Client) Wait(ctx context.Context, id int64, interval time.Duration, seen func(Job)) (Job, error) {
	if interval <= 0 {
		interval = time.Second
	}
	var failingSince time.Time
	var last Job
	p := c.Poller(id)
	for {
		job, err := p.Get(ctx)
		var refused *Error
		switch {
		case err == nil:
			failingSince, last = time.Time{}, job
		case errors.As(err, &refused):
			return last, err
		case ctx.Err() != nil:
			return last, ctx.Err()
		case failingSince.IsZero():
			failingSince = time.Now()
		case time.Since(failingSince) > c.RetryFor:
			return last, err
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return last, ctx.Err()
			case <-time.After(interval):
			}
			continue
		}
		if seen != nil {
			seen(job)
		}
		if job.State.Final() {
			return job, nil
		}
		select {
		case <-ctx.Done():
			return job, ctx.Err()
		case <-time.After(interval):
		}
	}
}

func (c *Client) parseJob(op string, doc []byte) (Job, error) {
	j, err := parseJob(doc)
	if err != nil {
		return j, &ServerError{Op: op, Err: err}
	}
	return j, nil
}

// Poller reads one job again and again, cheaply: it sends the ETag of the
// last document it read, and a server that supports it answers 304 Not
// Modified when nothing changed (an older server simply sends the
// document). Not safe for concurrent use.
type Poller struct {
	c    *Client
	id   int64
	etag string
	job  Job
}

// Poller returns a Poller of job id.
func (c *Client) Poller(id int64) *Poller { return &Poller{c: c, id: id} }

// Get returns the job as it is now.
func (p *Poller) Get(ctx context.Context) (Job, error) {
	op := "job " + strconv.FormatInt(p.id, 10)
	r := request{op: op, method: http.MethodGet, path: jobPath(p.id)}
	if p.etag != "" {
		r.headers = map[string]string{"If-None-Match": p.etag}
	}
	resp, cancel, err := p.c.do(ctx, r)
	if err != nil {
		return Job{}, err
	}
	defer cancel()
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && p.etag != "" {
		return p.job, nil
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(resp.Body, MaxDocument+1)); err != nil {
		return Job{}, &ServerError{Op: op, Err: err}
	}
	job, err := p.c.parseJob(op, b.Bytes())
	if err != nil {
		return job, err
	}
	p.job, p.etag = job, resp.Header.Get("ETag")
	return job, nil
}
