package image

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	cloudupload "github.com/cloudupload/cloudupload"
)

// qcow2Writer builds a qcow2 image for tests, with valid refcounts so
// qemu-img accepts it: every all-zero cluster is left unallocated (or, in
// v3, flagged zero), every third data cluster is compressed, and data
// clusters are stored in reverse order on the host so runs are not
// contiguous.
type qcow2Writer struct {
	version     int
	clusterBits uint
	compress    bool
	zeroFlag    bool // v3: mark some zero clusters with the zero flag and a preallocated cluster
	backing     string
	incompat    uint64
	crypt       uint32
	zstd        bool // compress clusters with zstd (compression type 1)
}

func (w qcow2Writer) build(disk []byte) []byte {
	cs := int64(1) << w.clusterBits
	size := int64(len(disk))
	clusters := (size + cs - 1) / cs
	l2Entries := cs / 8
	l1Size := (clusters + l2Entries - 1) / l2Entries

	// Layout: header | refcount table | refcount blocks | L1 | L2s | data.
	const hdr = 0
	l1Clusters := (l1Size*8 + cs - 1) / cs
	perBlock := cs / 2 // 16-bit refcounts
	upper := 2 + l1Clusters + l1Size + 2*clusters + 2
	nb := (upper + perBlock - 1) / perBlock
	nb = (upper + nb + perBlock - 1) / perBlock
	if nb > cs/8 {
		panic("test image too large for one refcount table cluster")
	}
	rt := cs
	rb := 2 * cs
	l1 := rb + nb*cs
	l2Start := l1 + l1Clusters*cs
	next := l2Start + l1Size*cs
	out := make([]byte, next)
	grow := func(n int64) {
		if int64(len(out)) < n {
			out = append(out, make([]byte, n-int64(len(out)))...)
		}
	}
	put64 := func(off int64, v uint64) { grow(off + 8); binary.BigEndian.PutUint64(out[off:], v) }

	for i := int64(0); i < l1Size; i++ {
		put64(l1+8*i, uint64(l2Start+i*cs)|1<<63)
	}
	cluster := func(c int64) []byte {
		b := make([]byte, cs)
		copy(b, disk[c*cs:min((c+1)*cs, size)])
		return b
	}
	isZero := func(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }
	// Standard data clusters, in reverse guest order.
	var compressed []int64
	for c := clusters - 1; c >= 0; c-- {
		b := cluster(c)
		entry := l2Start + (c/l2Entries)*cs + 8*(c%l2Entries)
		switch {
		case isZero(b) && w.zeroFlag && c%2 == 0:
			grow(next + cs) // preallocated, flagged zero: its content must not be read
			for i := next; i < next+cs; i++ {
				out[i] = 0xee
			}
			put64(entry, uint64(next)|1|1<<63)
			next += cs
		case isZero(b):
		case w.compress && c%3 == 1:
			compressed = append(compressed, c)
		default:
			grow(next + cs)
			copy(out[next:], b)
			put64(entry, uint64(next)|1<<63)
			next += cs
		}
	}
	// Compressed clusters, packed byte-tight as qemu does.
	x := 62 - (w.clusterBits - 8)
	for _, c := range compressed {
		var buf bytes.Buffer
		if w.zstd {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
			buf.Write(enc.EncodeAll(cluster(c), nil))
			enc.Close()
		} else {
			fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
			fw.Write(cluster(c))
			fw.Close()
		}
		off := next
		n := int64(buf.Len())
		grow(off + n)
		copy(out[off:], buf.Bytes())
		sectors := (off+n-1)>>9 - off>>9
		entry := l2Start + (c/l2Entries)*cs + 8*(c%l2Entries)
		put64(entry, uint64(off)|uint64(sectors)<<x|1<<62)
		next += n
	}
	grow((next + cs - 1) / cs * cs)
	hostClusters := int64(len(out)) / cs
	// Refcounts: 1 for every host cluster (compressed clusters sharing a
	// host cluster would count more, but 1 is enough for qemu to read).
	if hostClusters > nb*perBlock {
		panic("refcount blocks too few")
	}
	for i := int64(0); i < nb; i++ {
		put64(rt+8*i, uint64(rb+i*cs))
	}
	for c := int64(0); c < hostClusters; c++ {
		binary.BigEndian.PutUint16(out[rb+2*c:], 1)
	}

	h := out[hdr:]
	copy(h, qcow2Magic)
	binary.BigEndian.PutUint32(h[4:], uint32(w.version))
	if w.backing != "" {
		boff := int64(qcow2V3HeaderSize + 8)
		copy(h[boff:], w.backing)
		binary.BigEndian.PutUint64(h[8:], uint64(boff))
		binary.BigEndian.PutUint32(h[16:], uint32(len(w.backing)))
	}
	binary.BigEndian.PutUint32(h[20:], uint32(w.clusterBits))
	binary.BigEndian.PutUint64(h[24:], uint64(size))
	binary.BigEndian.PutUint32(h[32:], w.crypt)
	binary.BigEndian.PutUint32(h[36:], uint32(l1Size))
	binary.BigEndian.PutUint64(h[40:], uint64(l1))
	binary.BigEndian.PutUint64(h[48:], uint64(rt))
	binary.BigEndian.PutUint32(h[56:], 1)
	if w.version == 3 {
		incompat := w.incompat
		hl := uint32(qcow2V3HeaderSize)
		if w.zstd {
			incompat |= qcow2IncompatCompression
			hl = qcow2HeaderRead
			h[104] = 1
		}
		binary.BigEndian.PutUint64(h[72:], incompat)
		binary.BigEndian.PutUint32(h[96:], 4)
		binary.BigEndian.PutUint32(h[100:], hl)
	}
	return out
}

