package image

import (
	"encoding/binary"
	"time"
)

// VHDFooterSize is the size of a fixed VHD's footer.
const VHDFooterSize = vhdFooterSize

// vhdEpoch is when VHD timestamps count from.
var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// VHDFooter returns the 512-byte footer that makes a raw disk of size bytes
// a fixed VHD when appended to it (Microsoft's "Virtual Hard Disk Image
// Format Specification"). size should be a multiple of 512 (Azure wants a
// multiple of 1 MiB). The footer is a pure function of its arguments, so a
// resumed upload writes the same bytes: created is its timestamp and id its
// unique id.
func VHDFooter(size int64, created time.Time, id [16]byte) []byte {
	b := make([]byte, vhdFooterSize)
	copy(b[0:8], vhdCookie)
	binary.BigEndian.PutUint32(b[8:12], 2)           // features: reserved bit, always set
	binary.BigEndian.PutUint32(b[12:16], 0x00010000) // format version 1.0
	binary.BigEndian.PutUint64(b[16:24], ^uint64(0)) // data offset: none for fixed disks
	ts := created.Sub(vhdEpoch) / time.Second
	if ts < 0 {
		ts = 0
	}
	binary.BigEndian.PutUint32(b[24:28], uint32(ts))
	copy(b[28:32], "clup")                           // creator application
	binary.BigEndian.PutUint32(b[32:36], 0x00010000) // creator version
	copy(b[36:40], "Wi2k")                           // creator host OS, as Azure's own tools write
	binary.BigEndian.PutUint64(b[40:48], uint64(size))
	binary.BigEndian.PutUint64(b[48:56], uint64(size))
	c, h, s := vhdGeometry(size)
	binary.BigEndian.PutUint16(b[56:58], c)
	b[58], b[59] = h, s
	binary.BigEndian.PutUint32(b[60:64], 2) // fixed
	copy(b[68:84], id[:])
	var sum uint32
	for _, c := range b {
		sum += uint32(c)
	}
	binary.BigEndian.PutUint32(b[64:68], ^sum)
	return b
}

// vhdGeometry is the specification's CHS algorithm (appendix "CHS
// calculation").
func vhdGeometry(size int64) (cylinders uint16, heads, sectors uint8) {
	total := size / 512
	if total > 65535*16*255 {
		total = 65535 * 16 * 255
	}
	var spt, hd, cth int64
	if total >= 65535*16*63 {
		spt, hd = 255, 16
		cth = total / spt
	} else {
		spt = 17
		cth = total / spt
		hd = max((cth+1023)/1024, 4)
		if cth >= hd*1024 || hd > 16 {
			spt, hd = 31, 16
			cth = total / spt
		}
		if cth >= hd*1024 {
			spt, hd = 63, 16
			cth = total / spt
		}
	}
	return uint16(cth / hd), uint8(hd), uint8(spt)
}
