package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procInfo is what /proc/<pid>/stat tells about a process.
type procInfo struct {
	State byte   // R, S, D, Z, …
	Pgrp  int    // process group
	Start uint64 // start time in clock ticks since boot (field 22)
}

// procStat reads /proc/<pid>/stat.
func procStat(pid int) (procInfo, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, err
	}
	return parseProcStat(string(b))
}

// parseProcStat parses the content of /proc/<pid>/stat. The command name
// (field 2) is in parentheses and may itself hold spaces and parentheses, so
// fields are counted from the last ')'.
func parseProcStat(s string) (procInfo, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, errors.New("parse /proc stat: no command name")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return procInfo{}, errors.New("parse /proc stat: too few fields")
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return procInfo{}, fmt.Errorf("parse /proc stat: process group: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procInfo{}, fmt.Errorf("parse /proc stat: start time: %w", err)
	}
	return procInfo{State: f[0][0], Pgrp: pgrp, Start: start}, nil
}

// dead reports whether a process in this state has ended (zombie or dead).
func (p procInfo) dead() bool { return p.State == 'Z' || p.State == 'X' || p.State == 'x' }

// processAlive reports whether pid is running and, when start is not 0,
// is the process that started at that time (not a recycled pid). A zombie
// counts as gone.
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	p, err := procStat(pid)
	if err != nil || p.dead() {
		return false
	}
	return start == 0 || p.Start == start
}

// groupAlive reports whether any process of group pgid is still running
// (zombies, which no longer run, do not count: an orphan's zombie stays
// until its new parent reaps it).
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := procStat(pid); err == nil && p.Pgrp == pgid && !p.dead() {
			return true
		}
	}
	return false
}

// signalGroup sends sig to process group pgid; a group that is gone is not
// an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return fmt.Errorf("signal process group %d: refused", pgid)
	}
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", pgid, err)
	}
	return nil
}

// killGroup SIGKILLs process group pgid and waits until none of its
// processes runs, or ctx ends.
func killGroup(ctx context.Context, pgid int) error {
	wait := 2 * time.Millisecond
	for {
		if err := signalGroup(pgid, syscall.SIGKILL); err != nil {
			return err
		}
		if !groupAlive(pgid) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// stopGroup stops process group pgid as a kill does: SIGTERM, up to grace
// for it to end, then SIGKILL until none of its processes runs, or ctx ends.
func stopGroup(ctx context.Context, pgid int, grace time.Duration) error {
	if err := signalGroup(pgid, syscall.SIGTERM); err != nil {
		return err
	}
	deadline := time.Now().Add(grace)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return killGroup(ctx, pgid)
}

// processesIn returns the processes whose working directory is dir.
func processesIn(dir string) []int {
	var pids []int
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}
