package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/client"
)

// maxTargetData is the server's limit on target data.
const maxTargetData = 10 << 20

// jobFlags are the flags of the commands that create a job.
type jobFlags struct {
	target, data, user string
	follow             bool
}

func (j *jobFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&j.target, "target", "", "target `NAME` (ec2, s3, mirror, azure…) (required)")
	fs.StringVar(&j.data, "data", "", "target data: a JSON `FILE`, or - for stdin")
	fs.StringVar(&j.user, "user", "", "the job's user (env "+EnvUser+", config user; default the login name)")
	fs.BoolVar(&j.follow, "follow", false, "follow the job's log until it ends; exit status as wait")
	fs.BoolVar(&j.follow, "f", false, "short for --follow")
}

// readData reads the target data named by --data.
func (a *App) readData(name string) ([]byte, error) {
	if name == "" {
		return nil, nil
	}
	var r io.Reader
	if name == "-" {
		r, name = a.Stdin, "stdin"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("target data: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxTargetData+1))
	if err != nil {
		return nil, fmt.Errorf("target data: %w", err)
	}
	if len(b) > maxTargetData {
		return nil, fmt.Errorf("target data is larger than %d MiB", maxTargetData>>20)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("target data from %s is not valid JSON", name)
	}
	return b, nil
}

// connect returns the client of s.
func connect(s *settings) (*client.Client, error) {
	c, err := client.New(s.URL, s.Token)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return c, nil
}

// jobID parses the one argument of show, log, kill and wait.
func jobID(args []string) (int64, error) {
	if len(args) != 1 {
		return 0, usagef("want one job id, got %d arguments", len(args))
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id < 0 {
		return 0, usagef("job id %q is not a number", clean(args[0], 40))
	}
	return id, nil
}

// jobClient parses the job id of show, log, kill and wait and connects.
func jobClient(s *settings, args []string) (int64, *client.Client, error) {
	id, err := jobID(args)
	if err != nil {
		return 0, nil, err
	}
	c, err := connect(s)
	return id, c, err
}

var cmdSubmit = &command{
	name: "submit", args: "PROJECT/REPOSITORY/ARCH/PACKAGE/FILENAME",
	summary: "create a job for an image of the server's build tree or repository server",
}

func init() {
	cmdSubmit.setup = func(fs *flag.FlagSet) runFunc {
		var jf jobFlags
		jf.declare(fs)
		return func(ctx context.Context, a *App, s *settings, args []string) error {
			if len(args) != 1 {
				return usagef("submit: want one PROJECT/REPOSITORY/ARCH/PACKAGE/FILENAME")
			}
			parts := strings.Split(args[0], "/")
			if len(parts) != 5 {
				return usagef("submit: %q is not PROJECT/REPOSITORY/ARCH/PACKAGE/FILENAME", clean(args[0], 100))
			}
			if jf.target == "" {
				return usagef("submit: --target is required")
			}
			data, err := a.readData(jf.data)
			if err != nil {
				return err
			}
			c, err := connect(s)
			if err != nil {
				return err
			}
			b := client.Build{Project: parts[0], Repository: parts[1], Arch: parts[2], Package: parts[3], Filename: parts[4]}
			job, err := c.Submit(ctx, userOf(s, jf.user), jf.target, b, data)
			if err != nil {
				return err
			}
			return a.created(ctx, c, s, job, jf.follow)
		}
	}
}

func userOf(s *settings, flagUser string) string {
	if flagUser != "" {
		return flagUser
	}
	return s.User
}

// created reports a new job, and follows it when asked.
func (a *App) created(ctx context.Context, c *client.Client, s *settings, job client.Job, follow bool) error {
	if !follow {
		if s.JSON {
			return a.printJSON(job)
		}
		fmt.Fprintf(a.Stdout, "job %d %s: %s to %s\n", job.ID, job.State, clean(job.Filename, 0), clean(job.Target, 0))
		return nil
	}
	fmt.Fprintf(a.Stderr, "job %d %s: %s to %s\n", job.ID, job.State, clean(job.Filename, 0), clean(job.Target, 0))
	return a.follow(ctx, c, s, job.ID)
}

var cmdPush = &command{
	name: "push", args: "FILE|DIR",
	summary: "create a job and send its image: a file as it is, a directory as a tar archive (mirror: unpacked)",
}

func init() {
	cmdPush.setup = func(fs *flag.FlagSet) runFunc {
		var jf jobFlags
		var b client.Build
		var unpack bool
		jf.declare(fs)
		fs.BoolVar(&unpack, "unpack", false, "the FILE is a tar archive (.tar, .tar.gz, .tar.xz, .tar.zst) the mirror target publishes as a whole build (implied for a DIR)")
		fs.StringVar(&b.Project, "project", "", "the job's project (default home:USER)")
		fs.StringVar(&b.Repository, "repository", "images", "the job's repository")
		fs.StringVar(&b.Arch, "arch", "noarch", "the job's architecture")
		fs.StringVar(&b.Package, "package", "", "the job's package (default: the file's name up to its first dot)")
		fs.StringVar(&b.Filename, "filename", "", "the image's name (default: the file's name; DIR.tar for a directory)")
		return func(ctx context.Context, a *App, s *settings, args []string) error {
			if len(args) != 1 {
				return usagef("push: want one FILE or DIR")
			}
			if jf.target == "" {
				return usagef("push: --target is required")
			}
			data, err := a.readData(jf.data)
			if err != nil {
				return err
			}
			user := userOf(s, jf.user)
			img, err := openImage(args[0], jf.target, data, unpack)
			if err != nil {
				return err
			}
			defer img.Close()
			base := filepath.Base(filepath.Clean(args[0]))
			if b.Filename == "" {
				b.Filename = base
				if img.dir {
					b.Filename += ".tar"
				}
			}
			if b.Package == "" {
				b.Package, _, _ = strings.Cut(base, ".")
			}
			if b.Project == "" {
				b.Project = "home:" + user
			}
			c, err := connect(s)
			if err != nil {
				return err
			}
			job, err := c.Skeleton(ctx, user, jf.target, b, img.size, img.data)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stderr, "job %d created: sending %s (%s)\n", job.ID, clean(b.Filename, 0), img.what)
			if err := a.send(ctx, c, job.ID, img); err != nil {
				if !client.IsServerError(err) {
					err = fmt.Errorf("%w; job %d fails for its incomplete image", err, job.ID)
				}
				return err
			}
			if !jf.follow {
				if job, err = c.Get(ctx, job.ID); err != nil {
					return err
				}
			}
			return a.created(ctx, c, s, job, jf.follow)
		}
	}
}

// image is what push sends.
type image struct {
	r    io.ReadCloser
	size int64
	data []byte // target data, with "unpack": true for a directory
	dir  bool
	what string // for people: "16.0 MiB" or "12 files, 1.2 GiB, as a 1.2 GiB tar archive"
}

func (i *image) Close() error { return i.r.Close() }

// openImage opens the file or plans the directory's archive. A directory,
// or a file with unpack, goes to the mirror target only, which unpacks it
// ("unpack": true added to its target data).
func openImage(path, target string, data []byte, unpack bool) (*image, error) {
	if path == "-" {
		return nil, usagef("push: the image's size must be known before it is sent: give a file or a directory, not stdin")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if (fi.IsDir() || unpack) && target != "mirror" {
		return nil, usagef("push: only the mirror target unpacks an archive (a directory or --unpack), not %s", target)
	}
	if unpack || fi.IsDir() {
		if data, err = withUnpack(data); err != nil {
			return nil, err
		}
	}
	if fi.IsDir() {
		a, err := client.TarDir(path)
		if err != nil {
			return nil, err
		}
		return &image{r: a.Reader(), size: a.Size(), data: data, dir: true,
			what: fmt.Sprintf("%d files, %s, as a %s tar archive", a.Files(), bytesHuman(a.ContentBytes()), bytesHuman(a.Size()))}, nil
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file or a directory", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if fi, err = f.Stat(); err != nil {
		f.Close()
		return nil, err
	}
	r := struct {
		io.Reader
		io.Closer
	}{client.ExactReader(f, fi.Size(), path), f}
	return &image{r: r, size: fi.Size(), data: data, what: bytesHuman(fi.Size())}, nil
}

// withUnpack adds "unpack": true to a JSON object of target data.
func withUnpack(data []byte) ([]byte, error) {
	obj := map[string]json.RawMessage{}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("target data must be a JSON object to push a directory")
		}
	}
	obj["unpack"] = json.RawMessage("true")
	return json.Marshal(obj)
}

// send PUTs the image, showing its progress.
func (a *App) send(ctx context.Context, c *client.Client, id int64, img *image) error {
	var done atomic.Int64
	body := &countReader{r: img.r, n: &done}
	m := a.newMeter()
	start := time.Now()
	label := fmt.Sprintf("job %d sending", id)
	draw := func() {
		f := unknownFigures()
		n := done.Load()
		f.Done, f.Total = n, img.size
		if img.size > 0 {
			f.Percent = int(n * 100 / img.size)
		}
		if el := time.Since(start).Seconds(); el > 0.5 && n > 0 {
			f.Rate = float64(n) / el
			f.ETA = float64(img.size-n) / f.Rate
		}
		m.show(label, f)
	}
	stop := tick(m, draw)
	err := c.Put(ctx, id, body, img.size)
	stop()
	m.clear()
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(a.Stderr, "job %d: sent %s in %s (%s/s)\n", id, bytesHuman(img.size), duration(el),
		bytesHuman(int64(float64(img.size)/max(el.Seconds(), 0.001))))
	return nil
}

// tick calls draw every 200 ms on a terminal (every second otherwise, the
// meter thinning plain lines further) until the returned stop is called.
func tick(m *meter, draw func()) (stop func()) {
	every := time.Second
	if m.tty {
		every = 200 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				draw()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var cmdList = &command{
	name: "list", args: "[ID…]",
	summary: "list the jobs (all, or those given) as a table",
}

func init() {
	cmdList.setup = func(fs *flag.FlagSet) runFunc {
		var states, user, target string
		fs.StringVar(&states, "state", "", "only jobs in these `STATES` (comma-separated; also: active, finished)")
		fs.StringVar(&user, "user", "", "only the jobs of `USER`")
		fs.StringVar(&target, "target", "", "only the jobs for `TARGET`")
		return func(ctx context.Context, a *App, s *settings, args []string) error {
			f := client.Filter{User: user, Target: target}
			for _, arg := range args {
				id, err := jobID([]string{arg})
				if err != nil {
					return err
				}
				f.IDs = append(f.IDs, id)
			}
			var err error
			if f.States, err = parseStates(states); err != nil {
				return err
			}
			c, err := connect(s)
			if err != nil {
				return err
			}
			jobs, err := c.List(ctx, f)
			if err != nil {
				return err
			}
			if s.JSON {
				if jobs == nil {
					jobs = []client.Job{}
				}
				return a.printJSON(jobs)
			}
			a.table(jobs)
			return nil
		}
	}
}

// parseStates reads --state: state names, "active" (not final) and
// "finished" (final).
func parseStates(v string) ([]cloudupload.State, error) {
	var out []cloudupload.State
	if v == "" {
		return nil, nil
	}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		switch st := cloudupload.State(s); {
		case s == "active":
			out = append(out, cloudupload.StateCreated, cloudupload.StateReceiving, cloudupload.StateScheduled, cloudupload.StateUploading)
		case s == "finished":
			out = append(out, cloudupload.StateSucceeded, cloudupload.StateFailed)
		case st.Valid():
			out = append(out, st)
		default:
			var names []string
			for _, k := range cloudupload.States {
				names = append(names, string(k))
			}
			return nil, usagef("--state %q: want one of %s, active, finished", clean(s, 40), strings.Join(names, ", "))
		}
	}
	return out, nil
}

// table prints jobs as columns.
func (a *App) table(jobs []client.Job) {
	tw := tabwriter.NewWriter(a.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPROGRESS\tUSER\tTARGET\tAGE\tIMAGE\tDETAILS")
	now := time.Now()
	for _, j := range jobs {
		progress := "-"
		if j.Progress != nil {
			progress = strconv.Itoa(*j.Progress) + "%"
		}
		age := "-"
		if j.Created > 0 {
			age = duration(now.Sub(j.CreatedTime()))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.State, progress, clean(j.User, 20), clean(j.Target, 12),
			age, clean(j.Project+"/"+j.Package+"/"+j.Filename, 60), clean(j.Details, 50))
	}
	tw.Flush()
	if len(jobs) == 0 {
		fmt.Fprintln(a.Stderr, "no jobs")
	}
}

var cmdShow = &command{name: "show", args: "ID", summary: "show one job"}

func init() {
	cmdShow.setup = func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *App, s *settings, args []string) error {
			id, c, err := jobClient(s, args)
			if err != nil {
				return err
			}
			job, err := c.Get(ctx, id)
			if err != nil {
				return err
			}
			if s.JSON {
				return a.printJSON(job)
			}
			a.showJob(job)
			return nil
		}
	}
}

func (a *App) showJob(j client.Job) {
	tw := tabwriter.NewWriter(a.Stdout, 2, 8, 2, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, clean(v, 0))
		}
	}
	line("job", j.Name())
	line("state", string(j.State))
	line("details", j.Details)
	if j.Progress != nil || j.Transfer != nil {
		var e estimator
		line("progress", e.figures(j, time.Now()).text())
	}
	if j.Created > 0 {
		line("created", j.CreatedTime().UTC().Format("2006-01-02 15:04:05 UTC")+" ("+duration(time.Since(j.CreatedTime()))+" ago)")
	}
	line("user", j.User)
	line("target", j.Target)
	line("build", strings.Join([]string{j.Project, j.Repository, j.Arch, j.Package}, "/"))
	line("filename", j.Filename)
	if j.Size > 0 {
		line("size", fmt.Sprintf("%s (%d bytes)", bytesHuman(j.Size), j.Size))
	}
	if j.Pid > 0 {
		line("pid", strconv.Itoa(j.Pid))
	}
	for _, k := range sortedExtra(j) {
		line(k, j.Extra[k])
	}
	tw.Flush()
}

