package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
		fs.Bool("dry-run", false, "decide, do nothing")
		return fs
	}
	var out bytes.Buffer
	if err := Parse(newFS(), []string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) || !bytes.Contains(out.Bytes(), []byte("-dry-run")) {
		t.Errorf("--help: %v, printed %q", err, out.String())
	}
	out.Reset()
	err := Parse(newFS(), []string{"--nope"}, &out)
	if err == nil || out.Len() != 0 {
		t.Fatalf("bad flag: %v, printed %q", err, out.String())
	}
	var stderr bytes.Buffer
	if code := UsageError(&stderr, "cmd", err); code != ExitUsage || stderr.String() != "cmd: flag provided but not defined: -nope (see cmd --help)\n" {
		t.Errorf("usage error: %d %q", code, stderr.String())
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("# c\nlisten = 1:2\nmirror = a=b\n")
	f.Add("=\n")
	f.Add("a b = c\n")
	f.Fuzz(func(t *testing.T, s string) {
		entries, err := ParseConfig(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Key == "" || strings.ContainsAny(e.Key, " =#\n") || e.Value != strings.TrimSpace(e.Value) {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}
