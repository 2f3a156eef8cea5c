package mirror

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func (e *env) publish(t *testing.T, series, id, result, class string, links ...string) {
	t.Helper()
	o := &Options{Tree: Tree{Name: "demo", Dir: e.tree}, Series: series, BuildID: id, Result: result, Retention: class, Links: links}
	if _, err := Publish(context.Background(), o, e.image, "image.raw.xz", nil); err != nil {
		t.Fatal(err)
	}
}

// listTree lists every path under dir (with symlink targets), sorted.
func listTree(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			rel += " -> " + target
		}
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out
}

func mustPolicies(t *testing.T, specs ...string) []Policy {
	var ps []Policy
	for _, s := range specs {
		p, err := ParsePolicy(s)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestPruneDryRunEqualsRun(t *testing.T) {
	e := newEnv(t, []byte("image"))
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	m := "master/centos"
	e.publish(t, m, "20261001T000000Z", "success", "master", "latest")
	e.publish(t, m, "20261002T000000Z", "success", "master", "latest")
	e.publish(t, m, "20261003T000000Z", "fail", "master", "latest")
	e.publish(t, m, "20261010T000000Z", "success", "master", "latest")
	e.publish(t, m, "20261101T000000Z", "success", "master", "latest")
	e.publish(t, m, "20261105T000000Z", "success", "master", "latest")
	e.publish(t, m, "20261115T000000Z", "success", "master", "latest")
	e.publish(t, m, "20261119T000000Z", "fail", "master", "latest")
	e.publish(t, m, "20261120T000000Z", "success", "master", "latest", "latest_build")
	e.publish(t, "release/centos", "20250101T000000Z", "success", "release")
	e.publish(t, "nolabel", "20261001T000000Z", "success", "")
	e.publish(t, "misc", "20261001T000000Z", "success", "weird")
	// A pin, a link of the operator's in the series, one from elsewhere in
	// the tree into a build, a legacy link to a series.
	os.WriteFile(filepath.Join(e.tree, m, "20261002T000000Z", KeepName), nil, 0o644)
	os.Symlink("20261010T000000Z", filepath.Join(e.tree, m, "stable"))
	os.Symlink("master/centos/20261101T000000Z/image.raw.xz", filepath.Join(e.tree, "good"))
	os.Symlink("release/centos", filepath.Join(e.tree, "r2025"))
	// Leftovers: a stale staging directory, a fresh one, a trash directory.
	stale := filepath.Join(e.tree, m, ".staging-x-1")
	os.MkdirAll(filepath.Join(stale, "outputs"), 0o755)
	old := now.Add(-48 * time.Hour)
	os.Chtimes(stale, old, old)
	os.MkdirAll(filepath.Join(e.tree, m, ".staging-y-2"), 0o755)
	os.MkdirAll(filepath.Join(e.tree, m, ".trash-z-3/sub"), 0o755)
	os.Symlink("20261001T000000Z", filepath.Join(e.tree, m, ".link-latest-4"))
	fresh := filepath.Join(e.tree, m, ".staging-y-2")
	os.Chtimes(fresh, now.Add(-time.Hour), now.Add(-time.Hour))

	policies := mustPolicies(t, "master=14d,keep=2", "release=forever", "default=7d")
	before := listTree(t, e.tree)
	var reported []string
	dry := &Pruner{Policies: policies, Now: now, DryRun: true, Report: func(d Decision) { reported = append(reported, d.String()) }}
	plan, err := dry.Prune(context.Background(), Tree{Name: "demo", Dir: e.tree})
	if err != nil {
		t.Fatal(err)
	}
	if after := listTree(t, e.tree); !reflect.DeepEqual(before, after) {
		t.Fatalf("dry run changed the tree")
	}
	t.Logf("dry run:\n%s", strings.Join(reported, "\n"))
	if len(reported) != len(plan) {
		t.Fatalf("reported %d decisions, returned %d", len(reported), len(plan))
	}

	want := map[string]string{ // path → start of the reason
		"demo:master/centos/.trash-z-3":        "delete: left by an interrupted prune",
		"demo:master/centos/.staging-x-1":      "delete: staging directory untouched for 2d",
		"demo:master/centos/.link-latest-4":    "delete: temporary link left by a publication that died",
		"demo:master/centos/20261001T000000Z":  "delete: older than 14d and 5 newer successful master builds kept",
		"demo:master/centos/20261002T000000Z":  "keep: pinned by KEEP",
		"demo:master/centos/20261003T000000Z":  "delete: failed build older than 14d",
		"demo:master/centos/20261010T000000Z":  "keep: master/centos/stable points to it",
		"demo:master/centos/20261101T000000Z":  "keep: good points to it",
		"demo:master/centos/20261105T000000Z":  "delete: older than 14d and 2 newer successful master builds kept",
		"demo:master/centos/20261115T000000Z":  "keep: one of the 2 newest successful master builds",
		"demo:master/centos/20261119T000000Z":  "keep: 2d old, within 14d",
		"demo:master/centos/20261120T000000Z":  "keep: master/centos/latest, master/centos/latest_build point to it",
		"demo:release/centos/20250101T000000Z": "keep: class release is kept forever",
		"demo:nolabel/20261001T000000Z":        "delete: older than 7d and 0 newer successful default builds kept",
		"demo:misc/20261001T000000Z":           "keep: no policy for class weird",
	}
	got := map[string]string{}
	for _, d := range plan {
		verb := "keep"
		if d.Delete {
			verb = "delete"
		}
		got[d.Path()] = verb + ": " + d.Reason
	}
	for path, w := range want {
		if !strings.HasPrefix(got[path], w) {
			t.Errorf("%s: %q, want %q…", path, got[path], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d decisions, want %d: %v", len(got), len(want), got)
	}

	real := &Pruner{Policies: policies, Now: now}
	done, err := real.Prune(context.Background(), Tree{Name: "demo", Dir: e.tree})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plan, done) {
		t.Fatalf("run decided differently from the dry run:\n%v\n%v", plan, done)
	}
	// What the run deleted is exactly what the dry run announced.
	for _, d := range plan {
		p := filepath.Join(e.tree, filepath.FromSlash(d.Series), d.Build)
		_, err := os.Lstat(p)
		if d.Delete && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s not deleted", d.Path())
		}
		if !d.Delete && err != nil {
			t.Errorf("%s deleted although kept: %v", d.Path(), err)
		}
		if !d.Delete && !strings.HasPrefix(d.Build, ".") {
			sha256sumCheck(t, p)
		}
	}
	if _, err := os.Stat(filepath.Join(e.tree, m, ".staging-y-2")); err != nil {
		t.Error("fresh staging directory removed")
	}
	if left := leftovers(t, e.tree); len(left) != 1 { // the fresh staging directory
		t.Errorf("leftovers after prune: %v", left)
	}
	// Links never dangle.
	for _, l := range []string{m + "/latest", m + "/latest_build", m + "/stable", "good", "r2025"} {
		if _, err := os.Stat(filepath.Join(e.tree, l)); err != nil {
			t.Errorf("link %s dangles after prune: %v", l, err)
		}
	}
	// A second run finds nothing more to delete.
	again, err := real.Prune(context.Background(), Tree{Name: "demo", Dir: e.tree})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range again {
		if d.Delete {
			t.Errorf("second run deletes %s", d)
		}
	}
}

func TestPruneWithoutDefaultKeepsUnclassified(t *testing.T) {
	e := newEnv(t, []byte("x"))
	e.publish(t, "s", "20200101T000000Z", "success", "")
	ds, err := (&Pruner{Policies: mustPolicies(t, "master=1d")}).Prune(context.Background(), Tree{Name: "demo", Dir: e.tree})
	if err != nil || len(ds) != 1 || ds[0].Delete || !strings.Contains(ds[0].Reason, "no default policy") {
		t.Fatalf("%v %v", ds, err)
	}
}

// Prune running over and over while builds are published: latest never
// dangles and no published build disappears while a link points to it.
func TestPruneConcurrentWithPublication(t *testing.T) {
	e := newEnv(t, []byte("x"))
	series := filepath.Join(e.tree, "s")
	e.publish(t, "s", "20200101T000000Z", "success", "master", "latest")
	policies := mustPolicies(t, "master=1h") // every build is old: only links save them
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failure error
	fail := func(err error) {
		mu.Lock()
		if failure == nil {
			failure = err
		}
		mu.Unlock()
	}
	wg.Add(2)
	go func() { // pruner
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := (&Pruner{Policies: policies}).Prune(context.Background(), Tree{Name: "demo", Dir: e.tree}); err != nil {
				fail(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	go func() { // watcher
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := checkBuild(filepath.Join(series, "latest")); err != nil {
				fail(fmt.Errorf("latest: %w", err))
				return
			}
		}
	}()
	for i := 1; i <= 30; i++ {
		e.publish(t, "s", fmt.Sprintf("20200101T%06dZ", i), "success", "master", "latest")
	}
	close(stop)
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	if target, _ := os.Readlink(filepath.Join(series, "latest")); target != "20200101T000030Z" {
		t.Fatalf("latest -> %s", target)
	}
	assertNoHidden(t, series)
}

func TestParsePolicy(t *testing.T) {
	good := map[string]Policy{
		"master=14d,keep=2": {Class: "master", MaxAge: 14 * 24 * time.Hour, Age: "14d", Keep: 2},
		"release=forever":   {Class: "release", Forever: true},
		" m = 36h ":         {Class: "m", MaxAge: 36 * time.Hour, Age: "36h"},
		"x=2w":              {Class: "x", MaxAge: 14 * 24 * time.Hour, Age: "2w"},
	}
	for s, want := range good {
		got, err := ParsePolicy(s)
		if err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"master", "master=", "master=keep=2", "master=14x", "master=forever,14d", "a b=1d", "m=-1d", "m=1d,keep=x"} {
		if p, err := ParsePolicy(s); err == nil {
			t.Errorf("ParsePolicy(%q) = %+v, want an error", s, p)
		}
	}
	ps, err := ParsePolicies(strings.NewReader("# classes\nmaster=14d,keep=2\n\nrelease=forever\n"))
	if err != nil || len(ps) != 2 {
		t.Fatalf("%v %v", ps, err)
	}
	if _, err := ParsePolicies(strings.NewReader("master=14d\nbad\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v, want one naming line 2", err)
	}
}
