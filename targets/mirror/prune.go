package mirror

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultClass is the policy name that applies to builds published without
// a retention class.
const DefaultClass = "default"

// StaleStaging is the age after which prune removes a staging directory
// left by an uploader that was killed hard.
const StaleStaging = 24 * time.Hour

// Policy is the retention of one class.
//
// Syntax: CLASS=RULE[,RULE…] with RULE one of
//
//	forever       never delete
//	<N>d, <N>w, <N>h   maximum age (days, weeks, hours)
//	keep=<N>      always keep the N newest successful builds of the series
//
// e.g. master=14d,keep=2 or release=forever. A maximum age is required
// unless forever is given. The class "default" applies to builds published
// without a class; builds of a class without a policy are kept.
//
// A build is deleted when its class has a policy, it is older than the
// maximum age (age from the timestamp its id starts with, else from its
// MANIFEST's time), it is not one of the keep newest successful builds of
// its class in its series, holds no KEEP marker, and no symlink anywhere in
// the tree resolves to it or into it. Failed builds follow the same maximum
// age; keep=N counts and keeps successful builds only, so a run of failures
// never pushes the last good builds out.
type Policy struct {
	Class   string
	Forever bool
	MaxAge  time.Duration
	Age     string // MaxAge as written, for messages
	Keep    int
}

func (p Policy) String() string {
	if p.Forever {
		return p.Class + "=forever"
	}
	s := p.Class + "=" + p.Age
	if p.Keep > 0 {
		s += ",keep=" + strconv.Itoa(p.Keep)
	}
	return s
}

// ParsePolicy parses one policy (see Policy).
func ParsePolicy(s string) (Policy, error) {
	class, rules, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return Policy{}, fmt.Errorf("policy %q: want CLASS=RULE[,RULE…], e.g. master=14d,keep=2", s)
	}
	p := Policy{Class: strings.TrimSpace(class)}
	if err := CheckClass(p.Class); err != nil {
		return Policy{}, fmt.Errorf("policy %q: %v", s, err)
	}
	for _, r := range strings.Split(rules, ",") {
		r = strings.TrimSpace(r)
		switch {
		case r == "forever":
			p.Forever = true
		case strings.HasPrefix(r, "keep="):
			n, err := strconv.Atoi(strings.TrimPrefix(r, "keep="))
			if err != nil || n < 0 || n > 1_000_000 {
				return Policy{}, fmt.Errorf("policy %q: %q: keep wants a count", s, r)
			}
			p.Keep = n
		default:
			d, err := parseAge(r)
			if err != nil {
				return Policy{}, fmt.Errorf("policy %q: %q: want forever, keep=N or an age such as 14d, 2w, 36h", s, r)
			}
			p.MaxAge, p.Age = d, r
		}
	}
	if p.Forever && (p.MaxAge != 0 || p.Keep != 0) {
		return Policy{}, fmt.Errorf("policy %q: forever excludes other rules", s)
	}
	if !p.Forever && p.MaxAge == 0 {
		return Policy{}, fmt.Errorf("policy %q: needs a maximum age (e.g. 14d) or forever", s)
	}
	return p, nil
}

