package image

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	cloudupload "github.com/cloudupload/cloudupload"
)

// vhdFooter returns a fixed VHD footer for a disk of size bytes.
func vhdFooter(size int64) []byte {
	b := make([]byte, vhdFooterSize)
	copy(b, vhdCookie)
	binary.BigEndian.PutUint32(b[8:], 2)           // features: reserved bit
	binary.BigEndian.PutUint32(b[12:], 0x00010000) // version
	binary.BigEndian.PutUint64(b[16:], ^uint64(0)) // data offset: none (fixed)
	copy(b[28:], "test")
	binary.BigEndian.PutUint64(b[40:], uint64(size)) // original size
	binary.BigEndian.PutUint64(b[48:], uint64(size)) // current size
	binary.BigEndian.PutUint32(b[60:], 2)            // fixed
	fixVHDChecksum(b)
	return b
}

func fixVHDChecksum(b []byte) {
	binary.BigEndian.PutUint32(b[64:], 0)
	var sum uint32
	for _, c := range b {
		sum += uint32(c)
	}
	binary.BigEndian.PutUint32(b[64:], ^sum)
}

func TestVHDFixed(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "zstd")
	dir := t.TempDir()
	disk := rawDisk(2<<20, 8)
	vhd := append(bytes.Clone(disk), vhdFooter(int64(len(disk)))...)
	p := writeFile(t, dir, "d.vhdfixed", vhd)
	compress(t, filepath.Join(dir, "d.vhdfixed.xz"), p, "xz", "-c", "-0", "-T2", "--block-size=300000")
	compress(t, filepath.Join(dir, "d.vhd.zst"), p, "zstd", "-q", "-c")
	writeFile(t, dir, "sniffed", vhd)
	for name, format := range map[string]string{
		"d.vhdfixed": "vhdfixed", "d.vhdfixed.xz": "vhdfixed.xz", "d.vhd.zst": "vhdfixed.zst", "sniffed": "vhdfixed",
	} {
		t.Run(name, func(t *testing.T) {
			im, err := Open(filepath.Join(dir, name), name)
			if err != nil {
				t.Fatal(err)
			}
			checkDisk(t, im.(*img), disk, format)
			if n, ok := im.(*img).KnownDiskSize(); !ok || n != int64(len(disk)) {
				t.Errorf("KnownDiskSize = %d, %v", n, ok)
			}
		})
	}
	if qemu, err := exec.LookPath("qemu-img"); err == nil {
		// A fixed VHD written by qemu-img.
		raw := writeFile(t, dir, "d.raw", disk)
		q := filepath.Join(dir, "q.vhd")
		if out, err := exec.Command(qemu, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, q).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		im, err := Open(q, "q.vhd")
		if err != nil {
			t.Fatal(err)
		}
		checkDisk(t, im.(*img), disk, "vhdfixed")
	}
}

func TestVHDBadFooter(t *testing.T) {
	needTool(t, "xz")
	dir := t.TempDir()
	disk := rawDisk(1<<20, 9)
	for name, c := range map[string]struct {
		edit func([]byte)
		want string
	}{
		"cookie":   {func(b []byte) { copy(b, "notavhd!") }, "no VHD footer"},
		"checksum": {func(b []byte) { b[70]++ }, "checksum"},
		"dynamic":  {func(b []byte) { binary.BigEndian.PutUint32(b[60:], 3); fixVHDChecksum(b) }, "dynamic"},
		"size":     {func(b []byte) { binary.BigEndian.PutUint64(b[48:], 1<<30); fixVHDChecksum(b) }, "disk size as 1073741824"},
		"version":  {func(b []byte) { binary.BigEndian.PutUint32(b[12:], 7); fixVHDChecksum(b) }, "version"},
	} {
		t.Run(name, func(t *testing.T) {
			footer := vhdFooter(int64(len(disk)))
			c.edit(footer)
			p := writeFile(t, dir, name+".vhdfixed", append(bytes.Clone(disk), footer...))
			_, err := Open(p, name+".vhdfixed")
			if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open: %v; want EINVALID saying %q", err, c.want)
			}
			// Compressed, the footer is checked at the end of the stream.
			compress(t, p+".xz", p, "xz", "-c", "-0")
			im, err := Open(p+".xz", name+".vhdfixed.xz")
			if err != nil {
				if name == "cookie" || name == "size" {
					return // still fine to refuse early
				}
				t.Fatal(err)
			}
			err = readDisk(t, im)
			if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(err.Error(), c.want) {
				t.Errorf("read: %v; want EINVALID saying %q", err, c.want)
			}
		})
	}
	// Too short to hold a footer.
	p := writeFile(t, dir, "short.vhd", []byte("conectix"))
	if _, err := Open(p, "short.vhd"); cloudupload.ErrorCode(err) != cloudupload.EINVALID {
		t.Errorf("short: %v", err)
	}
	os.Remove(p)
}
