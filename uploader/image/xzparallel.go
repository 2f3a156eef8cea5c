package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/ulikunitz/xz/lzma"

	"github.com/cloudupload/cloudupload"
)

// Without the xz binary, a multi-block .xz file (what `xz -T` writes) is
// decoded by the pure-Go LZMA2 decoder one block per core: the stream
// indexes give every block's place and sizes, so the blocks are decoded
// independently and handed out in order. Files with one block, with
// filters other than plain LZMA2 (BCJ, delta) or with blocks too large to
// hold several in memory are decoded by one core, as a stream.

const (
	// maxParallelBlock bounds the uncompressed size of a block decoded
	// in parallel: (cores+2) of them are in memory at once.
	maxParallelBlock = 64 << 20
	// maxParallelBlocks bounds the block list kept in memory.
	maxParallelBlocks = 1 << 20
	xzFilterLZMA2     = 0x21
)

// xzBlock is one block of an .xz file: where it starts, its sizes from the
// index, and the integrity check of its stream.
type xzBlock struct {
	offset, unpadded, uncompressed int64
	check                          byte // stream flags' check type
}

// xzCheckSize is the size of each check type this decoder verifies; other
// types make the file go to the stream decoder.
var xzCheckSize = map[byte]int64{0: 0, 1: 4, 4: 8, 10: 32}

// xzParallelBlocks returns the blocks of the .xz file f of size bytes when
// they can be decoded in parallel, or nil when the file should be decoded
// as a stream.
func xzParallelBlocks(f io.ReaderAt, size int64) []xzBlock {
	var blocks []xzBlock
	_, err := xzWalk(f, size, func(start int64, flags uint16, recs []xzRecord) error {
		check := byte(flags>>8) & 0x0f
		if _, ok := xzCheckSize[check]; !ok {
			return errors.New("unsupported check")
		}
		if len(blocks)+len(recs) > maxParallelBlocks {
			return errors.New("too many blocks")
		}
		off := start + xzHeaderSize
		stream := make([]xzBlock, 0, len(recs))
		for _, r := range recs {
			if r.uncompressed > maxParallelBlock {
				return errors.New("block too large")
			}
			if _, _, err := xzBlockHeader(f, off); err != nil {
				return err
			}
			stream = append(stream, xzBlock{offset: off, unpadded: r.unpadded, uncompressed: r.uncompressed, check: check})
			off += (r.unpadded + 3) &^ 3
		}
		blocks = append(stream, blocks...) // streams are walked from the end
		return nil
	})
	if err != nil || len(blocks) < 2 {
		return nil
	}
	return blocks
}

// xzBlockHeader reads the header of the block at off and returns its size
// and the LZMA2 dictionary size; filter chains other than LZMA2 alone are
// refused.
func xzBlockHeader(f io.ReaderAt, off int64) (hsize, dict int64, err error) {
	var first [1]byte
	if _, err := f.ReadAt(first[:], off); err != nil {
		return 0, 0, fmt.Errorf("read: %w", err)
	}
	if first[0] == 0 {
		return 0, 0, errors.New("index where a block header should be")
	}
	hsize = int64(first[0])*4 + 4
	h := make([]byte, hsize)
	if _, err := f.ReadAt(h, off); err != nil {
		return 0, 0, fmt.Errorf("read: %w", err)
	}
	if crc32.ChecksumIEEE(h[:hsize-4]) != binary.LittleEndian.Uint32(h[hsize-4:]) {
		return 0, 0, errors.New("block header checksum mismatch")
	}
	flags := h[1]
	if flags&0x3c != 0 {
		return 0, 0, errors.New("unsupported block flags")
	}
	p := h[2 : hsize-4]
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} { // compressed, uncompressed size
		if present {
			if _, p, err = xzVLI(p); err != nil {
				return 0, 0, fmt.Errorf("block header: %w", err)
			}
		}
	}
	var id, n uint64
	if flags&0x03 == 0 {
		if id, p, err = xzVLI(p); err == nil {
			n, p, err = xzVLI(p)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("block header: %w", err)
		}
	}
	if flags&0x03 != 0 || id != xzFilterLZMA2 || n != 1 || len(p) < 1 || p[0] > 40 {
		return 0, 0, errors.New("filters other than LZMA2 alone")
	}
	dict = 0xffffffff
	if prop := p[0]; prop < 40 {
		dict = int64(2|prop&1) << (prop/2 + 11)
	}
	return hsize, dict, nil
}

