package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

// fileImage is a targets.Image over a file as received.
type fileImage struct{ path string }

func (f fileImage) Path() string   { return f.path }
func (f fileImage) Format() string { return "" }
func (f fileImage) DiskSize(context.Context) (int64, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
func (f fileImage) OpenDisk(context.Context) (io.ReadCloser, error) { return os.Open(f.path) }

type env struct {
	t     *testing.T
	tree  string
	image string
	job   targets.Job
}

func newEnv(t *testing.T, content []byte) *env {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "image.raw.xz")
	if err := os.WriteFile(img, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, tree: tree, image: img, job: targets.Job{
		ID: "6", User: "alice", Project: "home:alice", Repository: "images", Arch: "x86_64",
		Package: "appliance", Filename: "image.raw.xz",
	}}
}

func (e *env) getenv(k string) string {
	if k == EnvMirrors {
		return "demo=" + e.tree + ",other=/nonexistent"
	}
	return ""
}

func (e *env) upload(ctx context.Context, data string) (string, error) {
	var log bytes.Buffer
	res, err := New().Upload(ctx, targets.Request{
		Job: e.job, Data: []byte(data), Image: fileImage{e.image},
		Log: targets.NewLog(&log), Getenv: e.getenv,
	})
	e.t.Logf("log:\n%s", log.String())
	return res, err
}

func (e *env) mustUpload(data string) string {
	e.t.Helper()
	res, err := e.upload(context.Background(), data)
	if err != nil {
		e.t.Fatalf("upload %s: %v", data, err)
	}
	return res
}

func TestPublishFlat(t *testing.T) {
	e := newEnv(t, []byte("image bytes"))
	res := e.mustUpload(`{"tree":"demo","series":"master/centos","build_id":"20261121T101500Z","links":["latest","latest_build"],"retention":"master","build_info":{"license_type":"open"}}`)
	if want := "demo:master/centos/20261121T101500Z/image.raw.xz"; res != want {
		t.Fatalf("result %q, want %q", res, want)
	}
	build := filepath.Join(e.tree, "master/centos/20261121T101500Z")
	got, err := os.ReadFile(filepath.Join(build, "image.raw.xz"))
	if err != nil || string(got) != "image bytes" {
		t.Fatalf("published file: %q, %v", got, err)
	}
	for name, want := range map[string]string{"RESULT": "success\n", "RETENTION": "master\n"} {
		if b, _ := os.ReadFile(filepath.Join(build, name)); string(b) != want {
			t.Errorf("%s = %q, want %q", name, b, want)
		}
	}
	sha256sumCheck(t, build)
	m, _ := os.ReadFile(filepath.Join(build, "MANIFEST"))
	for _, want := range []string{"  image.raw.xz\n", "  BUILD-INFO.txt\n", "  RESULT\n", "  RETENTION\n"} {
		if !strings.Contains(string(m), want) {
			t.Errorf("MANIFEST lacks %q:\n%s", want, m)
		}
	}
	if strings.Contains(string(m), "MANIFEST") {
		t.Errorf("MANIFEST lists itself:\n%s", m)
	}
	for _, l := range []string{"latest", "latest_build"} {
		target, err := os.Readlink(filepath.Join(e.tree, "master/centos", l))
		if err != nil || target != "20261121T101500Z" {
			t.Errorf("link %s -> %q, %v", l, target, err)
		}
	}
	assertNoHidden(t, filepath.Join(e.tree, "master/centos"))
}

