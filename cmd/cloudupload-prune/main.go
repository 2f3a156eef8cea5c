// Command cloudupload-prune applies retention policies to mirror trees (the
// download trees the mirror target publishes into):
//
//	cloudupload-prune [--dry-run] [--policy CLASS=RULE[,RULE…]]... [--policies FILE]
//	                  [--mirror NAME=DIR]... [DIR]...
//
// Policies: CLASS=RULE[,RULE…] with RULE forever, an age (14d, 2w, 36h) or
// keep=N (always keep the N newest successful builds of a series), e.g.
//
//	--policy master=14d,keep=2 --policy release=forever --policy default=30d
//
// The policy file holds one such policy per line ('#' starts a comment
// line); --policy flags are added after it and win for the same class. The
// class "default" applies to builds published without a class; builds of a
// class without a policy are kept.
//
// Trees: --mirror NAME=DIR as the server takes them, or directories (named
// after their base name), or, when neither is given, the trees of
// CLOUDUPLOAD_MIRRORS.
//
// It never deletes a build that a symlink of the tree points to (or into),
// nor one holding a KEEP file. Each decision is printed with its reason, one
// line each ("keep demo:master/centos/20261101T000000Z: master/centos/latest
// points to it", "delete …: older than 14d and 2 newer successful master
// builds kept"). --dry-run decides the same and deletes nothing. A deletion
// takes the series lock (publications wait), renames the build to a hidden
// .trash-* name, then removes it. Exit status: 0 done, 1 an error (the
// other trees are still pruned), 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cloudupload/cloudupload/internal/cli"
	"github.com/cloudupload/cloudupload/targets/mirror"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("cloudupload-prune", flag.ContinueOnError)
	var policyFlags, mirrorFlags list
	dryRun := fs.Bool("dry-run", false, "decide and print, delete nothing")
	policyFile := fs.String("policies", "", "read policies from `FILE`, one CLASS=RULE[,RULE…] per line")
	fs.Var(&policyFlags, "policy", "retention of a class as `CLASS=RULE[,RULE…]`, e.g. master=14d,keep=2 or release=forever (repeatable)")
	fs.Var(&mirrorFlags, "mirror", "a tree to prune, as `NAME=DIR` (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: cloudupload-prune [--dry-run] [--policy CLASS=RULES]... [--policies FILE] [--mirror NAME=DIR]... [DIR]...")
		fs.PrintDefaults()
	}
	usage := func(format string, a ...any) int {
		return cli.UsageError(stderr, "cloudupload-prune", fmt.Errorf(format, a...))
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return usage("%v", err)
	}

	var policies []mirror.Policy
	if *policyFile != "" {
		f, err := os.Open(*policyFile)
		if err != nil {
			return usage("%v", err)
		}
		policies, err = mirror.ParsePolicies(f)
		f.Close()
		if err != nil {
			return usage("%s: %v", *policyFile, err)
		}
	}
	for _, s := range policyFlags {
		p, err := mirror.ParsePolicy(s)
		if err != nil {
			return usage("--policy: %v", err)
		}
		policies = append(policies, p) // later entries win
	}
	if len(policies) == 0 {
		return usage("no policy given (--policy or --policies): nothing would ever be deleted")
	}

	var trees []mirror.Tree
	for _, m := range mirrorFlags {
		name, dir, ok := strings.Cut(m, "=")
		if !ok || strings.TrimSpace(dir) == "" {
			return usage("--mirror %q: want NAME=DIR", m)
		}
		abs, err := filepath.Abs(strings.TrimSpace(dir))
		if err != nil {
			return usage("--mirror %s: %v", m, err)
		}
		t, err := mirror.ParseTrees(strings.TrimSpace(name) + "=" + abs)
		if err != nil {
			return usage("--mirror: %v", err)
		}
		trees = append(trees, t...)
	}
	for _, dir := range fs.Args() {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return usage("%s: %v", dir, err)
		}
		trees = append(trees, mirror.Tree{Name: filepath.Base(abs), Dir: abs})
	}
	if len(trees) == 0 {
		t, err := mirror.ParseTrees(getenv(mirror.EnvMirrors))
		if err != nil {
			return usage("%s: %v", mirror.EnvMirrors, err)
		}
		trees = t
	}
	if len(trees) == 0 {
		return usage("no tree given (--mirror NAME=DIR, a directory, or %s)", mirror.EnvMirrors)
	}
	for _, t := range trees {
		if st, err := os.Stat(t.Dir); err != nil || !st.IsDir() {
			return usage("tree %s: %s is not a directory", t.Name, t.Dir)
		}
	}

	if *dryRun {
		fmt.Fprintln(stdout, "dry run: nothing will be deleted")
	}
	status := 0
	for _, t := range trees {
		deleted, kept := 0, 0
		p := &mirror.Pruner{Policies: policies, DryRun: *dryRun, Report: func(d mirror.Decision) {
			fmt.Fprintln(stdout, d)
			if d.Delete {
				deleted++
			} else {
				kept++
			}
		}}
		_, err := p.Prune(ctx, t)
		verb := "deleted"
		if *dryRun {
			verb = "to delete"
		}
		fmt.Fprintf(stdout, "%s: %d %s, %d kept\n", t.Name, deleted, verb, kept)
		if err != nil {
			fmt.Fprintf(stderr, "cloudupload-prune: %v\n", err)
			status = 1
		}
	}
	return status
}