var cmdLog = &command{name: "log", args: "ID", summary: "print a job's log; with -f, follow it until the job ends"}

func init() {
	cmdLog.setup = func(fs *flag.FlagSet) runFunc {
		var follow bool
		fs.BoolVar(&follow, "follow", false, "follow the log until the job ends, with its progress on a terminal; exit status as wait")
		fs.BoolVar(&follow, "f", false, "short for --follow")
		return func(ctx context.Context, a *App, s *settings, args []string) error {
			id, c, err := jobClient(s, args)
			if err != nil {
				return err
			}
			if follow {
				return a.follow(ctx, c, s, id)
			}
			_, err = c.Log(ctx, id, 0, a.Stdout)
			return err
		}
	}
}

// follow prints the log of job id as it grows, with the job's progress on
// stderr (a bar on a terminal, otherwise a line when the state changes),
// then the outcome; the exit status is wait's.
func (a *App) follow(ctx context.Context, c *client.Client, s *settings, id int64) error {
	m := a.newMeter()
	out := io.Writer(m)
	if s.JSON {
		out = io.Discard // stdout is for the final document
	}
	if !m.tty {
		// The log tells the upload's progress: plain lines only say
		// when the state changes (receiving, scheduled…).
		m.interval = 1<<63 - 1
	}
	var e estimator
	p := c.Poller(id)
	stop := tick(m, func() {
		if j, err := p.Get(ctx); err == nil && !j.State.Final() {
			m.show(fmt.Sprintf("job %d %s", id, j.State), e.figures(j, time.Now()))
		}
	})
	job, err := c.FollowLog(ctx, id, 0, out)
	stop()
	m.clear()
	if err != nil {
		return err
	}
	return a.outcome(s, job)
}