func TestPublishDefaultsAndArea(t *testing.T) {
	e := newEnv(t, []byte("x"))
	m := New().(*Mirror)
	m.now = func() time.Time { return time.Date(2026, 11, 21, 10, 15, 0, 0, time.FixedZone("X", 3600)) }
	req := func(data string) targets.Request {
		return targets.Request{Job: e.job, Data: []byte(data), Image: fileImage{e.image}, Log: targets.NewLog(io.Discard), Getenv: e.getenv}
	}
	res, err := m.Upload(context.Background(), req(`{"tree":"demo","area":"outputs"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "demo:home:alice/images/x86_64/appliance/20261121T091500Z/outputs/image.raw.xz"; res != want {
		t.Fatalf("result %q, want %q", res, want)
	}
	// Same second again: the generated id gets a suffix.
	res, err = m.Upload(context.Background(), req(`{"tree":"demo","area":"outputs"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "demo:home:alice/images/x86_64/appliance/20261121T091500Z.2/outputs/image.raw.xz"; res != want {
		t.Fatalf("result %q, want %q", res, want)
	}
	sha256sumCheck(t, filepath.Join(e.tree, "home:alice/images/x86_64/appliance/20261121T091500Z.2"))
}

func TestExistingBuildIDChangesNothing(t *testing.T) {
	e := newEnv(t, []byte("first"))
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"7","links":["latest"]}`)
	os.WriteFile(e.image, []byte("second"), 0o644)
	_, err := e.upload(context.Background(), `{"tree":"demo","series":"s","build_id":"7","links":["latest"]}`)
	if cloudupload.ErrorCode(err) != cloudupload.ECONFLICT || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("err = %v, want conflict", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.tree, "s/7/image.raw.xz")); string(b) != "first" {
		t.Fatalf("existing build changed: %q", b)
	}
	assertNoHidden(t, filepath.Join(e.tree, "s"))
}

// TestRerunPublishesOnce: the same build id with the same files again (a
// job run again after its node was lost) succeeds with the same result,
// publishes nothing twice and leaves nothing behind.
func TestRerunPublishesOnce(t *testing.T) {
	e := newEnv(t, []byte("same"))
	data := `{"tree":"demo","series":"s","build_id":"7","links":["latest"]}`
	first := e.mustUpload(data)
	fi, err := os.Stat(filepath.Join(e.tree, "s/7"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.upload(context.Background(), data)
	if err != nil || again != first {
		t.Fatalf("re-run: %q, %v; want %q", again, err, first)
	}
	if fi2, _ := os.Stat(filepath.Join(e.tree, "s/7")); !os.SameFile(fi, fi2) {
		t.Error("the re-run replaced the published build")
	}
	if l, _ := os.Readlink(filepath.Join(e.tree, "s/latest")); l != "7" {
		t.Errorf("latest -> %q, want 7", l)
	}
	var names []string
	ents, _ := os.ReadDir(filepath.Join(e.tree, "s"))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{".lock", "7", "latest"}) && !slices.Equal(names, []string{"7", "latest"}) {
		t.Errorf("series holds %v, want the build and its link", names)
	}
	assertNoHidden(t, filepath.Join(e.tree, "s"))
}

func TestFailedBuildMovesNoLink(t *testing.T) {
	e := newEnv(t, []byte("x"))
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"1","links":["latest"]}`)
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"2","links":["latest"],"result":"fail"}`)
	if target, _ := os.Readlink(filepath.Join(e.tree, "s/latest")); target != "1" {
		t.Fatalf("latest -> %q after a failed build, want 1", target)
	}
	if b, _ := os.ReadFile(filepath.Join(e.tree, "s/2/RESULT")); string(b) != "fail\n" {
		t.Fatalf("RESULT = %q", b)
	}
}

func TestLinkOnlyForward(t *testing.T) {
	e := newEnv(t, []byte("x"))
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"10","links":["latest"]}`)
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"9","links":["latest"]}`)
	if target, _ := os.Readlink(filepath.Join(e.tree, "s/latest")); target != "10" {
		t.Fatalf("latest -> %q, want 10 (9 is older)", target)
	}
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"11","links":["latest"]}`)
	if target, _ := os.Readlink(filepath.Join(e.tree, "s/latest")); target != "11" {
		t.Fatalf("latest -> %q, want 11", target)
	}
}

func TestLinkNameTakenByDirectory(t *testing.T) {
	e := newEnv(t, []byte("x"))
	os.MkdirAll(filepath.Join(e.tree, "s/latest"), 0o755)
	_, err := e.upload(context.Background(), `{"tree":"demo","series":"s","build_id":"1","links":["latest"]}`)
	if err == nil || !strings.Contains(err.Error(), "not a link") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.tree, "s/1")); err == nil {
		t.Fatal("build published although its link could not be set")
	}
	assertNoHidden(t, filepath.Join(e.tree, "s"))
}

