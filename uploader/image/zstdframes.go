package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The zstd format (RFC 8878): a sequence of frames, each either a zstd frame
// (magic, frame header with an optional content size, blocks, optional
// checksum) or a skippable frame (magic 0x184D2A5?, length, data). The total
// uncompressed size is known without decompressing only when every zstd
// frame declares its content size.

const (
	zstdMagic         = 0xFD2FB528
	zstdSkippableMask = 0xFFFFFFF0
	zstdSkippable     = 0x184D2A50
)

// errNoContentSize says a frame does not declare its content size.
var errNoContentSize = errors.New("a frame does not declare its size")

// zstdContentSize returns the sum of the content sizes of the zstd frames
// in r (size bytes), walking frame and block headers only. It returns
// errNoContentSize when a frame lacks one.
func zstdContentSize(r io.ReaderAt, size int64) (int64, error) {
	var total int64
	var pos int64
	var hdr [18]byte
	for frame := 0; pos < size; frame++ {
		n := int64(len(hdr))
		if n > size-pos {
			n = size - pos
		}
		if _, err := r.ReadAt(hdr[:n], pos); err != nil {
			return 0, fmt.Errorf("frame %d: read: %w", frame, err)
		}
		if n < 4 {
			return 0, fmt.Errorf("frame %d: truncated", frame)
		}
		magic := binary.LittleEndian.Uint32(hdr[:4])
		if magic&zstdSkippableMask == zstdSkippable {
			if n < 8 {
				return 0, fmt.Errorf("frame %d: truncated skippable frame", frame)
			}
			pos += 8 + int64(binary.LittleEndian.Uint32(hdr[4:8]))
			if pos > size {
				return 0, fmt.Errorf("frame %d: skippable frame exceeds the file", frame)
			}
			continue
		}
		if magic != zstdMagic {
			return 0, fmt.Errorf("frame %d: not a zstd frame", frame)
		}
		hlen, content, hasSize, checksum, err := parseZstdFrameHeader(hdr[4:n])
		if err != nil {
			return 0, fmt.Errorf("frame %d: %w", frame, err)
		}
		if !hasSize {
			return 0, errNoContentSize
		}
		pos += 4 + int64(hlen)
		// Blocks: three-byte headers, the last flagged.
		var bh [3]byte
		for last := false; !last; {
			if pos+3 > size {
				return 0, fmt.Errorf("frame %d: truncated block header", frame)
			}
			if _, err := r.ReadAt(bh[:], pos); err != nil {
				return 0, fmt.Errorf("frame %d: read: %w", frame, err)
			}
			v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
			last = v&1 == 1
			bsize := int64(v >> 3)
			switch (v >> 1) & 3 {
			case 0, 2: // raw, compressed
			case 1: // RLE: one byte stored
				bsize = 1
			default:
				return 0, fmt.Errorf("frame %d: reserved block type", frame)
			}
			pos += 3 + bsize
			if pos > size {
				return 0, fmt.Errorf("frame %d: block exceeds the file", frame)
			}
		}
		if checksum {
			pos += 4
			if pos > size {
				return 0, fmt.Errorf("frame %d: truncated checksum", frame)
			}
		}
		if total+content < total {
			return 0, errors.New("content sizes overflow")
		}
		total += content
	}
	return total, nil
}

// parseZstdFrameHeader parses a zstd frame header (after the magic) and
// returns its length, the content size if declared, and whether a content
// checksum follows the blocks.
func parseZstdFrameHeader(b []byte) (n int, content int64, hasSize, checksum bool, err error) {
	if len(b) < 1 {
		return 0, 0, false, false, errors.New("truncated frame header")
	}
	fhd := b[0]
	fcsFlag := fhd >> 6
	single := fhd&0x20 != 0
	if fhd&0x08 != 0 {
		return 0, 0, false, false, errors.New("reserved frame header bit set")
	}
	checksum = fhd&0x04 != 0
	dictLen := [4]int{0, 1, 2, 4}[fhd&3]
	fcsLen := [4]int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && single {
		fcsLen = 1
	}
	n = 1 + dictLen + fcsLen
	if !single {
		n++ // window descriptor
	}
	if len(b) < n {
		return 0, 0, false, false, errors.New("truncated frame header")
	}
	f := b[n-fcsLen : n]
	switch fcsLen {
	case 0:
		return n, 0, false, checksum, nil
	case 1:
		content = int64(f[0])
	case 2:
		content = int64(binary.LittleEndian.Uint16(f)) + 256
	case 4:
		content = int64(binary.LittleEndian.Uint32(f))
	case 8:
		v := binary.LittleEndian.Uint64(f)
		if v > 1<<62 {
			return 0, 0, false, false, fmt.Errorf("content size %d is too large", v)
		}
		content = int64(v)
	}
	return n, content, true, checksum, nil
}
