package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The .xz container (https://tukaani.org/xz/xz-file-format.txt): one or more
// streams, each "header, blocks, index, footer", separated and followed by
// stream padding (null bytes, a multiple of four). The index of each stream
// lists the uncompressed size of every block, so the size of the whole
// decompressed file is known from the end of the file alone.

var (
	xzHeaderMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	xzFooterMagic = []byte{'Y', 'Z'}
)

const (
	xzHeaderSize = 12
	xzFooterSize = 12
	// maxXZIndex bounds the index of one stream read into memory: about
	// four million blocks, far beyond any real disk image.
	maxXZIndex = 64 << 20
)

// xzUncompressedSize returns the uncompressed size of the .xz file r of
// size bytes, read from the stream indexes without decompressing.
func xzUncompressedSize(r io.ReaderAt, size int64) (int64, error) {
	return xzWalk(r, size, nil)
}

// xzRecord is one block as a stream index lists it.
type xzRecord struct {
	unpadded, uncompressed int64
}

// xzWalk reads the stream indexes of the .xz file r of size bytes, from the
// last stream to the first, and returns the uncompressed size of the whole
// file. When stream is not nil it is called for each stream with where the
// stream starts, its flags and its index records in order.
func xzWalk(r io.ReaderAt, size int64, stream func(start int64, flags uint16, recs []xzRecord) error) (int64, error) {
	var total int64
	pos := size
	streams := 0
	for pos > 0 {
		// Stream padding: null bytes, a multiple of four in all.
		var err error
		pos, err = xzSkipPadding(r, pos)
		if err != nil {
			return 0, err
		}
		if pos == 0 {
			if streams == 0 {
				return 0, errors.New("file holds only null bytes")
			}
			return 0, errors.New("stream padding at the start of the file")
		}
		start, n, err := xzStream(r, pos, stream)
		if err != nil {
			if streams > 0 {
				return 0, fmt.Errorf("stream %d from the end: %w", streams+1, err)
			}
			return 0, err
		}
		if total+n < total {
			return 0, errors.New("uncompressed size overflows")
		}
		total += n
		pos = start
		streams++
	}
	if streams == 0 {
		return 0, errors.New("empty file")
	}
	return total, nil
}

// xzSkipPadding returns the position before the null bytes that end at pos.
func xzSkipPadding(r io.ReaderAt, pos int64) (int64, error) {
	var buf [4096]byte
	end := pos
	for pos > 0 {
		n := int64(len(buf))
		if n > pos {
			n = pos
		}
		if _, err := r.ReadAt(buf[:n], pos-n); err != nil {
			return 0, fmt.Errorf("read: %w", err)
		}
		i := int64(len(bytes.TrimRight(buf[:n], "\x00")))
		pos -= n - i
		if i > 0 {
			break
		}
	}
	if (end-pos)%4 != 0 {
		return 0, fmt.Errorf("stream padding of %d bytes is not a multiple of four", end-pos)
	}
	return pos, nil
}

// xzStream parses the stream ending at end and returns where it starts and
// its uncompressed size; it passes its records to stream when not nil.
func xzStream(r io.ReaderAt, end int64, stream func(start int64, flags uint16, recs []xzRecord) error) (start, uncompressed int64, err error) {
	if end < xzHeaderSize+xzFooterSize {
		return 0, 0, errors.New("too short for an xz stream")
	}
	var footer [xzFooterSize]byte
	if _, err := r.ReadAt(footer[:], end-xzFooterSize); err != nil {
		return 0, 0, fmt.Errorf("read stream footer: %w", err)
	}
	backward, flags, err := parseXZFooter(footer[:])
	if err != nil {
		return 0, 0, err
	}
	indexEnd := end - xzFooterSize
	if backward > indexEnd-xzHeaderSize {
		return 0, 0, fmt.Errorf("index size %d exceeds the stream", backward)
	}
	if backward > maxXZIndex {
		return 0, 0, fmt.Errorf("index of %d bytes is too large", backward)
	}
	index := make([]byte, backward)
	if _, err := r.ReadAt(index, indexEnd-backward); err != nil {
		return 0, 0, fmt.Errorf("read index: %w", err)
	}
	var recs []xzRecord
	var record func(unpadded, size int64)
	if stream != nil {
		record = func(unpadded, size int64) { recs = append(recs, xzRecord{unpadded, size}) }
	}
	blocks, uncompressed, err := parseXZIndex(index, record)
	if err != nil {
		return 0, 0, err
	}
	start = indexEnd - backward - blocks - xzHeaderSize
	if start < 0 {
		return 0, 0, fmt.Errorf("blocks of %d bytes exceed the stream", blocks)
	}
	var header [xzHeaderSize]byte
	if _, err := r.ReadAt(header[:], start); err != nil {
		return 0, 0, fmt.Errorf("read stream header: %w", err)
	}
	hflags, err := parseXZHeader(header[:])
	if err != nil {
		return 0, 0, err
	}
	if hflags != flags {
		return 0, 0, errors.New("stream header and footer flags differ")
	}
	if stream != nil {
		if err := stream(start, flags, recs); err != nil {
			return 0, 0, err
		}
	}
	return start, uncompressed, nil
}

// parseXZFooter returns the index size and the stream flags of a stream
// footer.
func parseXZFooter(b []byte) (backward int64, flags uint16, err error) {
	if len(b) != xzFooterSize {
		return 0, 0, errors.New("short stream footer")
	}
	if !bytes.Equal(b[10:12], xzFooterMagic) {
		return 0, 0, errors.New("no xz stream footer at the end (truncated or not an xz file)")
	}
	if crc32.ChecksumIEEE(b[4:10]) != binary.LittleEndian.Uint32(b[0:4]) {
		return 0, 0, errors.New("stream footer checksum mismatch")
	}
	if b[8] != 0 || b[9]&0xf0 != 0 {
		return 0, 0, errors.New("unsupported stream flags")
	}
	backward = (int64(binary.LittleEndian.Uint32(b[4:8])) + 1) * 4
	return backward, binary.LittleEndian.Uint16(b[8:10]), nil
}

// parseXZHeader returns the stream flags of a stream header.
func parseXZHeader(b []byte) (flags uint16, err error) {
	if len(b) != xzHeaderSize || !bytes.Equal(b[:6], xzHeaderMagic) {
		return 0, errors.New("no xz stream header where the index says a stream starts")
	}
	if crc32.ChecksumIEEE(b[6:8]) != binary.LittleEndian.Uint32(b[8:12]) {
		return 0, errors.New("stream header checksum mismatch")
	}
	return binary.LittleEndian.Uint16(b[6:8]), nil
}

// parseXZIndex parses a stream index and returns the total size of the
// stream's blocks (each padded to four bytes) and their uncompressed size.
// It passes each record to record when not nil.
func parseXZIndex(b []byte, record func(unpadded, size int64)) (blocks, uncompressed int64, err error) {
	if len(b) < 8 || len(b)%4 != 0 {
		return 0, 0, fmt.Errorf("index size %d is invalid", len(b))
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return 0, 0, errors.New("index checksum mismatch")
	}
	if body[0] != 0 {
		return 0, 0, errors.New("index indicator missing")
	}
	p := body[1:]
	count, p, err := xzVLI(p)
	if err != nil {
		return 0, 0, fmt.Errorf("index record count: %w", err)
	}
	// Each record takes at least two bytes.
	if count > uint64(len(p))/2 {
		return 0, 0, fmt.Errorf("index claims %d records in %d bytes", count, len(p))
	}
	const maxSize = 1<<63 - 1
	for i := uint64(0); i < count; i++ {
		var unpadded, size uint64
		if unpadded, p, err = xzVLI(p); err != nil {
			return 0, 0, fmt.Errorf("index record %d: %w", i, err)
		}
		if size, p, err = xzVLI(p); err != nil {
			return 0, 0, fmt.Errorf("index record %d: %w", i, err)
		}
		// Unpadded size: at least block header (5) + check; 0 is invalid.
		if unpadded < 5 || unpadded > maxSize-3 {
			return 0, 0, fmt.Errorf("index record %d: invalid block size %d", i, unpadded)
		}
		padded := int64((unpadded + 3) &^ 3)
		if blocks > maxSize-padded || size > maxSize || uncompressed > maxSize-int64(size) {
			return 0, 0, errors.New("index sizes overflow")
		}
		blocks += padded
		uncompressed += int64(size)
		if record != nil {
			record(int64(unpadded), int64(size))
		}
	}
	for _, c := range p {
		if c != 0 {
			return 0, 0, errors.New("index padding is not null")
		}
	}
	if len(p) > 3 {
		return 0, 0, errors.New("index has trailing bytes")
	}
	return blocks, uncompressed, nil
}

// xzVLI decodes one variable-length integer (at most nine bytes, minimal
// encoding) from the start of b.
func xzVLI(b []byte) (uint64, []byte, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		if i >= len(b) {
			return 0, nil, errors.New("truncated number")
		}
		c := b[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, nil, errors.New("number not minimally encoded")
			}
			return v, b[i+1:], nil
		}
	}
	return 0, nil, errors.New("number longer than nine bytes")
}
