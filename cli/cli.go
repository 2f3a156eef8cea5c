package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/cloudupload/cloudupload/client"
)

// Exit statuses; see the package documentation.
const (
	ExitOK        = 0
	ExitJobFailed = 1
	ExitUsage     = 2
	ExitServer    = 3
	ExitTimeout   = 4
	// ExitInterrupted is the shell's status of a SIGINT: the client was
	// stopped (Ctrl-C) before it was done.
	ExitInterrupted = 130
)

// App is one run of the client with its surroundings, so tests can run it
// in-process as well as as a program.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Terminal reports whether w is a terminal and its width; nil: the
	// files' own answer (golang.org/x/term).
	Terminal func(w io.Writer) (bool, int)
}

// NewApp returns the App of this process.
func NewApp() *App {
	return &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// command is one subcommand.
type command struct {
	name, args, summary string
	// setup declares the command's own flags into fs and returns what
	// runs the command with them: each Run has its own flag values.
	setup func(fs *flag.FlagSet) runFunc
}

// runFunc runs a command with its positional arguments.
type runFunc func(ctx context.Context, a *App, s *settings, args []string) error

var commands []*command

func init() {
	commands = []*command{cmdSubmit, cmdPush, cmdList, cmdShow, cmdLog, cmdKill, cmdWait}
}

// usageError is a mistake on the command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError carries an exit status that is not an error to report (a job
// that failed: its outcome was already printed).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// commonFlags declares the flags every command takes.
func commonFlags(fs *flag.FlagSet, s *settings) {
	fs.StringVar(&s.URL, "url", s.URL, "server `URL` (env "+EnvURL+", config url; default "+DefaultURL+")")
	fs.StringVar(&s.TokenFile, "token-file", s.TokenFile, "`FILE` holding the bearer token (env "+EnvToken+", config token or token-file)")
	fs.StringVar(&s.Config, "config", s.Config, "config `FILE` (env "+EnvConfig+"; default ~/.config/cloudupload/config)")
	fs.BoolVar(&s.JSON, "json", s.JSON, "print JSON for scripts instead of text")
}

// Run runs the command line args (without the program name) and returns
// the exit status.
func (a *App) Run(ctx context.Context, args []string) int {
	s := &settings{}
	global := flag.NewFlagSet("cloudupload", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	commonFlags(global, s)
	help := global.Bool("help", false, "")
	global.BoolVar(help, "h", false, "")
	if err := global.Parse(args); err != nil {
		return a.fail(usagef("%v (see cloudupload --help)", err))
	}
	args = global.Args()
	if len(args) == 0 && !*help {
		a.usage(a.Stderr)
		return ExitUsage
	}
	if *help || args[0] == "help" && len(args) == 1 {
		a.usage(a.Stdout)
		return ExitOK
	}
	name := args[0]
	if name == "help" {
		name, args = args[1], []string{args[1], "--help"}
	}
	var cmd *command
	for _, c := range commands {
		if c.name == name {
			cmd = c
		}
	}
	if cmd == nil {
		return a.fail(usagef("unknown command %q (see cloudupload --help)", clean(name, 40)))
	}
	fs := flag.NewFlagSet("cloudupload "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	commonFlags(fs, s)
	run := cmd.setup(fs)
	fs.Usage = func() {}
	if err := fs.Parse(interleave(fs, args[1:])); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmd.help(a.Stdout, fs)
			return ExitOK
		}
		return a.fail(usagef("%s: %v (see cloudupload %s --help)", cmd.name, err, cmd.name))
	}
	if err := s.resolve(a.Getenv, a.Stderr); err != nil {
		return a.fail(usagef("%v", err))
	}
	return a.fail(run(ctx, a, s, fs.Args()))
}

// interleave lets flags follow the positional arguments (`show 5 --json`)
// by moving the arguments after the flags.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			pos = append(pos, arg)
			continue
		}
		flags = append(flags, arg)
		name := strings.TrimLeft(arg, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	return append(append(flags, "--"), pos...)
}

// fail prints err as one line on stderr and returns its exit status.
func (a *App) fail(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(a.Stderr, "cloudupload: interrupted")
		return ExitInterrupted
	}
	fmt.Fprintln(a.Stderr, "cloudupload: "+clean(err.Error(), 0))
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		return ExitUsage
	case client.IsServerError(err):
		return ExitServer
	case errors.Is(err, context.DeadlineExceeded):
		return ExitTimeout
	}
	return ExitUsage
}

func (a *App) usage(w io.Writer) {
	fmt.Fprint(w, `cloudupload: a client of the cloud upload server (cloudupload-server)

Usage: cloudupload [--url URL] [--token-file FILE] [--config FILE] [--json] COMMAND [flags] [args]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %s %s\n        %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprint(w, `
Run 'cloudupload COMMAND --help' for a command's flags.

Settings come from flags, then the environment (`+EnvURL+`, `+EnvToken+`,
`+EnvUser+`, `+EnvConfig+`), then the config file (~/.config/cloudupload/config:
lines "key = value" with keys url, token, token-file, user).

Exit status: 0 done (the job succeeded, for wait and the following commands),
1 the job failed, 2 usage or local error, 3 the server could not be reached or
refused the request, 4 wait --timeout elapsed, 130 interrupted.
`)
}

func (c *command) help(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: cloudupload %s [flags] %s\n\n%s\n\nFlags:\n", c.name, c.args, c.summary)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// terminal reports whether w is a terminal, and its width.
func (a *App) terminal(w io.Writer) (bool, int) {
	if a.Terminal != nil {
		return a.Terminal(w)
	}
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width <= 0 {
		width = 80
	}
	return true, width
}

// newMeter returns the progress display on stderr, log text to stdout.
func (a *App) newMeter() *meter {
	tty, _ := a.terminal(a.Stderr)
	return &meter{err: a.Stderr, out: a.Stdout, tty: tty, interval: 5 * time.Second,
		width: func() int { _, w := a.terminal(a.Stderr); return max(w, 20) }}
}

// printJSON writes v as indented JSON on stdout.
func (a *App) printJSON(v any) error {
	enc := json.NewEncoder(a.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// sortedExtra returns the extra elements of j in tag order.
func sortedExtra(j client.Job) []string {
	keys := make([]string, 0, len(j.Extra))
	for k := range j.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