func parseAge(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, errors.New("too short")
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || n <= 0 || n > 100_000 {
		return 0, errors.New("bad number")
	}
	unit := map[byte]time.Duration{'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}[s[len(s)-1]]
	if unit == 0 {
		return 0, errors.New("bad unit")
	}
	return time.Duration(n) * unit, nil
}

// ParsePolicies reads a policy file: one policy per line in the syntax of
// Policy; blank lines and lines starting with '#' are ignored. Errors name
// the line.
func ParsePolicies(r io.Reader) ([]Policy, error) {
	var ps []Policy
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, err := ParsePolicy(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		ps = append(ps, p)
	}
	return ps, sc.Err()
}

// Decision is what prune does with one build (or a leftover directory).
type Decision struct {
	Tree   string
	Series string // slash-separated
	Build  string // build id, or the hidden name of a leftover
	Delete bool
	Reason string
}

// Path is "<tree>:<series>/<build>".
func (d Decision) Path() string { return d.Tree + ":" + d.Series + "/" + d.Build }

func (d Decision) String() string {
	verb := "keep"
	if d.Delete {
		verb = "delete"
	}
	return verb + " " + d.Path() + ": " + d.Reason
}

// Pruner applies retention policies to trees.
type Pruner struct {
	Policies []Policy
	Now      time.Time // decisions are taken as of Now (time.Now when zero)
	DryRun   bool      // decide and report, delete nothing
	// Report is called with each decision as it is taken (before the
	// deletion it announces).
	Report func(Decision)
}

// Prune walks tree, and in each series, under the series lock (not taken in
// a dry run, which changes nothing), decides for every build and deletes
// those whose time has come: renamed to a hidden .trash-* name first (gone
// from readers at once, and never half-deleted in sight), then removed once
// the lock is released. It also removes .trash-* leftovers of an
// interrupted prune, .link-* leftovers of a killed publication and staging
// directories older than StaleStaging. It returns every decision; a series
// that fails (its error is returned, joined with the others') stops there
// and the other series are still pruned.
func (p *Pruner) Prune(ctx context.Context, tree Tree) ([]Decision, error) {
	now := p.Now
	if now.IsZero() {
		now = time.Now()
	}
	policies := map[string]Policy{}
	for _, pol := range p.Policies {
		policies[pol.Class] = pol
	}
	series, links, err := scanTree(tree.Dir)
	if err != nil {
		return nil, fmt.Errorf("scan tree %s: %w", tree.Name, err)
	}
	resolved := resolveLinks(tree.Dir, links)
	var all []Decision
	var errs []error
	for _, s := range series {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		ds, err := p.pruneSeries(ctx, tree, s, resolved, policies, now)
		all = append(all, ds...)
		if err != nil {
			errs = append(errs, fmt.Errorf("prune %s:%s: %w", tree.Name, s, err))
		}
	}
	return all, errors.Join(errs...)
}

// scanTree finds the series of a tree (directories holding builds, or
// leftovers of publications or prunes) and every symlink in it
// (tree-relative paths). It follows no symlink and does not descend into
// builds.
func scanTree(root string) (series, links []string, err error) {
	var walk func(dir, rel string) error
	walk = func(dir, rel string) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		isSeries := false
		var sub []string
		for _, e := range ents {
			name := e.Name()
			relName := strings.TrimPrefix(rel+"/"+name, "/")
			switch {
			case e.Type()&fs.ModeSymlink != 0:
				if strings.HasPrefix(name, ".link-") {
					isSeries = true // a link being moved, or left by a killed publication
				} else {
					links = append(links, relName)
				}
			case !e.IsDir():
			case strings.HasPrefix(name, ".trash-") || strings.HasPrefix(name, ".staging-"):
				isSeries = true
			case strings.HasPrefix(name, "."):
			default:
				if _, err := os.Lstat(filepath.Join(dir, name, ManifestName)); err == nil {
					isSeries = true // a build: not descended into
				} else {
					sub = append(sub, name)
				}
			}
		}
		if isSeries && rel != "" {
			series = append(series, rel)
		}
		for _, name := range sub {
			if err := walk(filepath.Join(dir, name), strings.TrimPrefix(rel+"/"+name, "/")); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, ""); err != nil {
		return nil, nil, err
	}
	sort.Strings(series)
	return series, links, nil
}

// resolveLinks maps what each link (tree-relative) resolves to, as a
// tree-relative path, to the links' names. Links that dangle or leave the
// tree are ignored.
func resolveLinks(root string, links []string) map[string][]string {
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		real = root
	}
	out := map[string][]string{}
	for _, l := range links {
		target, err := filepath.EvalSymlinks(filepath.Join(root, filepath.FromSlash(l)))
		if err != nil {
			continue
		}
		r, err := filepath.Rel(real, target)
		if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			continue
		}
		out[r] = append(out[r], l)
	}
	return out
}

// linksTo returns the links protecting build (tree-relative dir): those
// resolving to it or into it.
func linksTo(protected map[string][]string, build string) []string {
	var names []string
	for target, links := range protected {
		if target == build || strings.HasPrefix(target, build+string(filepath.Separator)) {
			names = append(names, links...)
		}
	}
	sort.Strings(names)
	return names
}

