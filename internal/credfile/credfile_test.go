package credfile

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"
)

func TestParse(t *testing.T) {
	kernel, alice := HashToken("kernel-token"), HashToken("alice-token")
	src := "# clients of the upload daemon\n" +
		"\n" +
		"ci-kernel  sha256=" + kernel + "  target=mirror  tree=snapshots  series=kernel-hwpacks,android  user=ci\r\n" +
		"   # indented comment\n" +
		"alice\tsha256=" + strings.ToUpper(alice) + "\tgroups=team-x,team-y\n" +
		"   \t \n"
	f, err := Parse(strings.NewReader(src), "clients")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Entries) != 2 {
		t.Fatalf("%d entries, want 2", len(f.Entries))
	}
	k := f.Entries[0]
	if k.Name != "ci-kernel" || k.Line != 3 {
		t.Errorf("entry 0 = %s line %d", k.Name, k.Line)
	}
	want := map[string][]string{"target": {"mirror"}, "tree": {"snapshots"}, "series": {"kernel-hwpacks", "android"}, "user": {"ci"}}
	if !reflect.DeepEqual(k.Values, want) {
		t.Errorf("values = %v, want %v", k.Values, want)
	}
	if !k.Allows("series", "android") || k.Allows("series", "Android") || !k.Allows("groups", "anything") {
		t.Error("Allows is wrong")
	}
	if items, ok := f.Entries[1].Get("groups"); !ok || !reflect.DeepEqual(items, []string{"team-x", "team-y"}) {
		t.Errorf("alice groups = %v %v", items, ok)
	}
	if _, ok := f.Entries[1].Get("tree"); ok {
		t.Error("absent key reported present")
	}
	if e := f.Lookup("kernel-token"); e == nil || e.Name != "ci-kernel" {
		t.Errorf("Lookup(kernel-token) = %v", e)
	}
	if e := f.Lookup("alice-token"); e == nil || e.Name != "alice" {
		t.Errorf("Lookup(alice-token) = %v (upper-case hex must be accepted)", e)
	}
	for _, bad := range []string{"", "kernel-token ", "alice", kernel} {
		if e := f.Lookup(bad); e != nil {
			t.Errorf("Lookup(%q) = %s, want nil", bad, e.Name)
		}
	}
	if f.ByName("alice") != &f.Entries[1] || f.ByName("bob") != nil {
		t.Error("ByName is wrong")
	}
	var nilFile *File
	if nilFile.Lookup("x") != nil || nilFile.ByName("x") != nil {
		t.Error("nil file must find nothing")
	}
}

func TestParseErrors(t *testing.T) {
	sum := HashToken("t")
	secret := "my-secret-token-pasted-by-mistake"
	for _, c := range []struct{ name, src, want string }{
		{"no sha256", "bob groups=a\n", `f:1: entry "bob" has no sha256`},
		{"starts with key", "sha256=" + sum + "\n", `f:1: an entry starts with its name`},
		{"word without =", "bob sha256=" + sum + " groups\n", `f:1: "groups" is not a key=value word`},
		{"bad key", "bob sha256=" + sum + " Groups=a\n", `f:1: key "Groups": want a lower-case word`},
		{"empty key", "bob sha256=" + sum + " =a\n", `f:1: key "": want`},
		{"repeated key", "bob sha256=" + sum + " tree=a tree=b\n", `f:1: key tree given twice`},
		{"repeated sha", "bob sha256=" + sum + " sha256=" + sum + "\n", `f:1: key sha256 given twice`},
		{"empty value", "bob sha256=" + sum + " tree=\n", `f:1: key tree has an empty value`},
		{"empty item", "\n\nbob sha256=" + sum + " tree=a,,b\n", `f:3: key tree: empty item`},
		{"trailing comma", "bob sha256=" + sum + " tree=a,\n", `f:1: key tree: empty item`},
		{"short sha", "bob sha256=" + secret + "\n", `f:1: sha256 must be 64 hex digits`},
		{"non-hex sha", "bob sha256=" + strings.Repeat("g", 64) + "\n", `f:1: sha256 is not hexadecimal`},
		{"duplicate name", "bob sha256=" + sum + "\nbob sha256=" + HashToken("u") + "\n", `f:2: name "bob" already used on line 1`},
		{"duplicate token", "bob sha256=" + sum + "\neve sha256=" + sum + "\n", `f:2: entry "eve" has the same token as line 1`},
		{"control char", "bo\x01b sha256=" + sum + "\n", `f:1: name "bo\x01b" contains a control character`},
		{"bad utf8", "bob sha256=" + sum + " tree=\xff\n", `f:1: not valid UTF-8`},
		{"long line", "bob sha256=" + sum + " tree=" + strings.Repeat("a", MaxLine) + "\n", `f:1: line longer than`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(c.src), "f")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("err = %q, want prefix %q", err, c.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), sum) {
				t.Errorf("err %q quotes the sha256 value", err)
			}
		})
	}
	big := strings.Repeat("# padding\n", MaxSize/10+1)
	if _, err := Parse(strings.NewReader(big), "f"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: err = %v", err)
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not exist", err)
	}
}

