package image

import (
	"encoding/binary"
	"testing"
	"time"
)

func TestVHDFooterParses(t *testing.T) {
	created := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, size := range []int64{1 << 20, 30 << 30, 4<<30 + 1<<20, 2 << 40} {
		f := VHDFooter(size, created, [16]byte{1, 2, 3})
		got, err := parseVHDFooter(f)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got != size {
			t.Errorf("size %d: footer says %d", size, got)
		}
		if ts := binary.BigEndian.Uint32(f[24:28]); time.Duration(ts)*time.Second != created.Sub(vhdEpoch) {
			t.Errorf("timestamp %d", ts)
		}
	}
}

func TestVHDGeometry(t *testing.T) {
	// Worked through the specification's algorithm by hand.
	for _, c := range []struct {
		size int64
		c    uint16
		h, s uint8
	}{
		{30 << 30, 62415, 16, 63},
		{1 << 20, 30, 4, 17}, // small disks use 17 sectors per track
		{200 << 30, 65535, 16, 255},
	} {
		cy, h, s := vhdGeometry(c.size)
		if cy != c.c || h != c.h || s != c.s {
			t.Errorf("%d bytes: CHS %d/%d/%d, want %d/%d/%d", c.size, cy, h, s, c.c, c.h, c.s)
		}
	}
}
