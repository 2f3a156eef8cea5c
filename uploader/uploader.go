package uploader

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	cloudupload "github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/atomicfile"
	"github.com/cloudupload/cloudupload/internal/cli"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitUsage   = 2 // bad argv, unknown target, invalid target data
	ExitSignal  = 128
	ExitKilled  = ExitSignal + int(syscall.SIGTERM) // 143
	MaxDataSize = 10 << 20                          // bound on the target data
)

// DefaultCleanupTimeout bounds how long a cancelled upload may take to
// clean up before the process exits anyway.
const DefaultCleanupTimeout = 60 * time.Second

// Options are what Main runs with; cmd/clouduploader passes the registry's
// targets and the process's environment and streams.
type Options struct {
	Targets []targets.Target
	Getenv  func(string) string
	Stdin   io.Reader
	Stdout  io.Writer // the job log
	Stderr  io.Writer
	// CleanupTimeout bounds the wait for a cancelled upload
	// (DefaultCleanupTimeout when zero).
	CleanupTimeout time.Duration
	// Signals are the signals that cancel an upload (SIGTERM and SIGINT
	// when nil).
	Signals []os.Signal
	// Exit, when set (os.Exit in the clouduploader process), ends the
	// process with an upload's exit status as soon as its outcome is
	// recorded, while Signals are still caught: a signal arriving after
	// that (the kill of the process group as the upload completes, then
	// the one the shim passes on) cannot turn the outcome into a death by
	// signal, which the daemon would record as killed. Without it, Main
	// returns and the signals' default actions are restored.
	Exit func(code int)
}

const usage = `usage:
  clouduploader <user> <target> <image> <target data file> <filename> <result file>
      publish <image> (built as <filename>) to <target> with the JSON target
      data in <target data file>; write the result (or why it failed) to
      <result file>. Job fields come from CLOUDUPLOAD_JOB, CLOUDUPLOAD_PROJECT,
      CLOUDUPLOAD_REPOSITORY, CLOUDUPLOAD_ARCH, CLOUDUPLOAD_PACKAGE; without
      them the arch is taken from <filename>. With CLOUDUPLOAD_PROGRESS_FILE
      set, the transfer's progress is written there as {"done":N,"total":M}.
      CLOUDUPLOAD_IMAGE_SHA256 (hex) is the SHA-256 of <image> when known;
      targets that store it check it.
  clouduploader validate-stream
      answer validate's question for many jobs: one JSON request per line
      on standard input, one JSON answer per line on standard output (the
      daemon keeps it running; see cloudupload.ValidateRequest).
  clouduploader validate <target>
      check the target data on standard input for the job in the same
      environment (plus CLOUDUPLOAD_USER and CLOUDUPLOAD_FILENAME when set);
      exit 0 when valid, 2 with one line naming the field when not.
  clouduploader targets
      list the known targets.
  clouduploader protocol
      print the version of the daemon's protocol this uploader speaks.
exit status: 0 success, 1 failure, 2 usage or invalid data, 143 killed (SIGTERM)
`