func TestQcow2(t *testing.T) {
	disk := rawDisk(3<<20+3*512, 4)
	for name, w := range map[string]qcow2Writer{
		"v3-64k":            {version: 3, clusterBits: 16, compress: true, zeroFlag: true},
		"v2-4k-many-l2":     {version: 2, clusterBits: 12, compress: true},
		"v3-512-plain":      {version: 3, clusterBits: 9},
		"v3-2m-compressed":  {version: 3, clusterBits: 21, compress: true},
		"v3-dirty-readable": {version: 3, clusterBits: 16, incompat: qcow2IncompatDirty},
		"v3-zstd":           {version: 3, clusterBits: 16, compress: true, zstd: true},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, "d.qcow2", w.build(disk))
			im, err := Open(p, "d.qcow2")
			if err != nil {
				t.Fatal(err)
			}
			checkDisk(t, im.(*img), disk, "qcow2")
			if n, ok := im.(*img).KnownDiskSize(); !ok || n != int64(len(disk)) {
				t.Errorf("KnownDiskSize = %d, %v", n, ok)
			}
			qemuCheck(t, p, disk)
		})
	}
}

func TestQcow2Refused(t *testing.T) {
	disk := rawDisk(256<<10, 5)
	for name, c := range map[string]struct {
		w    qcow2Writer
		want string
	}{
		"backing":    {qcow2Writer{version: 3, clusterBits: 16, backing: "base.qcow2"}, "backing file"},
		"encrypted":  {qcow2Writer{version: 2, clusterBits: 16, crypt: 1}, "encrypted"},
		"datafile":   {qcow2Writer{version: 3, clusterBits: 16, incompat: qcow2IncompatDataFile}, "external data file"},
		"no-ctype":   {qcow2Writer{version: 3, clusterBits: 16, incompat: qcow2IncompatCompression}, "lacks the compression type"},
		"extendedl2": {qcow2Writer{version: 3, clusterBits: 16, incompat: qcow2IncompatExtendedL2}, "extended L2"},
		"corrupt":    {qcow2Writer{version: 3, clusterBits: 16, incompat: qcow2IncompatCorrupt}, "marked corrupt"},
		"unknown":    {qcow2Writer{version: 3, clusterBits: 16, incompat: 1 << 40}, "unknown incompatible"},
		"version":    {qcow2Writer{version: 4, clusterBits: 16}, "version 4"},
		"clusters":   {qcow2Writer{version: 3, clusterBits: 30}, "cluster size"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var b []byte
			if c.w.clusterBits > 21 {
				b = qcow2Writer{version: 3, clusterBits: 16}.build(disk)
				binary.BigEndian.PutUint32(b[20:], uint32(c.w.clusterBits))
			} else {
				b = c.w.build(disk)
			}
			p := writeFile(t, dir, "d.qcow2", b)
			_, err := Open(p, "d.qcow2")
			if err == nil || !strings.Contains(err.Error(), c.want) || cloudupload.ErrorCode(err) != cloudupload.EINVALID {
				t.Errorf("Open: %v; want EINVALID saying %q", err, c.want)
			}
		})
	}
}

