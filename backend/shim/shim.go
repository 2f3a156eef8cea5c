package shim

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload/internal/atomicfile"
	"github.com/cloudupload/cloudupload/internal/human"
)

// Arg is argv[1] of every shim process, whichever binary runs it: a
// restarted daemon recognises a job's live shim by argv[1] == Arg and
// argv[2] == the job's exit file.
const Arg = "__cloudupload_shim"

// forwardWindow: a SIGTERM the shim receives this soon after starting the
// uploader is passed on to it (see Run).
const forwardWindow = 2 * time.Second

// Exit statuses of a shim that could not write the exit file (a full disk):
// the daemon that waits for it records the outcome from them.
const (
	UnrecordedSuccess = 10
	UnrecordedFailure = 11
)

// RunIfRequested runs the shim and exits when the process was started as
// one (argv[1] is Arg); otherwise it returns at once.
func RunIfRequested() {
	if len(os.Args) < 2 || os.Args[1] != Arg {
		return
	}
	os.Exit(Run(os.Args[2:]))
}

// Run is the shim; it returns the process's exit status. args (those after
// Arg) are the exit file and the uploader's argv. The shim runs in the job's
// process group and work directory with stdout and stderr
// on the job log, which the uploader inherits. It catches SIGTERM (sent to
// the whole group on kill) so that it outlives the uploader and records its
// end; a caught signal is reset to the default in the uploader by exec, an
// ignored one would not be.
func Run(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "cloudupload shim: usage: cloudupload-shim "+Arg+" <exit file> <uploader> <args>...")
		return 2
	}
	exitFile, argv := args[0], args[1:]
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stdout, "%s %s\n", time.Now().UTC().Format("2006-01-02 15:04:05"), fmt.Sprintf(format, a...))
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	lease := leaseWatchFromEnv()

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	status := ""
	// A kill that reaches the group before the uploader exists must still
	// stop it: a SIGTERM caught before the start means no start, one caught
	// while starting is passed on.
	select {
	case s := <-sigs:
		logf("received %s before the uploader started: not starting it", s)
		return recordExit(exitFile, "signal: "+s.String(), logf)
	default:
	}
	if err := cmd.Start(); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the log is shown to users: no server paths
		}
		logf("the server could not start the uploader: %v", err)
		status = "exit status 127"
	} else {
		logf("uploader started")
		started := time.Now()
		done, stopped := make(chan struct{}), make(chan struct{})
		if lease != nil {
			go lease.watch(cmd.Process, done, logf)
		}
		go func() {
			defer close(stopped)
			forwarded := false
			for {
				select {
				case s := <-sigs:
					logf("received %s: waiting for the uploader to stop", s)
					// Go hands a caught signal to the channel a moment
					// after it arrived: one that reaches the channel soon
					// after the start may have been sent to the group
					// before the uploader existed, so it is passed on.
					if !forwarded && time.Since(started) < forwardWindow {
						forwarded = true
						cmd.Process.Signal(s)
					}
				case <-done:
					return
				}
			}
		}()
		err := cmd.Wait()
		close(done)
		<-stopped
		select {
		case s := <-sigs:
			logf("received %s: waiting for the uploader to stop", s)
		default:
		}
		took := human.Round(time.Since(start))
		status = exitStatus(cmd.ProcessState, err)

		switch {
		case status == "0":
			logf("uploader succeeded after %s", took)
		case cmd.ProcessState != nil && cmd.ProcessState.Exited():
			logf("uploader exited with status %d after %s", cmd.ProcessState.ExitCode(), took)
		default:
			logf("uploader ended (%s) after %s", status, took)
		}
	}
	if lease != nil && lease.fired.Load() && status != "0" {
		status = "stopped: this node lost its lease in the cluster (" + status + ")"
	}
	return recordExit(exitFile, status, logf)
}

// Environment of a shim whose node shares its jobs with a cluster (removed
// before the uploader starts): the node's lease file, which the daemon
// touches each time it renews its lease, the lease's duration and the kill
// grace.
const (
	EnvLeaseFile    = "CLOUDUPLOAD_SHIM_LEASE_FILE"
	EnvLease        = "CLOUDUPLOAD_SHIM_LEASE"
	EnvKillGrace    = "CLOUDUPLOAD_SHIM_KILL_GRACE"
	leaseWatchEvery = time.Second
)

// leaseWatch stops the uploader once its node's lease can no longer have
// been renewed: in a cluster, another node may take the job over after the
// lease and the kill grace, and the job must never run on two nodes.
type leaseWatch struct {
	file         string
	lease, grace time.Duration
	fired        atomic.Bool // the uploader was stopped for the lease
}

func leaseWatchFromEnv() *leaseWatch {
	w := &leaseWatch{file: os.Getenv(EnvLeaseFile)}
	lease, err1 := time.ParseDuration(os.Getenv(EnvLease))
	grace, err2 := time.ParseDuration(os.Getenv(EnvKillGrace))
	for _, k := range []string{EnvLeaseFile, EnvLease, EnvKillGrace} {
		os.Unsetenv(k)
	}
	if w.file == "" || err1 != nil || err2 != nil || lease <= 0 {
		return nil
	}
	w.lease, w.grace = lease, grace
	return w
}

// watch checks the lease file every second until done is closed; once it
// is older than the lease (or gone), it sends SIGTERM to the uploader and
// SIGKILL after the grace.
func (w *leaseWatch) watch(p *os.Process, done <-chan struct{}, logf func(string, ...any)) {
	t := time.NewTicker(leaseWatchEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		fi, err := os.Stat(w.file)
		if err == nil && time.Since(fi.ModTime()) <= w.lease {
			continue
		}
		logf("this node's lease in the cluster was not renewed for %s: stopping the uploader, another node will recover the job", w.lease)
		w.fired.Store(true)
		p.Signal(syscall.SIGTERM)
		select {
		case <-done:
			return
		case <-time.After(w.grace):
			logf("the uploader did not stop within %s: killing it", w.grace)
			p.Kill()
			return
		}
	}
}

// recordExit writes the uploader's exit status to exitFile and returns the
// shim's own exit status.
func recordExit(exitFile, status string, logf func(string, ...any)) int {
	if err := atomicfile.WriteFile(exitFile, []byte(status+"\n"), 0o644); err != nil {
		logf("the server could not record the uploader's exit status: %v", atomicfile.Cause(err))
		// The daemon that started this shim still learns the outcome from
		// its exit status.
		if status == "0" {
			return UnrecordedSuccess
		}
		return UnrecordedFailure
	}
	return 0
}

// exitStatus describes how a process ended: "0", "exit status N" or
// "signal: <name>".
func exitStatus(ps *os.ProcessState, err error) string {
	if ps == nil {
		if err != nil {
			return "exit status 127"
		}
		return "0"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal: " + ws.Signal().String()
	}
	if ps.ExitCode() == 0 {
		return "0"
	}
	return "exit status " + strconv.Itoa(ps.ExitCode())
}