func TestDedupHardLink(t *testing.T) {
	e := newEnv(t, bytes.Repeat([]byte("same content "), 10000))
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"1"}`)
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"2"}`)
	a, _ := os.Stat(filepath.Join(e.tree, "s/1/image.raw.xz"))
	b, _ := os.Stat(filepath.Join(e.tree, "s/2/image.raw.xz"))
	if !os.SameFile(a, b) {
		t.Fatal("unchanged file not hard-linked to the previous build's copy")
	}
	os.WriteFile(e.image, []byte("changed"), 0o644)
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"3"}`)
	c, _ := os.Stat(filepath.Join(e.tree, "s/3/image.raw.xz"))
	if os.SameFile(b, c) {
		t.Fatal("changed file hard-linked")
	}
	for _, id := range []string{"1", "2", "3"} {
		sha256sumCheck(t, filepath.Join(e.tree, "s", id))
	}
}

// A cancel while the image is being copied leaves nothing behind.
func TestCancelMidCopyLeavesNothing(t *testing.T) {
	e := newEnv(t, bytes.Repeat([]byte{1}, 8<<20))
	ctx, cancel := context.WithCancel(context.Background())
	o, err := ParseOptions(e.job, []byte(`{"tree":"demo","series":"s","build_id":"1","links":["latest"]}`), e.getenv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// A FIFO as the image: the copy blocks mid-file until we cancel.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := exec.Command("mkfifo", fifo).Run(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := Publish(ctx, o, fifo, "image.raw.xz", nil)
		errc <- err
	}()
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte{1}, 1<<20)); err != nil {
		t.Fatal(err)
	}
	// The copy has started: a staging directory exists.
	waitFor(t, func() bool { return len(hidden(t, filepath.Join(e.tree, "s"), ".staging-")) == 1 })
	cancel()
	w.Write([]byte{1}) // wake the blocked read
	w.Close()
	err = <-errc
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertNoHidden(t, filepath.Join(e.tree, "s"))
	ents, _ := os.ReadDir(filepath.Join(e.tree, "s"))
	for _, ent := range ents {
		if ent.Name() != ".lock" {
			t.Errorf("left behind: %s", ent.Name())
		}
	}
}

func TestCheckRejects(t *testing.T) {
	e := newEnv(t, nil)
	cases := map[string]string{
		`{}`:                                                                  "tree is missing",
		`{"tree":"nope"}`:                                                     `tree "nope" is not a configured mirror tree (known trees: demo, other)`,
		`{"tree":"demo","colour":1,"size":2}`:                                 "unknown field(s) colour, size",
		`{"tree":"demo","series":"a/../b"}`:                                   "..",
		`{"tree":"demo","series":"/abs"}`:                                     "relative",
		`{"tree":"demo","series":"a//b"}`:                                     "empty segment",
		`{"tree":"demo","series":"a/.hidden"}`:                                "must not start with '.'",
		`{"tree":"demo","build_id":"a/b"}`:                                    "build_id",
		`{"tree":"demo","result":"maybe"}`:                                    "result",
		`{"tree":"demo","area":"middle"}`:                                     "area",
		`{"tree":"demo","links":"latest"}`:                                    "links must be a list",
		`{"tree":"demo","links":["../x"]}`:                                    "links",
		`{"tree":"demo","retention":"a b"}`:                                   "retention",
		`{"tree":"demo","build_info":"Format-Version: 0.5\nBuild-Name: x\n"}`: "build_info does not parse: line 2",
		`{"tree":"demo","build_info":{"license_type":"protected"}}`:           "auth_groups or license_text",
		`{"tree":"demo","build_info":{"license":"open"}}`:                     "build_info.license",
		`{"tree":"demo","build_info":{"license_type":"open","theme":3}}`:      "build_info.theme",
		`[1]`: "JSON object",
	}
	for data, want := range cases {
		err := New().Check(e.job, []byte(data), e.getenv)
		if err == nil || !strings.Contains(err.Error(), want) || cloudupload.ErrorCode(err) != cloudupload.EINVALID {
			t.Errorf("Check(%s) = %v, want EINVALID containing %q", data, err, want)
		}
	}
	job := e.job
	job.Filename = "MANIFEST"
	if err := New().Check(job, []byte(`{"tree":"demo"}`), e.getenv); err == nil {
		t.Error("filename MANIFEST accepted")
	}
	if err := New().Check(e.job, []byte(`{"tree":"demo"}`), e.getenv); err != nil {
		t.Errorf("minimal data rejected: %v", err)
	}
	// `clouduploader validate` knows no filename: Check must not need one.
	job.Filename = ""
	if err := New().Check(job, []byte(`{"tree":"demo"}`), e.getenv); err != nil {
		t.Errorf("data rejected without a filename: %v", err)
	}
	// Nor a project etc. when the series is given.
	if err := New().Check(targets.Job{}, []byte(`{"tree":"demo","series":"master/centos"}`), e.getenv); err != nil {
		t.Errorf("data rejected without job fields: %v", err)
	}
	if err := New().Check(targets.Job{}, []byte(`{"tree":"demo"}`), e.getenv); err == nil || !strings.Contains(err.Error(), "series") {
		t.Errorf("no series and no job fields: %v, want an error naming series", err)
	}
}

func TestParseTrees(t *testing.T) {
	trees, err := ParseTrees("a=/x, b=/y/")
	if err != nil || len(trees) != 2 || trees[1].Dir != "/y" {
		t.Fatalf("%v %v", trees, err)
	}
	for _, bad := range []string{"a", "a=rel", "a=/x,a=/y", ".a=/x"} {
		if _, err := ParseTrees(bad); err == nil {
			t.Errorf("ParseTrees(%q) accepted", bad)
		}
	}
}

func TestCompareIDs(t *testing.T) {
	ordered := []string{"1", "2", "9", "10", "20261121T091500Z", "20261121T091500Z.2", "20261121T091500Z.10", "20261121T101500Z", "a", "b1", "b2", "b10"}
	for i := range ordered {
		for j := range ordered {
			want := sign(i - j)
			if got := CompareIDs(ordered[i], ordered[j]); got != want {
				t.Errorf("CompareIDs(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	if CompareIDs("01", "1") == 0 {
		t.Error("01 and 1 compare equal")
	}
}

// sha256sumCheck runs the real `sha256sum -c MANIFEST` in dir.
func sha256sumCheck(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("sha256sum", "--strict", "-c", "MANIFEST")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c MANIFEST in %s: %v\n%s", dir, err, out)
	}
}

func hidden(t *testing.T, dir, prefix string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// assertNoHidden fails when staging, link or trash leftovers remain.
func assertNoHidden(t *testing.T, dir string) {
	t.Helper()
	for _, p := range []string{".staging-", ".link-", ".trash-"} {
		if left := hidden(t, dir, p); len(left) > 0 {
			t.Errorf("left behind in %s: %v", dir, left)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}
