package main

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandLines runs the three commands as built: --help prints the
// usage to stdout and exits 0; a bad flag or setting is one line
// "<command>: <what> (see <command> --help)" on stderr and exit 2.
func TestCommandLines(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/cloudupload/cloudupload/cmd/...").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(name string, args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(dir, name), args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stdout.String(), stderr.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, stdout.String(), stderr.String()
	}
	for _, name := range []string{"cloudupload-server", "clouduploader", "cloudupload-prune"} {
		for _, h := range []string{"-h", "--help"} {
			code, stdout, stderr := run(name, h)
			if code != 0 || !strings.Contains(stdout, "usage") || stderr != "" {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q", name, h, code, stdout, stderr)
			}
		}
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"cloudupload-server", []string{"--nope"}, "flag provided but not defined: -nope"},
		{"cloudupload-server", []string{"--mirror", "d=/nonexistent"}, "--mirror d=/nonexistent: the directory does not exist"},
		{"cloudupload-server", []string{"--max-uploads", "0"}, "--max-uploads must be at least 1"},
		{"cloudupload-server", []string{"--shim", "/nonexistent"}, "--shim /nonexistent: not an executable file"},
		{"cloudupload-prune", []string{"--nope"}, "flag provided but not defined: -nope"},
		{"cloudupload-prune", []string{"--policy", "x"}, "--policy: "},
		{"clouduploader", []string{"a", "b"}, "2 arguments; want <user>"},
	} {
		code, stdout, stderr := run(c.name, c.args...)
		prefix, suffix := c.name+": ", " (see "+c.name+" --help)\n"
		if code != 2 || stdout != "" || !strings.HasPrefix(stderr, prefix+c.want) || !strings.HasSuffix(stderr, suffix) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s %v: exit %d, stdout %q, stderr %q; want exit 2 and %q…%q", c.name, c.args, code, stdout, stderr, prefix+c.want, suffix)
		}
	}
}
