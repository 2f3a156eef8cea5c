package image

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// qcow2 (QEMU's docs/interop/qcow2.txt): a big-endian header, a one-level
// L1 table of L2 table offsets, and L2 tables mapping each guest cluster to
// a host cluster (standard), to compressed data (raw deflate, or zstd when
// the header says so), or to nothing (reads as zeros, since backing files
// are refused).

const (
	qcow2Magic        = "QFI\xfb"
	qcow2OffsetMask   = 0x00fffffffffffe00 // bits 9-55
	qcow2Compressed   = 1 << 62
	qcow2ZeroFlag     = 1
	qcow2MaxL1Bytes   = 32 << 20
	qcow2MaxSize      = 1 << 55 // what an L2 entry can address
	qcow2V3HeaderSize = 104
	qcow2HeaderRead   = 112 // with the compression type (byte 104) and padding

	qcow2IncompatDirty       = 1 << 0
	qcow2IncompatCorrupt     = 1 << 1
	qcow2IncompatDataFile    = 1 << 2
	qcow2IncompatCompression = 1 << 3
	qcow2IncompatExtendedL2  = 1 << 4
)

// qcow2 is a parsed qcow2 image: its header and L1 table.
type qcow2 struct {
	size        int64 // virtual disk size
	clusterBits uint
	clusterSize int64
	l1          []uint64
	fileSize    int64
	zstd        bool // compressed clusters are zstd frames, not deflate
}

// parseQcow2 reads and checks the header and the L1 table.
func parseQcow2(r io.ReaderAt, fileSize int64) (*qcow2, error) {
	h := make([]byte, qcow2HeaderRead)
	n, err := r.ReadAt(h, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read qcow2 header: %w", err)
	}
	q, l1Offset, l1Size, err := parseQcow2Header(h[:n], fileSize)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 8*l1Size)
	if _, err := r.ReadAt(buf, l1Offset); err != nil {
		return nil, fmt.Errorf("read qcow2 L1 table: %w", err)
	}
	q.l1 = make([]uint64, l1Size)
	for i := range q.l1 {
		e := binary.BigEndian.Uint64(buf[8*i:])
		q.l1[i] = e
		if off := int64(e & qcow2OffsetMask); off != 0 {
			if off%q.clusterSize != 0 {
				return nil, fmt.Errorf("qcow2 L1 entry %d: L2 table offset %#x is not cluster-aligned", i, off)
			}
			if off > fileSize-q.clusterSize {
				return nil, fmt.Errorf("qcow2 L1 entry %d: L2 table at %#x is beyond the end of the file", i, off)
			}
		}
	}
	return q, nil
}

