package credfile

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
)

// Reloader holds the current content of a credential file; it is safe for
// concurrent use. Readers call Current (or Lookup) per request; Reload
// replaces the content atomically, so a request sees the old file or the
// new one, never a mix.
type Reloader struct {
	path string
	cur  atomic.Pointer[File]
}

// NewReloader loads path; an error there is fatal to the caller (a daemon
// must not start with a broken credential file).
func NewReloader(path string) (*Reloader, error) {
	f, err := Load(path)
	if err != nil {
		return nil, err
	}
	r := &Reloader{path: path}
	r.cur.Store(f)
	return r, nil
}

// Path returns the file's path.
func (r *Reloader) Path() string { return r.path }

// Current returns the content last loaded successfully.
func (r *Reloader) Current() *File { return r.cur.Load() }

// Lookup is Current().Lookup(token).
func (r *Reloader) Lookup(token string) *Entry { return r.Current().Lookup(token) }

// Reload reads the file again. On error the previous content stays in use
// and the error (naming file and line, never a token) is returned.
func (r *Reloader) Reload() error {
	f, err := Load(r.path)
	if err != nil {
		return err
	}
	r.cur.Store(f)
	return nil
}

// Watch reloads the file on every signal from sig (typically SIGHUP, set
// up by the caller with signal.Notify) until ctx is done, logging each
// outcome: the number of entries, or the error and that the previous
// content is kept.
func (r *Reloader) Watch(ctx context.Context, sig <-chan os.Signal, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			if err := r.Reload(); err != nil {
				log.Error("credential file not reloaded, keeping the previous one", "file", r.path, "err", err)
				continue
			}
			log.Info("credential file reloaded", "file", r.path, "entries", len(r.Current().Entries))
		}
	}
}
