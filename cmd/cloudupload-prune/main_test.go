package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload/targets/mirror"
)

func publish(t *testing.T, tree, image, series, id, result, class string, links ...string) {
	t.Helper()
	o := &mirror.Options{Tree: mirror.Tree{Name: "demo", Dir: tree}, Series: series, BuildID: id, Result: result, Retention: class, Links: links}
	if _, err := mirror.Publish(context.Background(), o, image, "image.raw", nil); err != nil {
		t.Fatal(err)
	}
}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, func(string) string { return "" })
	return code, out.String(), errb.String()
}

func lines(out, prefix string) []string {
	var l []string
	for _, s := range strings.Split(out, "\n") {
		if strings.HasPrefix(s, prefix) {
			l = append(l, s)
		}
	}
	return l
}

func TestDryRunListsWhatTheRunDeletes(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "demo")
	os.Mkdir(tree, 0o755)
	image := filepath.Join(dir, "image.raw")
	os.WriteFile(image, []byte("disk"), 0o644)
	for _, id := range []string{"20200101T000000Z", "20200102T000000Z", "20200103T000000Z", "20200104T000000Z"} {
		publish(t, tree, image, "master/centos", id, "success", "master", "latest")
	}
	publish(t, tree, image, "master/centos", "20200105T000000Z", "fail", "master", "latest")
	publish(t, tree, image, "release/1.0", "20200101T000000Z", "success", "release")
	os.WriteFile(filepath.Join(tree, "master/centos/20200101T000000Z/KEEP"), nil, 0o644)

	policyFile := filepath.Join(dir, "policies")
	os.WriteFile(policyFile, []byte("# retention\nmaster=1d,keep=2\nrelease=1d\n"), 0o644)
	args := []string{"--policies", policyFile, "--policy", "release=forever", "--mirror", "demo=" + tree}

	code, dry, stderr := runCmd(t, append([]string{"--dry-run"}, args...)...)
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, stderr)
	}
	t.Logf("dry run:\n%s", dry)
	planned := lines(dry, "delete ")
	want := []string{
		"delete demo:master/centos/20200102T000000Z: older than 1d and 2 newer successful master builds kept",
		"delete demo:master/centos/20200105T000000Z: failed build older than 1d (master)",
	}
	if !reflect.DeepEqual(planned, want) {
		t.Fatalf("dry run plans\n%q\nwant\n%q", planned, want)
	}
	for _, keep := range []string{
		"keep demo:master/centos/20200101T000000Z: pinned by KEEP",
		"keep demo:master/centos/20200104T000000Z: master/centos/latest points to it",
		"keep demo:release/1.0/20200101T000000Z: class release is kept forever",
	} {
		if !strings.Contains(dry, keep+"\n") {
			t.Errorf("dry run lacks %q", keep)
		}
	}
	if _, err := os.Stat(filepath.Join(tree, "master/centos/20200102T000000Z")); err != nil {
		t.Fatal("dry run deleted a build")
	}

	code, real, stderr := runCmd(t, args...)
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	if got := lines(real, "delete "); !reflect.DeepEqual(got, planned) {
		t.Fatalf("run deleted\n%q\nthe dry run planned\n%q", got, planned)
	}
	if !strings.Contains(real, "demo: 2 deleted, 4 kept\n") {
		t.Errorf("summary missing:\n%s", real)
	}
	remaining, _ := mirror.ListBuilds(filepath.Join(tree, "master/centos"))
	var ids []string
	for _, b := range remaining {
		ids = append(ids, b.ID)
	}
	if want := []string{"20200101T000000Z", "20200103T000000Z", "20200104T000000Z"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("remaining %v, want %v", ids, want)
	}
	// Given as a directory, the same tree has nothing more to delete.
	code, again, _ := runCmd(t, "--policies", policyFile, "--policy", "release=forever", tree)
	if code != 0 || len(lines(again, "delete ")) != 0 {
		t.Fatalf("second run: exit %d\n%s", code, again)
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]string{
		"no policy":       {dir},
		"no tree given":   {"--policy", "m=1d"},
		"not a directory": {"--policy", "m=1d", filepath.Join(dir, "missing")},
		"keep wants":      {"--policy", "m=1d,keep=x", dir},
		"want NAME=DIR":   {"--policy", "m=1d", "--mirror", "nodir"},
	}
	for want, args := range cases {
		code, _, stderr := runCmd(t, args...)
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", args, code, stderr, want)
		}
	}
}