// outcome reports a final job and turns it into the exit status.
func (a *App) outcome(s *settings, job client.Job) error {
	if s.JSON {
		if err := a.printJSON(job); err != nil {
			return err
		}
	} else {
		a.reportFinal(job)
	}
	if job.State != cloudupload.StateSucceeded {
		return &exitError{ExitJobFailed}
	}
	return nil
}

// reportFinal says on stderr how a job ended.
func (a *App) reportFinal(job client.Job) {
	took := ""
	if job.Created > 0 {
		took = " after " + duration(time.Since(job.CreatedTime()))
	}
	fmt.Fprintf(a.Stderr, "job %d %s%s: %s\n", job.ID, job.State, took, clean(job.Details, 0))
}

var cmdKill = &command{name: "kill", args: "ID", summary: "kill a job (it ends failed, killed); a finished job is left as it is"}

func init() {
	cmdKill.setup = func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *App, s *settings, args []string) error {
			id, c, err := jobClient(s, args)
			if err != nil {
				return err
			}
			job, err := c.Kill(ctx, id)
			if err != nil {
				return err
			}
			if s.JSON {
				return a.printJSON(job)
			}
			fmt.Fprintf(a.Stdout, "job %d %s: %s\n", job.ID, job.State, clean(job.Details, 0))
			return nil
		}
	}
}