// parseQcow2Header checks a qcow2 header (the first 112 bytes, or fewer for
// a short file) and returns the image with where its L1 table is.
func parseQcow2Header(h []byte, fileSize int64) (q *qcow2, l1Offset int64, l1Size int, err error) {
	if len(h) < 72 || string(h[:4]) != qcow2Magic {
		return nil, 0, 0, errors.New("not a qcow2 file")
	}
	be := binary.BigEndian
	zstdClusters := false
	version := be.Uint32(h[4:])
	if version != 2 && version != 3 {
		return nil, 0, 0, fmt.Errorf("qcow2 version %d is not supported (2 or 3)", version)
	}
	if be.Uint64(h[8:]) != 0 {
		return nil, 0, 0, errors.New("the qcow2 image has a backing file; convert it to a standalone image first (qemu-img convert)")
	}
	clusterBits := be.Uint32(h[20:])
	if clusterBits < 9 || clusterBits > 21 {
		return nil, 0, 0, fmt.Errorf("qcow2 cluster size 2^%d is invalid", clusterBits)
	}
	size := be.Uint64(h[24:])
	if size > qcow2MaxSize {
		return nil, 0, 0, fmt.Errorf("qcow2 disk size %d is too large", size)
	}
	if m := be.Uint32(h[32:]); m != 0 {
		return nil, 0, 0, errors.New("the qcow2 image is encrypted; decrypt it first (qemu-img convert)")
	}
	if version == 3 {
		if len(h) < qcow2V3HeaderSize {
			return nil, 0, 0, errors.New("qcow2 v3 header is truncated")
		}
		incompat := be.Uint64(h[72:])
		switch {
		case incompat&qcow2IncompatCorrupt != 0:
			return nil, 0, 0, errors.New("the qcow2 image is marked corrupt (qemu-img check -r all)")
		case incompat&qcow2IncompatDataFile != 0:
			return nil, 0, 0, errors.New("the qcow2 image keeps its data in an external data file; convert it to a standalone image first")
		case incompat&qcow2IncompatExtendedL2 != 0:
			return nil, 0, 0, errors.New("the qcow2 image uses extended L2 entries (subclusters), which are not supported")
		case incompat&^(qcow2IncompatDirty|qcow2IncompatCompression) != 0:
			return nil, 0, 0, fmt.Errorf("the qcow2 image uses unknown incompatible features %#x", incompat)
		}
		hl := be.Uint32(h[100:])
		if hl < qcow2V3HeaderSize {
			return nil, 0, 0, fmt.Errorf("qcow2 header length %d is too short", hl)
		}
		if incompat&qcow2IncompatCompression != 0 {
			// Byte 104: 0 zlib, 1 zstd.
			if hl <= qcow2V3HeaderSize || len(h) <= qcow2V3HeaderSize {
				return nil, 0, 0, errors.New("qcow2 header lacks the compression type its features announce")
			}
			switch ct := h[qcow2V3HeaderSize]; ct {
			case 0:
			case 1:
				zstdClusters = true
			default:
				return nil, 0, 0, fmt.Errorf("qcow2 compression type %d is not supported (zlib or zstd)", ct)
			}
		}
	}
	q = &qcow2{size: int64(size), clusterBits: uint(clusterBits), clusterSize: 1 << clusterBits, fileSize: fileSize, zstd: zstdClusters}
	l1Size = int(be.Uint32(h[36:]))
	l1Offset = int64(be.Uint64(h[40:]))
	l2Entries := q.clusterSize / 8
	clusters := (q.size + q.clusterSize - 1) / q.clusterSize
	need := (clusters + l2Entries - 1) / l2Entries
	switch {
	case int64(l1Size) < need:
		return nil, 0, 0, fmt.Errorf("qcow2 L1 table of %d entries is too small for a %d-byte disk", l1Size, size)
	case l1Size*8 > qcow2MaxL1Bytes:
		return nil, 0, 0, fmt.Errorf("qcow2 L1 table of %d entries is too large", l1Size)
	case l1Offset <= 0 && l1Size > 0 || l1Offset%q.clusterSize != 0:
		return nil, 0, 0, fmt.Errorf("qcow2 L1 table offset %#x is invalid", l1Offset)
	case l1Offset > fileSize || int64(l1Size)*8 > fileSize-l1Offset:
		return nil, 0, 0, errors.New("qcow2 L1 table is beyond the end of the file (truncated?)")
	}
	return q, l1Offset, l1Size, nil
}

// qcow2Reader streams the guest disk of a qcow2 image in order.
type qcow2Reader struct {
	q    *qcow2
	r    io.ReaderAt
	name string
	pos  int64

	l2Index int // L1 index of the loaded L2 table, -1 none
	l2      []uint64
	l2buf   []byte

	cluster  int64 // guest cluster held in data, -1 none
	data     []byte
	comp     []byte
	inflater io.ReadCloser
	unzstd   *zstd.Decoder
	rd       bytes.Reader
}

// Close releases the zstd decoder's goroutines, if any.
func (z *qcow2Reader) Close() {
	if z.unzstd != nil {
		z.unzstd.Close()
		z.unzstd = nil
	}
}

func newQcow2Reader(q *qcow2, r io.ReaderAt, name string) *qcow2Reader {
	return &qcow2Reader{q: q, r: r, name: name, l2Index: -1, cluster: -1}
}

func (z *qcow2Reader) Read(p []byte) (int, error) {
	if z.pos >= z.q.size {
		return 0, io.EOF
	}
	if rem := z.q.size - z.pos; int64(len(p)) > rem {
		p = p[:rem]
	}
	total := 0
	for len(p) > 0 {
		n, err := z.readSome(p)
		total += n
		p = p[n:]
		z.pos += int64(n)
		if err != nil {
			return total, fmt.Errorf("image %s: %w", z.name, err)
		}
	}
	return total, nil
}

