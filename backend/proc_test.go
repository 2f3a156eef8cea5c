package backend

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseProcStat: the command name in /proc/<pid>/stat is chosen by the
// process (an uploader may rename itself to hold ") Z 1 1"), so the fields
// after it must still parse to what the kernel wrote.
func FuzzParseProcStat(f *testing.F) {
	for _, comm := range []string{"clouduploader", "a) Z 1 1 1", "((", ")", "", "x y z"} {
		f.Add(comm, 4242, uint64(123456))
	}
	f.Fuzz(func(t *testing.T, comm string, pgrp int, start uint64) {
		if pgrp < 0 {
			pgrp = -pgrp
		}
		if len(comm) > 64 || strings.ContainsAny(comm, "\n\x00") {
			return
		}
		line := fmt.Sprintf("77 (%s) S 1 %d %d 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
			comm, pgrp, pgrp, start)
		p, err := parseProcStat(line)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		if p.State != 'S' || p.Pgrp != pgrp || p.Start != start {
			t.Fatalf("parse %q: %+v", line, p)
		}
	})
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"1", "42", "007", "-1", "0", "1e3", "9223372036854775808", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseID(s)
		if err == nil && (id <= 0 || strconv.FormatInt(id, 10) != s) {
			t.Fatalf("parseID(%q) = %d", s, id)
		}
	})
}

func TestProcStatSelf(t *testing.T) {
	p, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.Pgrp <= 0 || p.Start == 0 || p.dead() {
		t.Fatalf("own stat %+v", p)
	}
	if !processAlive(os.Getpid(), p.Start) || processAlive(os.Getpid(), p.Start+1) {
		t.Fatal("processAlive does not tell a recycled pid")
	}
}
