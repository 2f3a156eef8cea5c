package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	cloudupload "github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

// rawDisk returns a disk of size bytes: random data in some 64 KiB chunks,
// zeros elsewhere, and a partition-table signature.
func rawDisk(size int, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for off := 0; off < size; off += 64 << 10 {
		if r.IntN(3) == 0 {
			continue // hole
		}
		end := min(off+64<<10, size)
		for i := off; i < end; i += 8 {
			v := r.Uint64()
			for k := 0; k < 8 && i+k < end; k++ {
				b[i+k] = byte(v >> (8 * k))
			}
		}
	}
	if size >= 512 {
		b[510], b[511] = 0x55, 0xaa
	}
	return b
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// compress runs a compression tool over src and writes dst.
func compress(t testing.TB, dst, src string, tool string, args ...string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(tool, args...)
	cmd.Stdin, cmd.Stdout = in, out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v: %s", tool, args, err, stderr.Bytes())
	}
}

// appendFile appends src's content to dst.
func appendFile(t testing.TB, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func needTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed for this test: %v", name, err)
	}
}

// readDisk opens the disk and checks DiskSize and every byte.
func checkDisk(t *testing.T, im *img, want []byte, format string) {
	t.Helper()
	ctx := context.Background()
	if got := im.Format(); got != format {
		t.Errorf("Format = %q, want %q", got, format)
	}
	size, err := im.DiskSize(ctx)
	if err != nil {
		t.Fatalf("DiskSize: %v", err)
	}
	if size != int64(len(want)) {
		t.Errorf("DiskSize = %d, want %d", size, len(want))
	}
	rc, err := im.OpenDisk(ctx)
	if err != nil {
		t.Fatalf("OpenDisk: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read disk: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("disk differs: got %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// readDisk reads im's disk to the end and returns the error that ended it
// (nil at the end of the disk).
func readDisk(t *testing.T, im targets.Image) error {
	t.Helper()
	rc, err := im.OpenDisk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestCompressedFormats(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "gzip")
	needTool(t, "zstd")
	dir := t.TempDir()
	disk := rawDisk(3<<20+512, 1)
	raw := writeFile(t, dir, "disk.raw", disk)

	files := map[string]string{} // name → format
	add := func(name, format string) { files[name] = format }

	add("disk.raw", "raw")
	compress(t, filepath.Join(dir, "disk.raw.xz"), raw, "xz", "-c", "-1")
	add("disk.raw.xz", "raw.xz")
	// Several blocks, decoded in parallel by xz -T0.
	compress(t, filepath.Join(dir, "multi.raw.xz"), raw, "xz", "-c", "-1", "-T2", "--block-size=262144")
	add("multi.raw.xz", "raw.xz")
	// Two concatenated streams with stream padding between and after.
	half := writeFile(t, dir, "half1", disk[:1<<20])
	rest := writeFile(t, dir, "half2", disk[1<<20:])
	compress(t, filepath.Join(dir, "concat.img.xz"), half, "xz", "-c", "-0")
	writeFile(t, dir, "pad", make([]byte, 8))
	appendFile(t, filepath.Join(dir, "concat.img.xz"), filepath.Join(dir, "pad"))
	compress(t, filepath.Join(dir, "part2.xz"), rest, "xz", "-c", "-0", "--check=sha256")
	appendFile(t, filepath.Join(dir, "concat.img.xz"), filepath.Join(dir, "part2.xz"))
	appendFile(t, filepath.Join(dir, "concat.img.xz"), filepath.Join(dir, "pad"))
	add("concat.img.xz", "raw.xz")

	compress(t, filepath.Join(dir, "disk.raw.gz"), raw, "gzip", "-c", "-1")
	add("disk.raw.gz", "raw.gz")
	compress(t, filepath.Join(dir, "concat.raw.gz"), half, "gzip", "-c")
	compress(t, filepath.Join(dir, "part2.gz"), rest, "gzip", "-c")
	appendFile(t, filepath.Join(dir, "concat.raw.gz"), filepath.Join(dir, "part2.gz"))
	add("concat.raw.gz", "raw.gz")

	compress(t, filepath.Join(dir, "disk.raw.zst"), raw, "zstd", "-c", "-q", "-1", "-T2")
	add("disk.raw.zst", "raw.zst")
	// From a pipe: frames without a content size.
	compress(t, filepath.Join(dir, "nosize.raw.zst"), raw, "zstd", "-c", "-q", "--no-content-size")
	add("nosize.raw.zst", "raw.zst")
	compress(t, filepath.Join(dir, "concat.raw.zst"), half, "zstd", "-c", "-q")
	compress(t, filepath.Join(dir, "part2.zst"), rest, "zstd", "-c", "-q")
	appendFile(t, filepath.Join(dir, "concat.raw.zst"), filepath.Join(dir, "part2.zst"))
	add("concat.raw.zst", "raw.zst")

	// Names that say nothing: the content decides.
	compress(t, filepath.Join(dir, "sniffed-1.2"), raw, "xz", "-c", "-0")
	add("sniffed-1.2", "raw.xz")
	writeFile(t, dir, "sniffed-raw", disk)
	add("sniffed-raw", "raw")

	for name, format := range files {
		for _, pure := range []bool{false, true} {
			if pure && format != "raw.xz" {
				continue
			}
			t.Run(name+map[bool]string{true: "/pure-go"}[pure], func(t *testing.T) {
				o := options{}
				if !pure {
					o.xzBinary, _ = exec.LookPath("xz")
				}
				im, err := open(filepath.Join(dir, name), name, o)
				if err != nil {
					t.Fatal(err)
				}
				checkDisk(t, im, disk, format)
			})
		}
	}
}

func TestKnownDiskSize(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "gzip")
	dir := t.TempDir()
	disk := rawDisk(1<<20, 2)
	raw := writeFile(t, dir, "d.raw", disk)
	compress(t, filepath.Join(dir, "d.raw.xz"), raw, "xz", "-c", "-0")
	compress(t, filepath.Join(dir, "d.raw.gz"), raw, "gzip", "-c", "-1")
	for name, known := range map[string]bool{"d.raw": true, "d.raw.xz": true, "d.raw.gz": false} {
		im, err := Open(filepath.Join(dir, name), name)
		if err != nil {
			t.Fatal(err)
		}
		n, ok := im.(*img).KnownDiskSize()
		if ok != known || ok && n != int64(len(disk)) {
			t.Errorf("%s: KnownDiskSize = %d, %v; want known %v", name, n, ok, known)
		}
	}
}

func TestPlainFiles(t *testing.T) {
	dir := t.TempDir()
	content := []byte("not a disk\n")
	for _, name := range []string{"appliance.iso", "image.tar.xz", "x.qcow2.xz", "notes.txt", "data-1.0"} {
		p := writeFile(t, dir, name, content)
		im, err := Open(p, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if im.Format() != "" {
			t.Errorf("%s: Format = %q, want \"\"", name, im.Format())
		}
		if n, err := im.DiskSize(context.Background()); err != nil || n != int64(len(content)) {
			t.Errorf("%s: DiskSize = %d, %v", name, n, err)
		}
		rc, err := im.OpenDisk(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s: OpenDisk gave %q, %v", name, got, err)
		}
	}
}

func TestDetectName(t *testing.T) {
	for _, c := range []struct {
		name, container, comp string
		known                 bool
	}{
		{"openSUSE-Leap-15.6.x86_64-1.0.0-Build1.23.raw.xz", "raw", "xz", true},
		{"a.RAW", "raw", "", true},
		{"a.img.gz", "raw", "gz", true},
		{"a.raw.zst", "raw", "zst", true},
		{"a.vhdfixed.xz", "vhdfixed", "xz", true},
		{"a.vhd", "vhdfixed", "", true},
		{"a.qcow2", "qcow2", "", true},
		{"a.qcow2.xz", "", "", true},
		{"disk.xz", "raw", "xz", true},
		{"a.tar.xz", "", "", true},
		{"a.iso", "", "", true},
		{"disk", "", "", false},
		{"image-Build3.4", "", "", false},
	} {
		container, comp, known := detectName(c.name)
		if container != c.container || comp != c.comp || known != c.known {
			t.Errorf("detectName(%q) = %q, %q, %v; want %q, %q, %v", c.name, container, comp, known, c.container, c.comp, c.known)
		}
	}
}

func TestCorrupt(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "zstd")
	dir := t.TempDir()
	disk := rawDisk(1<<20, 3)
	raw := writeFile(t, dir, "d.raw", disk)
	compress(t, filepath.Join(dir, "d.raw.xz"), raw, "xz", "-c", "-0")
	good, _ := os.ReadFile(filepath.Join(dir, "d.raw.xz"))

	// Truncated: the index is gone, so Open fails.
	writeFile(t, dir, "trunc.raw.xz", good[:len(good)-100])
	if _, err := Open(filepath.Join(dir, "trunc.raw.xz"), "trunc.raw.xz"); cloudupload.ErrorCode(err) != cloudupload.EINVALID {
		t.Errorf("truncated xz: Open error %v, want EINVALID", err)
	}
	// A flipped byte in the compressed data: the index is intact, reading fails.
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0xff
	writeFile(t, dir, "bad.raw.xz", bad)
	for _, pure := range []bool{false, true} {
		o := options{}
		if !pure {
			o.xzBinary, _ = exec.LookPath("xz")
		}
		im, err := open(filepath.Join(dir, "bad.raw.xz"), "bad.raw.xz", o)
		if err != nil {
			t.Fatal(err)
		}
		if err := readDisk(t, im); err == nil {
			t.Errorf("pure=%v: corrupt xz read without error", pure)
		} else if bytes.Contains([]byte(err.Error()), []byte(dir)) {
			t.Errorf("error names the server path: %v", err)
		}
	}
	// Not a multiple of 512.
	writeFile(t, dir, "odd.raw", disk[:1000])
	im, err := Open(filepath.Join(dir, "odd.raw"), "odd.raw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.DiskSize(context.Background()); cloudupload.ErrorCode(err) != cloudupload.EINVALID {
		t.Errorf("odd size: DiskSize error %v, want EINVALID", err)
	}
	// Missing file: no path in the message.
	_, err = Open(filepath.Join(dir, "missing.raw"), "missing.raw")
	if err == nil || !errors.Is(err, os.ErrNotExist) || bytes.Contains([]byte(err.Error()), []byte(dir)) {
		t.Errorf("missing file: %v", err)
	}
}

// TestXZParallel: without the xz binary, multi-block files are decoded one
// block per core, whatever their check type, and checked; a file of one
// block is decoded as a stream.
func TestXZParallel(t *testing.T) {
	needTool(t, "xz")
	dir := t.TempDir()
	disk := rawDisk(1<<20+512, 3)
	raw := writeFile(t, dir, "disk.raw", disk)
	for _, c := range []struct {
		name     string
		parallel bool
		args     []string
	}{
		{"crc64", true, []string{"-T2", "--block-size=150000"}},
		{"crc32", true, []string{"-T2", "--block-size=150000", "--check=crc32"}},
		{"sha256", true, []string{"-T2", "--block-size=150000", "--check=sha256"}},
		{"none", true, []string{"-T2", "--block-size=150000", "--check=none"}},
		{"one-block", false, []string{"-T1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := c.name + ".raw.xz"
			path := filepath.Join(dir, name)
			compress(t, path, raw, "xz", append([]string{"-c", "-1"}, c.args...)...)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			blocks := xzParallelBlocks(f, st.Size())
			f.Close()
			if (blocks != nil) != c.parallel || c.parallel && len(blocks) != 7 {
				t.Fatalf("%d blocks for parallel decoding, want parallel %v (7 blocks)", len(blocks), c.parallel)
			}
			im, err := open(path, name, options{})
			if err != nil {
				t.Fatal(err)
			}
			checkDisk(t, im, disk, "raw.xz")
		})
	}

	t.Run("corrupt", func(t *testing.T) {
		path := filepath.Join(dir, "crc64.raw.xz")
		b, _ := os.ReadFile(path)
		b[len(b)/2] ^= 0x55
		bad := writeFile(t, dir, "bad.raw.xz", b)
		im, err := open(bad, "bad.raw.xz", options{})
		if err != nil {
			t.Fatal(err)
		}
		err = readDisk(t, im)
		var ce *cloudupload.Error
		if !errors.As(err, &ce) || ce.Code != cloudupload.EINVALID || !strings.Contains(err.Error(), "bad.raw.xz: xz block") {
			t.Fatalf("corrupt block: got %v, want an EINVALID error naming the image and block", err)
		}
	})

	t.Run("close-early", func(t *testing.T) {
		im, err := open(filepath.Join(dir, "crc64.raw.xz"), "crc64.raw.xz", options{})
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			rc, err := im.OpenDisk(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(rc, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			rc.Close()
		}
	})
}