// Main runs the uploader with args (without the program name) and returns
// the exit status. Cancelling ctx acts like SIGTERM.
func Main(ctx context.Context, args []string, opts Options) int {
	if opts.Getenv == nil {
		opts.Getenv = func(string) string { return "" }
	}
	if opts.Stdin == nil {
		opts.Stdin = strings.NewReader("")
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	if opts.CleanupTimeout <= 0 {
		opts.CleanupTimeout = DefaultCleanupTimeout
	}
	if opts.Signals == nil {
		opts.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	switch {
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help"):
		fmt.Fprint(opts.Stdout, usage)
		return ExitOK
	case len(args) == 1 && args[0] == "targets":
		for _, t := range opts.Targets {
			fmt.Fprintln(opts.Stdout, t.Name())
		}
		return ExitOK
	case len(args) == 1 && args[0] == "protocol":
		fmt.Fprintln(opts.Stdout, cloudupload.UploaderProtocol)
		return ExitOK
	case len(args) == 2 && args[0] == "validate":
		return validate(args[1], opts)
	case len(args) == 1 && args[0] == "validate-stream":
		return validateStream(opts)
	case len(args) == 6:
		return upload(ctx, args, opts)
	}
	return cli.UsageError(opts.Stderr, "clouduploader", fmt.Errorf("%d arguments; want <user> <target> <image> "+
		"<target data file> <filename> <result file>, validate <target>, targets or protocol", len(args)))
}

// lookup finds the target called name.
func lookup(name string, all []targets.Target) (targets.Target, error) {
	var names []string
	for _, t := range all {
		if t.Name() == name {
			return t, nil
		}
		names = append(names, t.Name())
	}
	if len(name) > 40 {
		name = name[:40] + "…"
	}
	return nil, cloudupload.Errorf(cloudupload.EINVALID, "unknown target %q (known: %s)", name, strings.Join(names, ", "))
}

// validate checks target data from stdin for the job in the environment.
func validate(name string, opts Options) int {
	data, err := readBounded(opts.Stdin, "target data")
	if err != nil {
		fmt.Fprintln(opts.Stderr, oneLine(cloudupload.ErrorMessage(err)))
		if cloudupload.ErrorCode(err) == cloudupload.EINVALID {
			return ExitUsage
		}
		return ExitFailed
	}
	status, msg := check(name, data, opts)
	if status != ExitOK {
		fmt.Fprintln(opts.Stderr, msg)
	}
	return status
}

// check validates data for target name and the job in opts' environment:
// the exit status of validate and the message for a person.
func check(name string, data []byte, opts Options) (int, string) {
	t, err := lookup(name, opts.Targets)
	if err == nil && len(data) > MaxDataSize {
		err = cloudupload.Errorf(cloudupload.EINVALID, "target data is larger than %d MiB", MaxDataSize>>20)
	}
	if err == nil {
		job := jobFromEnv(opts.Getenv, opts.Getenv("CLOUDUPLOAD_USER"), opts.Getenv("CLOUDUPLOAD_FILENAME"))
		err = t.Check(job, data, opts.Getenv)
	}
	switch {
	case err == nil:
		return ExitOK, ""
	case cloudupload.ErrorCode(err) == cloudupload.EINVALID:
		return ExitUsage, oneLine(cloudupload.ErrorMessage(err))
	}
	return ExitFailed, oneLine(cloudupload.ErrorMessage(err))
}

// validateStream answers cloudupload.ValidateRequests from stdin, one
// cloudupload.ValidateResponse each on stdout, until the end of stdin.
func validateStream(opts Options) int {
	dec := json.NewDecoder(bufio.NewReader(opts.Stdin))
	enc := json.NewEncoder(opts.Stdout)
	for {
		var req cloudupload.ValidateRequest
		if err := dec.Decode(&req); err == io.EOF {
			return ExitOK
		} else if err != nil {
			fmt.Fprintf(opts.Stderr, "validate-stream: %v\n", err)
			return ExitUsage
		}
		// The job's variables come with the request, never from this
		// process's own environment.
		o := opts
		o.Getenv = func(k string) string {
			if v, ok := req.Env[k]; ok || strings.HasPrefix(k, "CLOUDUPLOAD_") && isJobVar(k) {
				return v
			}
			return opts.Getenv(k)
		}
		status, msg := check(req.Target, req.Data, o)
		if err := enc.Encode(cloudupload.ValidateResponse{Status: status, Message: msg}); err != nil {
			return ExitFailed
		}
	}
}

// isJobVar reports whether k is one of the variables that describe a job.
func isJobVar(k string) bool {
	switch k {
	case "CLOUDUPLOAD_JOB", "CLOUDUPLOAD_PROJECT", "CLOUDUPLOAD_REPOSITORY", "CLOUDUPLOAD_ARCH",
		"CLOUDUPLOAD_PACKAGE", "CLOUDUPLOAD_USER", "CLOUDUPLOAD_FILENAME":
		return true
	}
	return false
}

// readBounded reads at most MaxDataSize bytes of target data.
func readBounded(r io.Reader, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxDataSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(data) > MaxDataSize {
		return nil, cloudupload.Errorf(cloudupload.EINVALID, "%s is larger than %d MiB", what, MaxDataSize>>20)
	}
	return data, nil
}

// jobFromEnv returns the job the daemon describes in the environment, with
// what is missing derived: the arch from the file name, the id from the pid.
func jobFromEnv(getenv func(string) string, user, filename string) targets.Job {
	j := targets.Job{
		ID:         getenv("CLOUDUPLOAD_JOB"),
		User:       user,
		Project:    getenv("CLOUDUPLOAD_PROJECT"),
		Repository: getenv("CLOUDUPLOAD_REPOSITORY"),
		Arch:       getenv("CLOUDUPLOAD_ARCH"),
		Package:    getenv("CLOUDUPLOAD_PACKAGE"),
		Filename:   filename,
	}
	if j.ID == "" {
		j.ID = fmt.Sprintf("manual-%d", os.Getpid())
	}
	if j.Arch == "" {
		j.Arch = ArchFromFilename(filename)
	}
	return j
}

// ArchFromFilename finds the architecture in an image's file name as
// OBS/kiwi name them ("…x86_64-1.0.raw.xz", "…aarch64…"; "arm64" means
// aarch64), x86_64 when it names none.
func ArchFromFilename(name string) string {
	for _, a := range []struct{ token, arch string }{
		{"aarch64", "aarch64"}, {"arm64", "aarch64"}, {"x86_64", "x86_64"}, {"amd64", "x86_64"},
		{"ppc64le", "ppc64le"}, {"s390x", "s390x"}, {"riscv64", "riscv64"},
		{"i686", "i686"}, {"i586", "i586"},
	} {
		if containsToken(name, a.token) {
			return a.arch
		}
	}
	return "x86_64"
}

// containsToken reports whether s holds tok not preceded or followed by a
// letter or digit ("x86_64" in "VM.x86_64-1.0", not "arm64" in "farm64x").
func containsToken(s, tok string) bool {
	for i := 0; ; {
		k := strings.Index(s[i:], tok)
		if k < 0 {
			return false
		}
		k += i
		end := k + len(tok)
		if (k == 0 || !isAlnum(s[k-1])) && (end == len(s) || !isAlnum(s[end])) {
			return true
		}
		i = k + 1
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// upload runs one job: argv is OBS's.
func upload(ctx context.Context, args []string, opts Options) (code int) {
	start := time.Now()
	// SIGTERM/SIGINT (or ctx) cancel the upload; the target cleans up;
	// later signals are ignored while it does.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, opts.Signals...)
	defer signal.Stop(sigs)
	if opts.Exit != nil {
		// Deferred after Stop, so it runs before it (see Options.Exit).
		defer func() { opts.Exit(code) }()
	}
	var stopSignal os.Signal
	user, targetName, imagePath, dataPath, filename, resultPath := args[0], args[1], args[2], args[3], args[4], args[5]
	log := targets.NewLog(opts.Stdout)
	if path := opts.Getenv(targets.EnvProgressFile); path != "" {
		log.ReportProgress(path)
	}
	fail := func(code int, err error) int {
		msg := oneLine(err.Error())
		log.Printf("upload failed after %s: %s", targets.Round(time.Since(start)), msg)
		if werr := writeResult(resultPath, msg); werr != nil {
			log.Printf("cannot write the result file: %v", atomicfile.Cause(werr))
		}
		return code
	}
	if err := cloudupload.CheckName("filename", filename); err != nil {
		return fail(ExitUsage, err)
	}
	job := jobFromEnv(opts.Getenv, user, filename)
	target, err := lookup(targetName, opts.Targets)
	if err != nil {
		return fail(ExitUsage, err)
	}
	data, err := readDataFile(dataPath)
	if err != nil {
		return fail(ExitUsage, err)
	}
	if err := target.Check(job, data, opts.Getenv); err != nil {
		code := ExitFailed
		if cloudupload.ErrorCode(err) == cloudupload.EINVALID {
			code = ExitUsage
		}
		return fail(code, fmt.Errorf("invalid target data: %w", err))
	}

	// A signal before the upload starts ends the job at once.
	select {
	case sig := <-sigs:
		log.Printf("received %s before the upload started", sig)
		return killed(log, resultPath, sig, start)
	default:
	}
	if ctx.Err() != nil {
		return killed(log, resultPath, syscall.SIGTERM, start)
	}
	if client := opts.Getenv("CLOUDUPLOAD_CLIENT"); client != "" {
		log.Printf("job %s: %s to %s for user %s, created by client %s", job.ID, jobName(job), target.Name(), user, client)
	} else {
		log.Printf("job %s: %s to %s for user %s", job.ID, jobName(job), target.Name(), user)
	}
	img, err := image.Open(imagePath, filename)
	if err != nil {
		return fail(ExitFailed, err)
	}
	log.Printf("image %s: %s", filename, describe(img))

	type outcome struct {
		result string
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := target.Upload(ctx, targets.Request{Job: job, Data: data, Image: img, Log: log, Getenv: opts.Getenv})
		done <- outcome{res, err}
	}()

	var out outcome
	var deadline <-chan time.Time
	parentDone := ctx.Done()
wait:
	for {
		select {
		case out = <-done:
			// A signal may have arrived with the end of the upload (the
			// daemon signals the whole process group, decompressors
			// included): it still counts.
			if stopSignal == nil {
				select {
				case sig := <-sigs:
					stopSignal = sig
				default:
				}
			}
			break wait
		case sig := <-sigs:
			if stopSignal != nil {
				log.Printf("received %s again: still cleaning up (at most %s)", sig, opts.CleanupTimeout)
				continue
			}
			stopSignal = sig
			log.Printf("received %s: stopping the upload and cleaning up", sig)
			cancel()
			parentDone = nil
			deadline = time.After(opts.CleanupTimeout)
		case <-parentDone:
			parentDone = nil
			if stopSignal == nil {
				stopSignal = syscall.SIGTERM
				log.Printf("stopping the upload and cleaning up")
				deadline = time.After(opts.CleanupTimeout)
			}
		case <-deadline:
			log.Printf("cleanup did not finish within %s; giving up", opts.CleanupTimeout)
			return killed(log, resultPath, stopSignal, start)
		}
	}
	if out.err == nil {
		if stopSignal != nil {
			log.Printf("the upload had completed when %s arrived", stopSignal)
		}
		// What was published stays published: the exit status says so even
		// when the result cannot be recorded (the log then holds it).
		log.Printf("upload succeeded in %s: %s", targets.Round(time.Since(start)), oneLine(out.result))
		if err := writeResult(resultPath, oneLine(out.result)); err != nil {
			log.Printf("cannot write the result file (the upload succeeded): %v", atomicfile.Cause(err))
		}
		return ExitOK
	}
	if stopSignal != nil {
		if !errors.Is(out.err, context.Canceled) {
			log.Printf("the upload ended with: %s", oneLine(out.err.Error()))
		}
		return killed(log, resultPath, stopSignal, start)
	}
	return fail(ExitFailed, out.err)
}

// killed records a job stopped by a signal.
func killed(log *targets.Log, resultPath string, sig os.Signal, start time.Time) int {
	log.Printf("upload killed after %s", targets.Round(time.Since(start)))
	if err := writeResult(resultPath, "killed"); err != nil {
		log.Printf("cannot write the result file: %v", atomicfile.Cause(err))
	}
	if s, ok := sig.(syscall.Signal); ok {
		return ExitSignal + int(s)
	}
	return ExitKilled
}

// readDataFile reads the target data file, bounded.
func readDataFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open target data file: %w", unwrapPath(err))
	}
	defer f.Close()
	return readBounded(f, "target data file")
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func jobName(j targets.Job) string {
	var parts []string
	for _, p := range []string{j.Project, j.Repository, j.Arch, j.Package} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return j.Filename
	}
	return strings.Join(parts, "/") + "/" + j.Filename
}

// describe says what the image is, for the log header.
func describe(img targets.Image) string {
	var b strings.Builder
	if f := img.Format(); f != "" {
		fmt.Fprintf(&b, "format %s", f)
	} else {
		b.WriteString("not a disk image") // the target decides: copied as is, or unpacked (mirror "unpack")
	}
	if st, err := os.Stat(img.Path()); err == nil {
		fmt.Fprintf(&b, ", file %s", targets.MiB(st.Size()))
	}
	if k, ok := img.(interface{ KnownDiskSize() (int64, bool) }); ok && img.Format() != "" {
		if n, ok := k.KnownDiskSize(); ok {
			fmt.Fprintf(&b, ", disk %s", targets.MiB(n))
		}
	}
	return b.String()
}

// oneLine makes s one line of at most 1000 bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 1000 {
		s = s[:1000] + "…"
	}
	return s
}

// writeResult writes the result file atomically, as one line.
func writeResult(path, line string) error {
	return atomicfile.WriteFile(path, []byte(line+"\n"), 0o644)
}