func (p *Pruner) pruneSeries(ctx context.Context, tree Tree, series string, treeLinks map[string][]string, policies map[string]Policy, now time.Time) (_ []Decision, err error) {
	dir := filepath.Join(tree.Dir, filepath.FromSlash(series))
	// Doomed builds are renamed to trash under the lock and removed after
	// it is released, so publications do not wait for big removals.
	var trash []string
	if !p.DryRun {
		var lock *Lock
		lock, err = LockSeries(ctx, dir)
		if err != nil {
			return nil, err
		}
		defer func() { // assigns the named result err
			lock.Unlock()
			for _, t := range trash {
				if rerr := os.RemoveAll(t); rerr != nil && err == nil {
					err = fmt.Errorf("remove %s: %w", filepath.Base(t), rerr)
				}
			}
		}()
	}
	// The series' own links are listed and resolved again, under the lock:
	// a publication may have moved or added one since the scan. Links
	// elsewhere in the tree are as the scan found them.
	own, err := Links(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for name := range own {
		names = append(names, series+"/"+name)
	}
	protected := resolveLinks(tree.Dir, names)
	for target, links := range treeLinks {
		for _, l := range links {
			if path.Dir(l) != series {
				protected[target] = append(protected[target], l)
			}
		}
	}
	builds, err := ListBuilds(dir)
	if err != nil {
		return nil, err
	}
	var out []Decision
	decide := func(d Decision) error {
		d.Tree, d.Series = tree.Name, series
		out = append(out, d)
		if p.Report != nil {
			p.Report(d)
		}
		if !d.Delete || p.DryRun {
			return nil
		}
		t, err := toTrash(dir, d.Build)
		if t != "" {
			trash = append(trash, t)
		}
		return err
	}

	// Leftovers first.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case e.Type()&fs.ModeSymlink != 0 && strings.HasPrefix(name, ".link-"):
			// Publications create and rename these under the lock we hold:
			// one seen now was left by a publication that died.
			if err := decide(Decision{Build: name, Delete: true, Reason: "temporary link left by a publication that died"}); err != nil {
				return out, err
			}
		case !e.IsDir():
		case strings.HasPrefix(name, ".trash-"):
			if err := decide(Decision{Build: name, Delete: true, Reason: "left by an interrupted prune"}); err != nil {
				return out, err
			}
		case strings.HasPrefix(name, ".staging-"):
			info, err := e.Info()
			if err != nil {
				continue
			}
			if age := now.Sub(info.ModTime()); age > StaleStaging {
				if err := decide(Decision{Build: name, Delete: true, Reason: fmt.Sprintf("staging directory untouched for %s: its publication died", fmtAge(age))}); err != nil {
					return out, err
				}
			}
		}
	}

	// Newest successful builds per class, for keep=N.
	rank := map[string]int{} // build id → rank among its class's successful builds, newest = 1
	count := map[string]int{}
	for i := len(builds) - 1; i >= 0; i-- {
		b := builds[i]
		if b.Result == "success" {
			count[b.Retention]++
			rank[b.ID] = count[b.Retention]
		}
	}
	// Decide from the newest build to the oldest, counting the successful
	// builds of each class kept so far; then act oldest first.
	decisions := make([]Decision, len(builds))
	keptNewer := map[string]int{}
	for i := len(builds) - 1; i >= 0; i-- {
		b := builds[i]
		d := Decision{Build: b.ID}
		rel := filepath.Join(filepath.FromSlash(series), b.ID)
		class := b.Retention
		pol, ok := policies[class]
		if class == "" {
			pol, ok = policies[DefaultClass]
		}
		age := now.Sub(b.Published)
		switch links := linksTo(protected, rel); {
		case b.Kept:
			d.Reason = "pinned by " + KeepName
		case len(links) > 0:
			d.Reason = strings.Join(links, ", ") + pointVerb(len(links)) + " to it"
		case !ok && class == "":
			d.Reason = "no retention class recorded and no " + DefaultClass + " policy"
		case !ok:
			d.Reason = "no policy for class " + class
		case pol.Forever:
			d.Reason = "class " + pol.Class + " is kept forever"
		case b.Result == "success" && rank[b.ID] <= pol.Keep:
			d.Reason = fmt.Sprintf("one of the %d newest successful %s builds", pol.Keep, pol.Class)
		case age <= pol.MaxAge:
			d.Reason = fmt.Sprintf("%s old, within %s (%s)", fmtAge(age), pol.Age, pol.Class)
		case b.Result != "success":
			d.Delete = true
			d.Reason = fmt.Sprintf("%s build older than %s (%s)", resultWord(b.Result), pol.Age, pol.Class)
		default:
			d.Delete = true
			d.Reason = fmt.Sprintf("older than %s and %d newer successful %s builds kept", pol.Age, keptNewer[class], pol.Class)
		}
		if !d.Delete && b.Result == "success" {
			keptNewer[class]++
		}
		decisions[i] = d
	}
	for _, d := range decisions {
		if err := decide(d); err != nil {
			return out, err
		}
	}
	if !p.DryRun {
		if err := syncDir(dir); err != nil {
			return out, err
		}
	}
	return out, nil
}

func pointVerb(n int) string {
	if n == 1 {
		return " points"
	}
	return " point"
}

func resultWord(r string) string {
	if r == "" {
		return "unfinished (no " + ResultName + ")"
	}
	return r + "ed"
}

func fmtAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
}

// toTrash takes dir/name out of readers' sight: a build is renamed to a
// hidden .trash-* name, returned for removal; a leftover .trash-* directory
// is returned as it is; a leftover .link-* symlink is removed at once.
func toTrash(dir, name string) (string, error) {
	src := filepath.Join(dir, name)
	switch {
	case strings.HasPrefix(name, ".trash-"):
		return src, nil
	case strings.HasPrefix(name, ".link-"):
		return "", os.Remove(src)
	}
	trash, err := tempName(dir, ".trash-"+strings.TrimPrefix(name, ".")+"-")
	if err != nil {
		return "", err
	}
	if err := os.Rename(src, trash); err != nil {
		return "", fmt.Errorf("move %s to trash: %w", name, err)
	}
	return trash, nil
}
