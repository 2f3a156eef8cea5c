package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/cloudupload/cloudupload"
)

// DefaultMaxBuffered is the default bound on the bytes of request bodies
// (target data, job skeletons, forms) held in memory at once, with what
// parsing them costs. Images (PUT) stream to disk and do not count.
const DefaultMaxBuffered = 16 << 20

// defaultBodyWait bounds how long a request waits for room in the budget
// before it is answered 503; bodyTimeout bounds how long reading a buffered body
// may take, so that a client trickling bytes cannot hold its share forever.
const (
	defaultBodyWait = 10 * time.Second
	bodyTimeout     = 2 * time.Minute
)

// budget is a counting semaphore of bytes: the memory buffered bodies may
// use together.
type budget struct {
	mu      sync.Mutex
	free    int64
	changed chan struct{} // closed and replaced when bytes are released
}

func newBudget(n int64) *budget {
	return &budget{free: n, changed: make(chan struct{})}
}

// acquire takes n bytes, waiting until they are free or ctx ends (false).
// n must not exceed the budget's size.
func (b *budget) acquire(ctx context.Context, n int64) bool {
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return true
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.free += n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

var errBusy = errors.New("busy")

// readBody reads a request body of at most limit bytes (beyond: ETOOLARGE)
// into memory, after reserving cost(size) bytes of the budget, where size is
// the body's announced length or, when unknown (chunked), what the buffer may
// grow to. The caller calls the returned release once it no longer holds the
// body or what it parsed from it. When the budget stays full for s.bodyWait,
// the error is errBusy.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64, what string, cost func(int64) int64) ([]byte, func(), error) {
	tooLarge := cloudupload.Errorf(cloudupload.ETOOLARGE, "%s is larger than %d MiB", what, limit>>20)
	if limit < 1<<20 {
		tooLarge = cloudupload.Errorf(cloudupload.ETOOLARGE, "%s is larger than %d KiB", what, limit>>10)
	}
	if r.ContentLength > limit {
		return nil, nil, tooLarge
	}
	size := r.ContentLength
	if size < 0 {
		size = limit + limit/2 + 1 // a buffer growing by doubling up to limit+1
	}
	n := min(cost(size), s.buffered)
	ctx, cancel := context.WithTimeout(r.Context(), s.bodyWait)
	ok := s.budget.acquire(ctx, n)
	cancel()
	if !ok {
		return nil, nil, errBusy
	}
	var once sync.Once
	release := func() { once.Do(func() { s.budget.release(n) }) }
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyTimeout))
	b, err := readLimited(http.MaxBytesReader(w, r.Body, limit), r.ContentLength, limit)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		release()
		return nil, nil, tooLarge
	} else if err != nil {
		release()
		return nil, nil, &cloudupload.Error{Code: cloudupload.EINVALID, Message: "reading the " + what + " failed", Err: err}
	}
	return b, release, nil
}

// readLimited reads r to its end: into a buffer of exactly size bytes when
// size is known, else into one that doubles up to limit+1.
func readLimited(r io.Reader, size, limit int64) ([]byte, error) {
	if size >= 0 {
		b := make([]byte, size)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		// Nothing may follow (MaxBytesReader reports a body over limit).
		if _, err := r.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return b, nil
	}
	b := make([]byte, 0, min(64<<10, limit+1))
	for {
		if int64(len(b)) > limit {
			return nil, &http.MaxBytesError{Limit: limit}
		}
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(2*int64(cap(b)), limit+1))
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		} else if err != nil {
			return nil, err
		}
	}
}

// failBusy answers a request that found no room for its body.
func (s *Server) failBusy(w http.ResponseWriter, r *http.Request) {
	s.log.Warn("request refused: too many request bodies in memory", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("Retry-After", "10")
	s.failStatus(w, r, http.StatusServiceUnavailable, "the server is busy, try again later")
}
