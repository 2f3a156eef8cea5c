package mirror

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/testutil"
	"github.com/cloudupload/cloudupload/uploader"
)

// entry is one tar entry a test writes.
type entry struct {
	name string
	typ  byte
	body string // content, or link target for links
	mode int64
}

func file(name, body string) entry      { return entry{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) entry             { return entry{name: name, typ: tar.TypeDir} }
func symlink(name, to string) entry     { return entry{name: name, typ: tar.TypeSymlink, body: to} }
func special(name string, t byte) entry { return entry{name: name, typ: t} }

// makeTar writes entries as a tar stream.
func makeTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, ModTime: time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC), Format: tar.FormatPAX}
		if e.mode != 0 {
			h.Mode = e.mode
		}
		switch e.typ {
		case tar.TypeReg:
			h.Size = int64(len(e.body))
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeSymlink, tar.TypeLink:
			h.Linkname = e.body
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// compress compresses a tar stream as its name says.
func compress(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	var err error
	switch {
	case strings.HasSuffix(name, ".tar"):
		return data
	case strings.HasSuffix(name, ".gz"):
		w = gzip.NewWriter(&b)
	case strings.HasSuffix(name, ".xz"):
		w, err = xz.NewWriter(&b)
	case strings.HasSuffix(name, ".zst"):
		w, err = zstd.NewWriter(&b)
	default:
		t.Fatalf("no compression for %s", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// newArchiveEnv is an env whose image is the archive filename holding entries.
func newArchiveEnv(t *testing.T, filename string, entries ...entry) *env {
	e := newEnv(t, nil)
	e.job.Filename = filename
	e.image = filepath.Join(filepath.Dir(e.image), filename)
	if err := os.WriteFile(e.image, compress(t, filename, makeTar(t, entries...)), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// starlingX is a build shaped like StarlingX's outputs/.
func starlingX(iso string) []entry {
	return []entry{
		dir("./"),
		dir("./RPMS/"),
		dir("./RPMS/std/"),
		file("./RPMS/std/kernel-5.10-1.tis.x86_64.rpm", strings.Repeat("kernel rpm ", 5000)),
		file("./RPMS/std/python3-cgcs-1.0.noarch.rpm", "python rpm"),
		file("./RPMS/rt/kernel-rt-5.10-1.tis.x86_64.rpm", strings.Repeat("rt rpm ", 3000)),
		dir("./iso/"),
		file("./iso/bootimage.iso", iso),
		symlink("./iso/latest.iso", "bootimage.iso"),
		{name: "./installer/pxeboot/vmlinuz", typ: tar.TypeReg, body: "vmlinuz", mode: 0o755},
		symlink("./installer/bootimage.iso", "../iso/bootimage.iso"),
		file("./logs/build.log", "build log\nline 2\n"),
		dir("./logs/empty/"),
		file("./success", ""),
		file("./iso/BUILD-INFO.txt", "Format-Version: 0.5\n\nFiles-Pattern: *.iso\nLicense-Type: protected\nAuth-Groups: starlingx\n"),
	}
}

func TestUnpackStarlingXBuild(t *testing.T) {
	for _, name := range []string{"outputs.tar", "outputs.tar.gz", "outputs.tar.xz", "outputs.tar.zst"} {
		t.Run(name, func(t *testing.T) {
			entries := starlingX(strings.Repeat("iso image ", 20000))
			e := newArchiveEnv(t, name, entries...)
			data := `{"tree":"demo","series":"master/debian","build_id":"20261121T101500Z","area":"outputs","unpack":true,"links":["latest_build"],"retention":"master"}`
			if err := New().Check(e.job, []byte(data), e.getenv); err != nil {
				t.Fatal(err)
			}
			res := e.mustUpload(data)
			if want := "demo:master/debian/20261121T101500Z/outputs"; res != want {
				t.Fatalf("result %q, want %q", res, want)
			}
			build := filepath.Join(e.tree, "master/debian/20261121T101500Z")
			compareTree(t, filepath.Join(build, "outputs"), entries)
			sha256sumCheck(t, build)
			m, _ := os.ReadFile(filepath.Join(build, "MANIFEST"))
			var listed []string
			for _, line := range strings.Split(strings.TrimSpace(string(m)), "\n") {
				listed = append(listed, line[66:])
			}
			want := []string{"RESULT", "RETENTION", "outputs/RPMS/rt/kernel-rt-5.10-1.tis.x86_64.rpm",
				"outputs/RPMS/std/kernel-5.10-1.tis.x86_64.rpm", "outputs/RPMS/std/python3-cgcs-1.0.noarch.rpm",
				"outputs/installer/pxeboot/vmlinuz", "outputs/iso/BUILD-INFO.txt", "outputs/iso/bootimage.iso",
				"outputs/logs/build.log", "outputs/success"}
			sort.Strings(want)
			if strings.Join(listed, "\n") != strings.Join(want, "\n") {
				t.Errorf("MANIFEST lists\n%s\nwant\n%s", strings.Join(listed, "\n"), strings.Join(want, "\n"))
			}
			if target, _ := os.Readlink(filepath.Join(e.tree, "master/debian/latest_build")); target != "20261121T101500Z" {
				t.Errorf("latest_build -> %q", target)
			}
			assertNoHidden(t, filepath.Join(e.tree, "master/debian"))

			// The next build changes the ISO only: everything else is
			// hard-linked to the first build's copies.
			entries2 := starlingX(strings.Repeat("new iso ", 20000))
			os.WriteFile(e.image, compress(t, name, makeTar(t, entries2...)), 0o644)
			e.mustUpload(strings.Replace(data, "20261121T101500Z", "20261122T101500Z", 1))
			build2 := filepath.Join(e.tree, "master/debian/20261122T101500Z")
			compareTree(t, filepath.Join(build2, "outputs"), entries2)
			sha256sumCheck(t, build2)
			same := func(rel string) bool {
				a, err1 := os.Stat(filepath.Join(build, rel))
				b, err2 := os.Stat(filepath.Join(build2, rel))
				return err1 == nil && err2 == nil && os.SameFile(a, b)
			}
			if !same("outputs/RPMS/std/kernel-5.10-1.tis.x86_64.rpm") || !same("outputs/logs/build.log") {
				t.Error("unchanged files were not hard-linked to the previous build")
			}
			if same("outputs/iso/bootimage.iso") {
				t.Error("the changed ISO is linked to the old one")
			}
			if target, _ := os.Readlink(filepath.Join(e.tree, "master/debian/latest_build")); target != "20261122T101500Z" {
				t.Errorf("latest_build -> %q", target)
			}
		})
	}
}

// compareTree checks that dir holds exactly the archive's entries: files
// with their content (and the executable bit), symlinks with their target,
// directories, and nothing else.
func compareTree(t *testing.T, root string, entries []entry) {
	t.Helper()
	want := map[string]entry{}
	for _, e := range entries {
		name := strings.TrimSuffix(strings.TrimPrefix(e.name, "./"), "/")
		if name == "" {
			continue
		}
		want[name] = e
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			if _, ok := want[d]; !ok {
				want[d] = dir(d)
			}
		}
	}
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		seen[rel] = true
		w, ok := want[rel]
		if !ok {
			t.Errorf("published %s, which the archive does not hold", rel)
			return nil
		}
		switch w.typ {
		case tar.TypeReg:
			b, err := os.ReadFile(p)
			st, _ := os.Lstat(p)
			if err != nil || string(b) != w.body || !st.Mode().IsRegular() {
				t.Errorf("%s: %d bytes (%v), want the archive's %d", rel, len(b), err, len(w.body))
			}
			if exec := st.Mode()&0o111 != 0; exec != (w.mode&0o111 != 0) {
				t.Errorf("%s: mode %v, archive %o", rel, st.Mode(), w.mode)
			}
		case tar.TypeSymlink:
			if target, err := os.Readlink(p); err != nil || target != w.body {
				t.Errorf("%s -> %q (%v), want -> %q", rel, target, err, w.body)
			}
		case tar.TypeDir:
			if !d.IsDir() {
				t.Errorf("%s is not a directory", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s is in the archive but not published", name)
		}
	}
}

// assertNothingVisible fails when the series holds anything but its lock.
func assertNothingVisible(t *testing.T, series string) {
	t.Helper()
	ents, err := os.ReadDir(series)
	if os.IsNotExist(err) {
		return
	}
	for _, ent := range ents {
		if ent.Name() != ".lock" {
			t.Errorf("left in the series: %s", ent.Name())
		}
	}
}

// refused publishes an archive that must be refused with an error naming
// the offending entry, and checks that nothing became visible.
func refused(t *testing.T, wantInErr string, entries ...entry) {
	t.Helper()
	all := append([]entry{file("ok/first.txt", "published before the bad entry")}, entries...)
	e := newArchiveEnv(t, "build.tar.gz", all...)
	_, err := e.upload(context.Background(), `{"tree":"demo","series":"s","build_id":"1","unpack":true,"links":["latest"]}`)
	if err == nil {
		t.Fatalf("archive published, want an error containing %q", wantInErr)
	}
	if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(cloudupload.ErrorMessage(err), wantInErr) {
		t.Fatalf("err = %v (code %s), want EINVALID containing %q", err, cloudupload.ErrorCode(err), wantInErr)
	}
	assertNothingVisible(t, filepath.Join(e.tree, "s"))
}

func TestUnpackRefusesAbsolutePath(t *testing.T) {
	refused(t, `entry "/etc/passwd" is an absolute path`, file("/etc/passwd", "x"))
}

func TestUnpackRefusesDotDot(t *testing.T) {
	refused(t, `entry "ok/../../escape" leaves the build`, file("ok/../../escape", "x"))
}

func TestUnpackRefusesHardLink(t *testing.T) {
	refused(t, `entry "ok/again" is a hard link`, entry{name: "ok/again", typ: tar.TypeLink, body: "ok/first.txt"})
}

func TestUnpackRefusesCharDevice(t *testing.T) {
	refused(t, `entry "dev/null" is a device`, special("dev/null", tar.TypeChar))
}

func TestUnpackRefusesBlockDevice(t *testing.T) {
	refused(t, `entry "dev/sda" is a device`, special("dev/sda", tar.TypeBlock))
}

func TestUnpackRefusesFIFO(t *testing.T) {
	refused(t, `entry "logs/pipe" is a FIFO`, special("logs/pipe", tar.TypeFifo))
}

func TestUnpackRefusesAbsoluteSymlink(t *testing.T) {
	refused(t, `entry "ok/passwd" is a symlink to the absolute path "/etc/passwd"`, symlink("ok/passwd", "/etc/passwd"))
}

func TestUnpackRefusesSymlinkLeavingTheBuild(t *testing.T) {
	refused(t, `entry "ok/up" is a symlink to "../../x", which leaves the build`, symlink("ok/up", "../../x"))
}

// "d/.." is the parent of wherever d points: with d -> ".", d/../x climbs
// out although it looks inside.
func TestUnpackRefusesSymlinkClimbingThroughAnother(t *testing.T) {
	refused(t, `entry "sneaky" is a symlink to "here/../x": '..' after a name`, symlink("here", "."), symlink("sneaky", "here/../x"))
}

func TestUnpackRefusesEntryBelowASymlink(t *testing.T) {
	refused(t, `entry "out/passwd" lies below the symlink "out"`, symlink("out", "ok"), file("out/passwd", "x"))
}

func TestUnpackRefusesHiddenEntry(t *testing.T) {
	refused(t, `entry "ok/.staging-2" is hidden`, file("ok/.staging-2", "x"))
}

func TestUnpackRefusesDuplicateEntry(t *testing.T) {
	refused(t, `entry "ok/first.txt" appears twice`, file("ok/first.txt", "overwrite"))
}

func TestUnpackRefusesReservedName(t *testing.T) {
	refused(t, `entry "MANIFEST" takes a name the mirror target writes itself`, file("MANIFEST", "forged"))
}

func TestUnpackRefusesBadBuildInfo(t *testing.T) {
	refused(t, `entry "ok/BUILD-INFO.txt" does not parse: line 2`, file("ok/BUILD-INFO.txt", "Format-Version: 0.5\nLicense-Type: open\n"))
}

func TestUnpackRefusesNotATar(t *testing.T) {
	e := newEnv(t, nil)
	e.job.Filename = "build.tar"
	os.WriteFile(e.image, bytes.Repeat([]byte("not a tar archive "), 100), 0o644)
	_, err := e.upload(context.Background(), `{"tree":"demo","series":"s","build_id":"1","unpack":true}`)
	if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(err.Error(), "not a readable tar archive") {
		t.Fatalf("err = %v", err)
	}
	assertNothingVisible(t, filepath.Join(e.tree, "s"))
}

// A truncated compressed archive fails: the decompressor's error surfaces.
func TestUnpackRefusesTruncatedArchive(t *testing.T) {
	e := newArchiveEnv(t, "build.tar.xz", starlingX(strings.Repeat("iso", 100000))...)
	b, _ := os.ReadFile(e.image)
	os.WriteFile(e.image, b[:len(b)-20], 0o644)
	_, err := e.upload(context.Background(), `{"tree":"demo","series":"s","build_id":"1","unpack":true}`)
	if err == nil {
		t.Fatal("truncated archive published")
	}
	assertNothingVisible(t, filepath.Join(e.tree, "s"))
}

func TestUnpackCheck(t *testing.T) {
	e := newEnv(t, nil) // image.raw.xz
	err := New().Check(e.job, []byte(`{"tree":"demo","unpack":true}`), e.getenv)
	if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(err.Error(), `unpack needs a tar archive, and "image.raw.xz"`) {
		t.Fatalf("err = %v", err)
	}
	if err := New().Check(e.job, []byte(`{"tree":"demo","unpack":"yes"}`), e.getenv); err == nil || !strings.Contains(err.Error(), "unpack must be true or false") {
		t.Fatalf("err = %v", err)
	}
	for _, name := range []string{"b.tar", "b.tar.gz", "b.tgz", "B.TAR.XZ", "b.tar.zst"} {
		e.job.Filename = name
		if err := New().Check(e.job, []byte(`{"tree":"demo","unpack":true}`), e.getenv); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A name the mirror target reserves is fine: the archive's name is not published.
	e.job.Filename = "MANIFEST.tar"
	if err := New().Check(e.job, []byte(`{"tree":"demo","unpack":true}`), e.getenv); err != nil {
		t.Errorf("MANIFEST.tar: %v", err)
	}
}

// build_info given in the target data governs the archive's root; the
// archive may not hold one there too.
func TestUnpackBuildInfoFromData(t *testing.T) {
	e := newArchiveEnv(t, "b.tar", file("a.img", "img"), file("notes.txt", "n"))
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"1","unpack":true,"build_info":{"license_type":"open","files_pattern":["*.img"]}}`)
	if b, err := os.ReadFile(filepath.Join(e.tree, "s/1/BUILD-INFO.txt")); err != nil || !strings.Contains(string(b), "*.img") {
		t.Fatalf("BUILD-INFO.txt: %q %v", b, err)
	}
	sha256sumCheck(t, filepath.Join(e.tree, "s/1"))

	e = newArchiveEnv(t, "b.tar", file("a.img", "img"), file("BUILD-INFO.txt", "Format-Version: 0.5\n\nFiles-Pattern: *\nLicense-Type: open\n"))
	_, err := e.upload(context.Background(), `{"tree":"demo","series":"s","build_id":"1","unpack":true,"build_info":{"license_type":"open"}}`)
	if err == nil || !strings.Contains(err.Error(), "archive holds BUILD-INFO.txt too") {
		t.Fatalf("err = %v", err)
	}
	assertNothingVisible(t, filepath.Join(e.tree, "s"))
}

// The uploader process killed with SIGTERM while it unpacks: it exits as
// killed and the tree holds nothing of the publication.
func TestSIGTERMMidUnpackLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	img := filepath.Join(dir, "build.tar")
	os.WriteFile(img, nil, 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data.json")
	os.WriteFile(data, []byte(`{"tree":"t","series":"s","build_id":"1","unpack":true,"links":["latest"]}`), 0o600)
	result := filepath.Join(dir, "result")
	log := &testutil.SyncBuffer{}
	cmd := exec.Command(os.Args[0], "alice", "mirror", img, data, "build.tar", result)
	cmd.Env = append(os.Environ(), "MIRROR_TEST_UPLOADER=1", "MIRROR_TEST_FIFO="+fifo, EnvMirrors+"=t="+tree, "CLOUDUPLOAD_JOB=7")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	opened := make(chan *os.File, 1)
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			opened <- w
		}
	}()
	var w *os.File
	select {
	case w = <-opened:
	case err := <-exited:
		t.Fatalf("uploader exited (%v) before reading the archive:\n%s", err, log.String())
	}
	defer w.Close()
	// Some whole files, then a large one that never ends.
	var head bytes.Buffer
	tw := tar.NewWriter(&head)
	for _, name := range []string{"RPMS/a.rpm", "RPMS/b.rpm", "iso/c.txt"} {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 4096})
		tw.Write(make([]byte, 4096))
	}
	tw.WriteHeader(&tar.Header{Name: "iso/big.iso", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
	tw.Flush()
	w.Write(head.Bytes())
	w.Write(make([]byte, 1<<20))
	waitFor(t, func() bool {
		st := hidden(t, filepath.Join(tree, "s"), ".staging-")
		if len(st) != 1 {
			return false
		}
		_, err := os.Stat(filepath.Join(tree, "s", st[0], "iso/big.iso"))
		return err == nil
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := w.Write(make([]byte, 1<<10)); err != nil {
				return
			}
		}
	}()
	select {
	case <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("uploader still running a minute after SIGTERM:\n%s", log.String())
	}
	t.Logf("uploader log:\n%s", log.String())
	if code := cmd.ProcessState.ExitCode(); code != uploader.ExitKilled {
		t.Fatalf("exit %d, want %d", code, uploader.ExitKilled)
	}
	assertNothingVisible(t, filepath.Join(tree, "s"))
}
