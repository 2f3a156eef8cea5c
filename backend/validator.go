package backend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"

	"github.com/cloudupload/cloudupload"
)

// maxValidators bounds the validator processes running at once: the
// validate-stream processes, or without them the validate per create.
const maxValidators = 4

// validators keeps long-lived `<uploader> validate-stream` processes, so
// that a create does not start a process. An uploader that does not know
// validate-stream (it exits at once) makes it fall back, for good, to
// `<uploader> validate <target>` per create.
type validators struct {
	path string
	env  []string
	dir  string

	sem chan struct{} // one token per process that may run

	mu          sync.Mutex
	idle        []*validatorProc
	unsupported bool
	closed      bool
}

type validatorProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
}

func newValidators(path string, env []string, dir string) *validators {
	return &validators{path: path, env: env, dir: dir, sem: make(chan struct{}, maxValidators)}
}

// acquire waits for one of the maxValidators turns to validate (with a
// stream or a process per create) and returns its release, or ctx's error.
func (v *validators) acquire(ctx context.Context) (release func(), err error) {
	select {
	case v.sem <- struct{}{}:
		return func() { <-v.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// errNoStream means the uploader cannot validate over a stream.
var errNoStream = errors.New("the uploader does not support validate-stream")

// validate asks a validator process about data for target, with the job's
// env. It returns errNoStream when the uploader does not support it.
func (v *validators) validate(ctx context.Context, target string, env map[string]string, data []byte) (cloudupload.ValidateResponse, error) {
	release, err := v.acquire(ctx)
	if err != nil {
		return cloudupload.ValidateResponse{}, err
	}
	defer release()
	for {
		p, reused, err := v.get()
		if err != nil {
			return cloudupload.ValidateResponse{}, err
		}
		resp, err := p.ask(ctx, cloudupload.ValidateRequest{Target: target, Env: env, Data: data})
		switch {
		case err == nil:
			v.put(p)
			return resp, nil
		case ctx.Err() != nil:
			v.discard(p)
			return cloudupload.ValidateResponse{}, ctx.Err()
		}
		v.discard(p)
		if reused {
			continue // an idle process went away: ask a fresh one
		}
		// A fresh one ended, or said something else than an answer:
		// perhaps it does not know validate-stream at all.
		return cloudupload.ValidateResponse{}, v.checkSupport(err)
	}
}

// ask sends req to the process and reads its answer, or gives up when ctx
// ends (the caller then discards the process).
func (p *validatorProc) ask(ctx context.Context, req cloudupload.ValidateRequest) (cloudupload.ValidateResponse, error) {
	type answer struct {
		resp cloudupload.ValidateResponse
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		var a answer
		if a.err = json.NewEncoder(p.in).Encode(req); a.err == nil {
			a.err = p.out.Decode(&a.resp)
		}
		ch <- a
	}()
	select {
	case a := <-ch:
		return a.resp, a.err
	case <-ctx.Done():
		p.cmd.Process.Kill() // unblocks the exchange
		<-ch
		return cloudupload.ValidateResponse{}, ctx.Err()
	}
}

// checkSupport decides, after a validator ended before answering, whether
// the uploader supports validate-stream at all: `<uploader>
// validate-stream` with no input must exit 0.
func (v *validators) checkSupport(cause error) error {
	cmd := exec.Command(v.path, "validate-stream")
	cmd.Env, cmd.Dir = v.env, v.dir
	if err := cmd.Run(); err != nil { // standard input: /dev/null
		v.mu.Lock()
		v.unsupported = true
		v.mu.Unlock()
		return errNoStream
	}
	return fmt.Errorf("validator: %w", cause)
}

// get returns an idle validator (reused) or starts one.
func (v *validators) get() (p *validatorProc, reused bool, err error) {
	v.mu.Lock()
	if v.unsupported {
		v.mu.Unlock()
		return nil, false, errNoStream
	}
	if v.closed {
		v.mu.Unlock()
		return nil, false, errors.New("validators closed")
	}
	if n := len(v.idle); n > 0 {
		p := v.idle[n-1]
		v.idle = v.idle[:n-1]
		v.mu.Unlock()
		return p, true, nil
	}
	v.mu.Unlock()
	// It ends at the end of its input: when the daemon closes it, or dies.
	cmd := exec.Command(v.path, "validate-stream")
	cmd.Env, cmd.Dir = v.env, v.dir
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, false, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, false, err
	}
	if err := cmd.Start(); err != nil {
		return nil, false, fmt.Errorf("start %s validate-stream: %w", v.path, err)
	}
	return &validatorProc{cmd: cmd, in: in, out: json.NewDecoder(bufio.NewReader(out))}, false, nil
}

func (v *validators) put(p *validatorProc) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		go p.stop()
		return
	}
	v.idle = append(v.idle, p)
}

func (v *validators) discard(p *validatorProc) {
	p.cmd.Process.Kill()
	go p.stop()
}

// stop ends a validator: end of input, then reap it.
func (p *validatorProc) stop() {
	p.in.Close()
	p.cmd.Wait()
}

// close stops the idle validators.
func (v *validators) close() {
	v.mu.Lock()
	idle := v.idle
	v.idle, v.closed = nil, true
	v.mu.Unlock()
	for _, p := range idle {
		p.stop()
	}
}

// validateStream is Manager.validate through the validator processes; it
// returns errNoStream when the uploader does not support them.
func (m *Manager) validateStream(ctx context.Context, job cloudupload.Job, data []byte) error {
	resp, err := m.validators.validate(ctx, job.Target, jobEnv(job), data)
	switch {
	case errors.Is(err, errNoStream):
		return err
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return internal("validating the target data took too long", fmt.Errorf("%s validate-stream %s: %w", m.cfg.Uploader, job.Target, err))
	case err != nil:
		return internal("could not validate the target data", err)
	case resp.Status == 0:
		return nil
	case resp.Status == 2:
		msg := firstLine(resp.Message, maxValidateMessage)
		if msg == "" {
			msg = fmt.Sprintf("the target data is not valid for target %s", job.Target)
		}
		return cloudupload.Errorf(cloudupload.EINVALID, "%s", msg)
	}
	return internal("could not validate the target data", fmt.Errorf("%s validate-stream %s: status %d: %s",
		m.cfg.Uploader, job.Target, resp.Status, firstLine(resp.Message, maxValidateMessage)))
}
