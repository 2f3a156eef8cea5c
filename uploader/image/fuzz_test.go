package image

import (
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func xzBytes(t testing.TB, data []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

// FuzzXZIndex: the index parser never panics and never allocates beyond
// the input. (No cross-check with ulikunitz/xz here: it accepts some
// streams whose blocks are garbage; TestCompressedFormats checks sizes
// against real files.)
func FuzzXZIndex(f *testing.F) {
	small := xzBytes(f, []byte("hello, disk\n"))
	f.Add(small)
	f.Add(append(append(bytes.Clone(small), 0, 0, 0, 0), small...))
	f.Add(xzBytes(f, make([]byte, 4096)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := xzUncompressedSize(bytes.NewReader(b), int64(len(b)))
		if err == nil && n < 0 {
			t.Errorf("negative size %d", n)
		}
	})
}

// FuzzZstdFrames: the frame walker never panics and agrees with the
// decoder when both accept the input.
func FuzzZstdFrames(f *testing.F) {
	enc, _ := zstd.NewWriter(nil)
	f.Add(enc.EncodeAll([]byte("hello, disk\n"), nil))
	f.Add(enc.EncodeAll(make([]byte, 70000), nil))
	f.Add(append([]byte{0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 'h', 'i'}, enc.EncodeAll([]byte("x"), nil)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := zstdContentSize(bytes.NewReader(b), int64(len(b)))
		if err != nil || n > 1<<20 {
			return
		}
		dec, _ := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
		defer dec.Close()
		got, err := io.Copy(io.Discard, io.LimitReader(dec, 2<<20))
		if err == nil && got != n {
			t.Errorf("frames say %d bytes, decoder gives %d", n, got)
		}
	})
}

// FuzzVHDFooter: the footer parser never panics and accepts only footers
// whose checksum holds.
func FuzzVHDFooter(f *testing.F) {
	f.Add(vhdFooter(1 << 20))
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := parseVHDFooter(b)
		if err == nil && (len(b) != 512 || size < 0 || !bytes.HasPrefix(b, vhdCookie)) {
			t.Errorf("accepted a bad footer (size %d)", size)
		}
	})
}

// FuzzQcow2: the header and table parser and the reader never panic and
// never allocate beyond bounds; reading is capped at 64 KiB per input.
func FuzzQcow2(f *testing.F) {
	// Small seeds: the fuzzer slows to a crawl on inputs of tens of KiB.
	disk := rawDisk(8<<10, 12)
	copy(disk[1024:], disk[:1024]) // data in the first clusters
	f.Add(qcow2Writer{version: 3, clusterBits: 9, compress: true, zeroFlag: true}.build(disk))
	f.Add(qcow2Writer{version: 2, clusterBits: 9}.build(disk[:2048]))
	f.Add(qcow2Writer{version: 3, clusterBits: 9, compress: true, zstd: true}.build(disk[:4096]))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := parseQcow2(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		r := newQcow2Reader(q, bytes.NewReader(b), "fuzz.qcow2")
		io.Copy(io.Discard, io.LimitReader(r, 64<<10))
	})
}
