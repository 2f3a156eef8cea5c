package cli

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ExitUsage is the exit status of a usage or configuration error.
const ExitUsage = 2

// Parse parses args with fs. On -h or --help it prints fs's usage to
// stdout and returns flag.ErrHelp; other errors are returned unprinted,
// for UsageError.
func Parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
	}
	return err
}

// UsageError prints err as command's one-line usage error on stderr and
// returns ExitUsage.
func UsageError(stderr io.Writer, command string, err error) int {
	fmt.Fprintf(stderr, "%s: %v (see %s --help)\n", command, err, command)
	return ExitUsage
}

// ConfigEntry is one `key = value` line of a config file.
type ConfigEntry struct {
	Line       int
	Key, Value string
}

// LineError is a config file line that cannot be read.
type LineError struct {
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ParseConfig reads the config file format the commands share: `key = value`
// lines; blank lines and lines starting with '#' are skipped; a key is
// lower-case letters and '-' and may repeat; values are taken verbatim
// after trimming surrounding blanks (no quoting, no inline comments). A bad
// line is a *LineError; which keys are known is the caller's business.
func ParseConfig(r io.Reader) ([]ConfigEntry, error) {
	var out []ConfigEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, &LineError{n, "want `key = value`"}
		}
		if strings.ContainsFunc(k, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r == '-') }) {
			return nil, &LineError{n, fmt.Sprintf("bad key %q", truncate(k))}
		}
		out = append(out, ConfigEntry{n, k, v})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &LineError{n + 1, "too long"}
		}
		return nil, err
	}
	return out, nil
}

// truncate shortens s to 40 characters for a message.
func truncate(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
