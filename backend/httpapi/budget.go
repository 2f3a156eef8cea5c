package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/cloudupload/cloudupload"
)

// DefaultMaxBuffered is the default bound on the bytes of request bodies
// (target data, job skeletons, forms) held in memory at once, with what
// parsing them costs. Images (PUT) stream to disk and do not count.
const DefaultMaxBuffered = 16 << 20

// DefaultMaxReceives is the default bound on PUTs streaming at once; each
// holds the Manager's receive buffer (1 MiB).
const DefaultMaxReceives = 8

// defaultBodyWait bounds how long a request waits for room in the budget
// before it is answered 503. A buffered body must then arrive at
// minBodyRate on average, after bodyGrace (a chunked one within
// chunkedTimeout), so that a client trickling bytes cannot hold its share
// for long.
const (
	defaultBodyWait = 10 * time.Second
	bodyGrace       = 10 * time.Second
	minBodyRate     = 64 << 10 // bytes per second
	chunkedTimeout  = 2 * time.Minute
)

// bodyDeadline is how long reading a body of size bytes (-1: unknown) may
// take.
func bodyDeadline(size int64) time.Duration {
	if size < 0 {
		return chunkedTimeout
	}
	return bodyGrace + time.Duration(size)*time.Second/minBodyRate
}

// budget is a counting semaphore of bytes: the memory buffered bodies may
// use together. Waiters are served first come, first served, so that a
// large body is not starved by a stream of small ones.
type budget struct {
	mu      sync.Mutex
	free    int64
	waiters []*waiter // in arrival order
}

type waiter struct {
	n     int64
	ready chan struct{} // closed when the bytes were granted
}

func newBudget(n int64) *budget {
	return &budget{free: n}
}

// acquire takes n bytes, waiting until they are free and every earlier
// waiter is served, or until ctx ends (false). n must not exceed the
// budget's size.
func (b *budget) acquire(ctx context.Context, n int64) bool {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.free >= n {
		b.free -= n
		b.mu.Unlock()
		return true
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return true
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.free += n
		default:
			b.waiters = slices.DeleteFunc(b.waiters, func(x *waiter) bool { return x == w })
		}
		b.grant()
		return false
	}
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.free += n
	b.grant()
}

// grant serves the waiters in order while they fit. The caller holds mu.
func (b *budget) grant() {
	for len(b.waiters) > 0 && b.waiters[0].n <= b.free {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.free -= w.n
		close(w.ready)
	}
}

var errBusy = errors.New("busy")

// readBody reads a request body of at most limit bytes (beyond: ETOOLARGE)
// into memory, within the budget: a body of known length reserves
// cost(length) before it is read, into one buffer of that length; a
// chunked one reserves its pieces as they arrive, then cost(length). The
// caller calls the returned release (never nil) once it no longer holds
// the body or what it parsed from it. When the budget stays full for s.bodyWait, the
// error is errBusy.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64, what string, cost func(int64) int64) ([]byte, func(), error) {
	tooLarge := cloudupload.Errorf(cloudupload.ETOOLARGE, "%s is larger than %d MiB", what, limit>>20)
	if limit < 1<<20 {
		tooLarge = cloudupload.Errorf(cloudupload.ETOOLARGE, "%s is larger than %d KiB", what, limit>>10)
	}
	res := &reservation{s: s, ctx: r.Context()}
	if r.ContentLength > limit {
		return nil, res.release, tooLarge
	}
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyDeadline(r.ContentLength)))
	body := http.MaxBytesReader(w, r.Body, limit)
	var b []byte
	var err error
	if r.ContentLength >= 0 {
		if !res.grow(cost(r.ContentLength), true) {
			return nil, res.release, errBusy
		}
		b = make([]byte, r.ContentLength)
		if _, err = io.ReadFull(body, b); err == nil {
			// Nothing may follow (MaxBytesReader reports a body over limit).
			if _, rerr := body.Read(make([]byte, 1)); rerr != nil && !errors.Is(rerr, io.EOF) {
				err = rerr
			}
		}
	} else if b, err = res.readChunked(body, limit); err == nil && !res.grow(cost(int64(len(b))), false) {
		err = errBusy
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return b, res.release, nil
	case errors.As(err, &mbe):
		err = tooLarge
	case !errors.Is(err, errBusy):
		err = &cloudupload.Error{Code: cloudupload.EINVALID, Message: "reading the " + what + " failed", Err: err}
	}
	res.release()
	return nil, res.release, err
}

// reservation is the part of the budget one body holds.
type reservation struct {
	s    *Server
	ctx  context.Context
	held int64
}

// grow makes the reservation n bytes (never more than the whole budget; it
// never shrinks), waiting at most s.bodyWait when wait is set; false when
// there was no room.
func (r *reservation) grow(n int64, wait bool) bool {
	n = min(n, r.s.buffered)
	if n <= r.held {
		return true
	}
	timeout := r.s.bodyWait
	if !wait {
		timeout = 0
	}
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	if !r.s.budget.acquire(ctx, n-r.held) {
		return false
	}
	r.held = n
	return true
}

func (r *reservation) release() {
	if r.held > 0 {
		r.s.budget.release(r.held)
		r.held = 0
	}
}

// chunkSize is the piece a body of unknown length is read in.
const chunkSize = 64 << 10

// readChunked reads a body of unknown length in pieces, each reserved
// before it is allocated (a client trickling its body holds only what it
// sent), and joins them, reserving the copy too. Only the first piece waits
// for room: a reader that holds a part and waited for more could wait for
// another that does the same, so when there is no room for the next piece
// at once, the body is refused (errBusy).
func (r *reservation) readChunked(body io.Reader, limit int64) ([]byte, error) {
	var pieces [][]byte
	var n int64
	for {
		if !r.grow(n+chunkSize, n == 0) {
			return nil, errBusy
		}
		p := make([]byte, chunkSize)
		k, err := io.ReadFull(body, p)
		pieces = append(pieces, p[:k])
		n += int64(k)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if n > limit {
			return nil, &http.MaxBytesError{Limit: limit}
		}
	}
	if !r.grow(n+int64(len(pieces))*chunkSize, false) {
		return nil, errBusy
	}
	b := make([]byte, 0, n)
	for _, p := range pieces {
		b = append(b, p...)
	}
	return b, nil
}

// failBusy answers a request that found no room for its body.
func (s *Server) failBusy(w http.ResponseWriter, r *http.Request) {
	s.log.Warn("request refused: too many request bodies in memory", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("Retry-After", "10")
	s.failStatus(w, r, http.StatusServiceUnavailable, "the server is busy, try again later")
}
