package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// readCloser joins a reader and what releases it.
type readCloser struct {
	io.Reader
	close func() error
	once  sync.Once
	err   error
}

func (r *readCloser) Close() error {
	r.once.Do(func() { r.err = r.close() })
	return r.err
}

// ctxReader fails every Read once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errPrefixReader prefixes errors other than io.EOF.
type errPrefixReader struct {
	r      io.Reader
	prefix string
}

func (e *errPrefixReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: %w", e.prefix, err)
	}
	return n, err
}

// exactReader passes exactly left bytes of r, then checks the trailer (if
// any) and that r ends there.
type exactReader struct {
	r       io.Reader
	left    int64
	name    string
	trailer func(io.Reader) error
	end     error // set once the end was checked
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		if e.end == nil {
			e.end = e.checkEnd()
		}
		return 0, e.end
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			return n, fmt.Errorf("image %s: decompressed data ends %d bytes early: %w", e.name, e.left, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}

func (e *exactReader) checkEnd() error {
	if e.trailer != nil {
		if err := e.trailer(e.r); err != nil {
			return err
		}
	}
	var b [1]byte
	for {
		n, err := e.r.Read(b[:])
		if n > 0 {
			return fmt.Errorf("image %s: decompressed data is longer than its index says", e.name)
		}
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return err
		}
	}
}

// procReader reads the output of a decompressor process.
type procReader struct {
	ctx    context.Context
	name   string // the image's file name, for messages
	tool   string
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *limitedBuffer
	mu     sync.Mutex
	waited bool
	err    error
}

// startDecompressor runs tool with args, in as its standard input, and
// returns its standard output. Close kills the process if it is still
// running and always reaps it.
func startDecompressor(ctx context.Context, name string, in *os.File, tool string, args ...string) (*procReader, error) {
	cmd := exec.Command(tool, args...)
	cmd.Args[0] = filepath.Base(tool) // its messages start with argv[0]: no server path
	cmd.Stdin = in
	cmd.Env = []string{"LC_ALL=C"} // no secrets for the child; messages in English
	stderr := &limitedBuffer{max: 2048}
	cmd.Stderr = stderr
	out, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("decompress image %s: %w", name, err)
	}
	growPipe(out)
	cmd.Stdout = w
	err = cmd.Start()
	w.Close() // the child has its own descriptor
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("decompress image %s: start %s: %w", name, tool, err)
	}
	return &procReader{ctx: ctx, name: name, tool: tool, cmd: cmd, out: out, stderr: stderr}, nil
}

func (p *procReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.out.Read(b)
	if err == io.EOF {
		if werr := p.wait(); werr != nil {
			return n, werr
		}
	} else if err != nil {
		if cerr := p.ctx.Err(); cerr != nil {
			return n, cerr
		}
		err = fmt.Errorf("decompress image %s: %w", p.name, err)
	}
	return n, err
}

// wait reaps the process and returns its failure, if any.
func (p *procReader) wait() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.waited {
		p.waited = true
		if err := p.cmd.Wait(); err != nil {
			msg := bytes.TrimSpace(p.stderr.Bytes())
			if len(msg) == 0 {
				msg = []byte(err.Error())
			}
			p.err = fmt.Errorf("decompress image %s: %s", p.name, bytes.ReplaceAll(msg, []byte("\n"), []byte("; ")))
		}
	}
	return p.err
}

// Close kills the decompressor if it still runs and reaps it. Its exit
// status is not an error of Close: Read reports a failure to decompress.
func (p *procReader) Close() error {
	p.mu.Lock()
	if !p.waited {
		p.cmd.Process.Kill()
	}
	p.mu.Unlock()
	p.wait()
	p.out.Close()
	return nil
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

func (l *limitedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.buf.Bytes()...)
}
