package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
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