func TestQcow2Truncated(t *testing.T) {
	disk := rawDisk(1<<20, 6)
	b := qcow2Writer{version: 3, clusterBits: 16, compress: true}.build(disk)
	dir := t.TempDir()
	// Cut inside the data: the header and tables are intact, reading fails.
	p := writeFile(t, dir, "d.qcow2", b[:len(b)-70000])
	im, err := Open(p, "d.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if err := readDisk(t, im); err == nil {
		t.Error("a truncated qcow2 read without error")
	}
	// Cut inside the L1 table.
	p = writeFile(t, dir, "e.qcow2", b[:3<<16+4])
	if _, err := Open(p, "e.qcow2"); cloudupload.ErrorCode(err) != cloudupload.EINVALID {
		t.Errorf("L1 beyond the end: %v", err)
	}
}

// qemuCheck cross-checks with qemu-img when it is installed: it must accept
// the image and convert it to the same raw disk.
func qemuCheck(t *testing.T, path string, disk []byte) {
	t.Helper()
	qemu, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Log("qemu-img not installed: no cross-check")
		return
	}
	raw := path + ".qemu.raw"
	if out, err := exec.Command(qemu, "convert", "-f", "qcow2", "-O", "raw", path, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	got, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, disk) {
		t.Errorf("qemu-img reads a different disk (first difference at %d)", firstDiff(got, disk))
	}
}

// TestQcow2FromQemu reads images written by qemu-img itself (when
// installed): plain, compressed, v2.
func TestQcow2FromQemu(t *testing.T) {
	qemu, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed (the cross-check is optional; TestQcow2 covers the format)")
	}
	dir := t.TempDir()
	disk := rawDisk(5<<20, 7)
	raw := writeFile(t, dir, "d.raw", disk)
	for name, args := range map[string][]string{
		"plain":      {"-O", "qcow2"},
		"compressed": {"-c", "-O", "qcow2"},
		"v2-small":   {"-O", "qcow2", "-o", "compat=0.10,cluster_size=4096"},
		"v3-2m":      {"-c", "-O", "qcow2", "-o", "cluster_size=2M"},
		"zstd":       {"-c", "-O", "qcow2", "-o", "compression_type=zstd"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".qcow2")
			cmdArgs := append([]string{"convert", "-f", "raw"}, args...)
			cmdArgs = append(cmdArgs, raw, p)
			if out, err := exec.Command(qemu, cmdArgs...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img %v: %v: %s", cmdArgs, err, out)
			}
			im, err := Open(p, filepath.Base(p))
			if err != nil {
				t.Fatal(err)
			}
			checkDisk(t, im.(*img), disk, "qcow2")
		})
	}
}

func TestQcow2UnknownCompressionType(t *testing.T) {
	b := qcow2Writer{version: 3, clusterBits: 16, compress: true, zstd: true}.build(rawDisk(256<<10, 13))
	b[104] = 2
	p := writeFile(t, t.TempDir(), "d.qcow2", b)
	if _, err := Open(p, "d.qcow2"); err == nil || !strings.Contains(err.Error(), "compression type 2") {
		t.Errorf("Open: %v", err)
	}
}