// TestReloadOnSIGHUP sends a real SIGHUP to the test process: the new file
// is picked up, a broken one is reported and the old content kept, and the
// token never appears in the log.
func TestReloadOnSIGHUP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice sha256=" + HashToken("a-token") + "\n")
	r, err := NewReloader(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Path() != path || r.Lookup("a-token") == nil {
		t.Fatal("initial load")
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var logs testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Watch(ctx, hup, slog.New(slog.NewTextHandler(&logs, nil))); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; log:\n%s", what, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	write("bob sha256=" + HashToken("b-token") + " groups=g\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor("reload", func() bool { return r.Lookup("b-token") != nil })
	if r.Lookup("a-token") != nil {
		t.Error("removed entry still found")
	}
	write("bob sha256=b-token-pasted-here\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor("error logged", func() bool { return strings.Contains(logs.String(), "not reloaded") })
	if r.Lookup("b-token") == nil {
		t.Error("a failed reload dropped the previous content")
	}
	if l := logs.String(); !strings.Contains(l, path+":1:") || strings.Contains(l, "b-token") {
		t.Errorf("log must name file:line and never the token:\n%s", l)
	}
	if err := r.Reload(); err == nil {
		t.Error("Reload of a broken file succeeded")
	}
}

// FuzzParse: Parse never panics; what it accepts has unique names and
// hashes, a sha256 for every entry, no empty list item, and every entry is
// found by its own hash.
func FuzzParse(f *testing.F) {
	sum := HashToken("t")
	f.Add([]byte("ci sha256=" + sum + " target=mirror series=a,b\n# c\n"))
	f.Add([]byte("a sha256=" + sum + "\nb sha256=" + sum + "\n"))
	f.Add([]byte("x=y\n"))
	f.Add([]byte("bob sha256=" + sum + " tree=a,,b\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse(bytes.NewReader(b), "f")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		names := map[string]bool{}
		for i := range file.Entries {
			e := &file.Entries[i]
			if e.Name == "" || names[e.Name] || strings.Contains(e.Name, "=") {
				t.Fatalf("bad or repeated name %q", e.Name)
			}
			names[e.Name] = true
			if file.LookupSum(e.sum) != e {
				t.Fatalf("entry %q not found by its own hash", e.Name)
			}
			for k, items := range e.Values {
				if k == HashKey || len(items) == 0 {
					t.Fatalf("key %q with %d items", k, len(items))
				}
				for _, it := range items {
					if it == "" || strings.ContainsAny(it, ", \t") {
						t.Fatalf("bad item %q", it)
					}
				}
			}
		}
	})
}
