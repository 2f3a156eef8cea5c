package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// A fixed VHD is the raw disk followed by a 512-byte footer (Microsoft's
// "Virtual Hard Disk Image Format Specification"): cookie "conectix",
// big-endian fields, disk type 2 (fixed), and a checksum that is the one's
// complement of the sum of every other byte.

const vhdFooterSize = 512

var vhdCookie = []byte("conectix")

// parseVHDFooter checks a fixed VHD footer and returns its current size
// (the size of the disk it describes).
func parseVHDFooter(b []byte) (int64, error) {
	if len(b) != vhdFooterSize {
		return 0, errors.New("short VHD footer")
	}
	if !bytes.Equal(b[:8], vhdCookie) {
		return 0, errors.New(`no VHD footer (cookie "conectix") at the end`)
	}
	var sum uint32
	for i, c := range b {
		if i < 64 || i >= 68 {
			sum += uint32(c)
		}
	}
	if want := binary.BigEndian.Uint32(b[64:68]); ^sum != want {
		return 0, fmt.Errorf("VHD footer checksum is %#08x, expected %#08x", want, ^sum)
	}
	if v := binary.BigEndian.Uint32(b[12:16]); v != 0x00010000 {
		return 0, fmt.Errorf("VHD footer version %#08x is not 1.0", v)
	}
	switch t := binary.BigEndian.Uint32(b[60:64]); t {
	case 2:
	case 3, 4:
		return 0, errors.New("the VHD is dynamic or differencing; only fixed VHDs are supported (convert with qemu-img convert -O vpc -o subformat=fixed)")
	default:
		return 0, fmt.Errorf("VHD disk type %d is not fixed (2)", t)
	}
	size := binary.BigEndian.Uint64(b[48:56])
	if size > 1<<62 {
		return 0, fmt.Errorf("VHD current size %d is too large", size)
	}
	return int64(size), nil
}

// checkVHDFooter checks footer against the size of the data before it.
func checkVHDFooter(footer []byte, dataSize int64) error {
	size, err := parseVHDFooter(footer)
	if err != nil {
		return err
	}
	if size != dataSize {
		return fmt.Errorf("VHD footer gives the disk size as %d bytes but %d bytes precede it", size, dataSize)
	}
	return nil
}