// readSome fills a prefix of p from the cluster at z.pos and the clusters
// after it that continue the same run (zeros, or data contiguous on the
// host).
func (z *qcow2Reader) readSome(p []byte) (int, error) {
	cs := z.q.clusterSize
	c := z.pos / cs
	within := z.pos % cs
	entry, err := z.l2Entry(c)
	if err != nil {
		return 0, err
	}
	n := cs - within
	switch {
	case entry&qcow2Compressed != 0:
		if err := z.loadCompressed(c, entry); err != nil {
			return 0, err
		}
		return copy(p, z.data[within:]), nil
	case qcow2IsZero(entry):
		for k := int64(1); n < int64(len(p)); k++ {
			next, err := z.l2Entry(c + k)
			if err != nil {
				return 0, err
			}
			if !qcow2IsZero(next) {
				break
			}
			n += cs
		}
		n = min(n, int64(len(p)))
		clear(p[:n])
		return int(n), nil
	default:
		host := int64(entry & qcow2OffsetMask)
		if host%cs != 0 {
			return 0, fmt.Errorf("qcow2 cluster %d: data offset %#x is not cluster-aligned", c, host)
		}
		for k := int64(1); n < int64(len(p)); k++ {
			next, err := z.l2Entry(c + k)
			if err != nil {
				return 0, err
			}
			if next&qcow2Compressed != 0 || qcow2IsZero(next) || int64(next&qcow2OffsetMask) != host+k*cs {
				break
			}
			n += cs
		}
		n = min(n, int64(len(p)))
		start := host + within
		if start+n > z.q.fileSize {
			return 0, fmt.Errorf("qcow2 cluster %d: data at %#x is beyond the end of the file", c, host)
		}
		if _, err := z.r.ReadAt(p[:n], start); err != nil {
			return 0, fmt.Errorf("read qcow2 data: %w", err)
		}
		return int(n), nil
	}
}

// qcow2IsZero reports whether a standard L2 entry reads as zeros:
// unallocated (no backing file) or flagged zero (v3).
func qcow2IsZero(e uint64) bool {
	return e&qcow2Compressed == 0 && (e&qcow2ZeroFlag != 0 || e&qcow2OffsetMask == 0)
}

// l2Entry returns the L2 entry of guest cluster c.
func (z *qcow2Reader) l2Entry(c int64) (uint64, error) {
	per := z.q.clusterSize / 8
	i := int(c / per)
	if i >= len(z.q.l1) {
		return 0, fmt.Errorf("qcow2 cluster %d is beyond the L1 table", c)
	}
	if i != z.l2Index {
		off := int64(z.q.l1[i] & qcow2OffsetMask)
		if z.l2 == nil {
			z.l2 = make([]uint64, per)
			z.l2buf = make([]byte, z.q.clusterSize)
		}
		if off == 0 {
			clear(z.l2)
		} else {
			if _, err := z.r.ReadAt(z.l2buf, off); err != nil {
				return 0, fmt.Errorf("read qcow2 L2 table: %w", err)
			}
			for k := range z.l2 {
				z.l2[k] = binary.BigEndian.Uint64(z.l2buf[8*k:])
			}
		}
		z.l2Index = i
	}
	return z.l2[c%per], nil
}

// loadCompressed inflates the compressed guest cluster c into z.data.
func (z *qcow2Reader) loadCompressed(c int64, entry uint64) error {
	if z.cluster == c {
		return nil
	}
	cs := z.q.clusterSize
	x := 62 - (z.q.clusterBits - 8)
	host := int64(entry & (1<<x - 1))
	sectors := int64((entry&(1<<62-1))>>x) + 1
	length := sectors*512 - host%512
	if host+length > z.q.fileSize {
		// The last sectors may lie past the end of the file.
		length = z.q.fileSize - host
	}
	if host <= 0 || length <= 0 {
		return fmt.Errorf("qcow2 cluster %d: compressed data offset %#x is invalid", c, host)
	}
	if int64(cap(z.comp)) < length {
		z.comp = make([]byte, length)
	}
	z.comp = z.comp[:length]
	if _, err := z.r.ReadAt(z.comp, host); err != nil {
		return fmt.Errorf("read qcow2 compressed cluster %d: %w", c, err)
	}
	if z.data == nil {
		z.data = make([]byte, cs)
	}
	z.rd.Reset(z.comp)
	z.cluster = -1
	// The data read may run past the compressed cluster (the size is in
	// whole sectors): read exactly one cluster and ignore the rest, as
	// qemu does.
	if z.q.zstd {
		if z.unzstd == nil {
			d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
			if err != nil {
				return err
			}
			z.unzstd = d
		}
		if err := z.unzstd.Reset(&z.rd); err != nil {
			return fmt.Errorf("qcow2 compressed cluster %d: zstd: %w", c, err)
		}
		if _, err := io.ReadFull(z.unzstd, z.data); err != nil {
			return fmt.Errorf("qcow2 compressed cluster %d: zstd: %w", c, err)
		}
	} else {
		if z.inflater == nil {
			z.inflater = flate.NewReader(&z.rd)
		} else {
			z.inflater.(flate.Resetter).Reset(&z.rd, nil)
		}
		if _, err := io.ReadFull(z.inflater, z.data); err != nil {
			return fmt.Errorf("qcow2 compressed cluster %d: inflate: %w", c, err)
		}
	}
	z.cluster = c
	return nil
}