// decodeXZBlock decodes block b of f into out (len b.uncompressed) and
// verifies its check.
func decodeXZBlock(f io.ReaderAt, b xzBlock, out []byte) error {
	raw := make([]byte, (b.unpadded+3)&^3)
	if _, err := f.ReadAt(raw, b.offset); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	hsize, dict, err := xzBlockHeader(bytes.NewReader(raw), 0)
	if err != nil {
		return err
	}
	csize := xzCheckSize[b.check]
	checkAt := (b.unpadded - csize + 3) &^ 3
	if b.unpadded-csize < hsize || checkAt+csize > int64(len(raw)) {
		return errors.New("invalid block size")
	}
	data, sum := raw[hsize:b.unpadded-csize], raw[checkAt:checkAt+csize]
	// The dictionary never needs to be larger than the block.
	dr, err := lzma.Reader2Config{DictCap: int(max(lzma.MinDictCap, min(dict, b.uncompressed)))}.NewReader2(bytes.NewReader(data))
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(dr, out); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return errors.New("block is shorter than its index says")
		}
		return err
	}
	var one [1]byte
	if m, err := dr.Read(one[:]); m != 0 || err != io.EOF {
		if err != nil && err != io.EOF {
			return err
		}
		return errors.New("block is longer than its index says")
	}
	var got []byte
	switch b.check {
	case 1:
		got = binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(out))
	case 4:
		got = binary.LittleEndian.AppendUint64(nil, crc64.Checksum(out, crc64ECMA))
	case 10:
		s := sha256.Sum256(out)
		got = s[:]
	}
	if !bytes.Equal(got, sum) {
		return errors.New("block check mismatch: the data is corrupt")
	}
	return nil
}

var crc64ECMA = crc64.MakeTable(crc64.ECMA)

// xzParallelReader decodes the blocks of an .xz file on all cores and reads
// them out in order. At most workers+2 decoded blocks are in memory.
type xzParallelReader struct {
	name    string
	cancel  context.CancelFunc
	results chan chan xzResult // in block order
	wg      sync.WaitGroup
	free    chan []byte
	cur     []byte // what is left of the block being read
	buf     []byte // the buffer cur is in
	err     error
	closed  sync.Once
}

type xzResult struct {
	buf []byte
	err error
}

// newXZParallelReader starts decoding blocks of f (which it closes).
func newXZParallelReader(ctx context.Context, name string, f *os.File, blocks []xzBlock) *xzParallelReader {
	workers := max(1, runtime.GOMAXPROCS(0))
	ctx, cancel := context.WithCancel(ctx)
	x := &xzParallelReader{name: name, cancel: cancel, results: make(chan chan xzResult, workers+1), free: make(chan []byte, workers+2)}
	type job struct {
		i   int
		out chan xzResult
	}
	jobs := make(chan job)
	for range workers {
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			for j := range jobs {
				b := blocks[j.i]
				var buf []byte
				select {
				case buf = <-x.free:
				default:
				}
				if int64(cap(buf)) < b.uncompressed {
					buf = make([]byte, b.uncompressed)
				}
				buf = buf[:b.uncompressed]
				if err := decodeXZBlock(f, b, buf); err != nil {
					j.out <- xzResult{err: cloudupload.Errorf(cloudupload.EINVALID, "image %s: xz block %d: %v", name, j.i+1, err)}
					continue
				}
				j.out <- xzResult{buf: buf}
			}
		}()
	}
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer close(x.results)
		defer close(jobs)
		for i := range blocks {
			out := make(chan xzResult, 1)
			select {
			case x.results <- out: // bounds the blocks in flight
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- job{i, out}:
			case <-ctx.Done():
				out <- xzResult{err: ctx.Err()}
				return
			}
		}
	}()
	go func() {
		x.wg.Wait()
		f.Close()
	}()
	return x
}

func (x *xzParallelReader) Read(p []byte) (int, error) {
	for len(x.cur) == 0 {
		if x.err != nil {
			return 0, x.err
		}
		if x.buf != nil {
			select {
			case x.free <- x.buf:
			default:
			}
			x.buf = nil
		}
		out, ok := <-x.results
		if !ok {
			x.err = io.EOF
			return 0, io.EOF
		}
		r := <-out
		if r.err != nil {
			x.err = r.err
			return 0, r.err
		}
		x.buf, x.cur = r.buf, r.buf
	}
	n := copy(p, x.cur)
	x.cur = x.cur[n:]
	return n, nil
}

// Close stops the decoding; the file is closed once every worker is done.
func (x *xzParallelReader) Close() error {
	x.closed.Do(func() {
		x.cancel()
		// Unblock the producer and let workers finish their block.
		go func() {
			for out := range x.results {
				<-out
			}
		}()
	})
	return nil
}