var cmdWait = &command{name: "wait", args: "ID…",
	summary: "wait until the jobs end: exit 0 when all succeeded, 1 when one failed"}

func init() {
	cmdWait.setup = func(fs *flag.FlagSet) runFunc {
		var interval, timeout time.Duration
		fs.DurationVar(&interval, "interval", time.Second, "how often to ask the server")
		fs.DurationVar(&timeout, "timeout", 0, "give up after this long in all (exit 4); 0: wait as long as it takes")
		return func(ctx context.Context, a *App, s *settings, args []string) error {
			if len(args) == 0 {
				return usagef("wait: want one or more job ids")
			}
			var ids []int64
			for _, arg := range args {
				id, err := jobID([]string{arg})
				if err != nil {
					return err
				}
				ids = append(ids, id)
			}
			c, err := connect(s)
			if err != nil {
				return err
			}
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			// One after the other: the total is the longest job's time.
			var jobs []client.Job
			failed := false
			for _, id := range ids {
				m := a.newMeter()
				var e estimator
				job, err := c.Wait(ctx, id, interval, func(j client.Job) {
					if !j.State.Final() {
						m.show(fmt.Sprintf("job %d %s", id, j.State), e.figures(j, time.Now()))
					}
				})
				m.clear()
				if errors.Is(err, context.DeadlineExceeded) && timeout > 0 {
					return fmt.Errorf("job %d is still %s after %s: %w", id, job.State, timeout, context.DeadlineExceeded)
				}
				if err != nil {
					return err
				}
				if !s.JSON {
					a.reportFinal(job)
				}
				failed = failed || job.State != cloudupload.StateSucceeded
				jobs = append(jobs, job)
			}
			if s.JSON {
				var v any = jobs
				if len(jobs) == 1 {
					v = jobs[0]
				}
				if err := a.printJSON(v); err != nil {
					return err
				}
			}
			if failed {
				return &exitError{ExitJobFailed}
			}
			return nil
		}
	}
}
