package testutil

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StopStrays registers a cleanup, to run after every cleanup registered
// later (such as the one stopping a daemon), that SIGKILLs the process
// group of every process whose command line names a path under dir and
// waits until they are gone.
//
// The daemon's uploader shims outlive it by design (a restarted daemon
// re-adopts them), so a test that stops its daemon while a job still runs
// would otherwise leave a shim writing into a directory t.TempDir is
// removing.
func StopStrays(t testing.TB, dir string) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			pids := processesUnder(dir)
			if len(pids) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("processes under %s still running after SIGKILL: %v", dir, pids)
				return
			}
			for _, pid := range pids {
				syscall.Kill(-pid, syscall.SIGKILL) // a shim leads its group
				syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// processesUnder lists the live processes, other than this one, with an
// argument that is dir or a path under it.
func processesUnder(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	dir = strings.TrimSuffix(dir, "/")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 { // gone, or a zombie
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if arg == dir || strings.HasPrefix(arg, dir+"/") {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
