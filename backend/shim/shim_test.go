package shim

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary run as the shim, as the daemon's binary
// does without cloudupload-shim.
func TestMain(m *testing.M) {
	RunIfRequested()
	os.Exit(m.Run())
}

// TestRecordsHowTheUploaderEnded: the exit file says how the uploader
// ended, the log says it for people, and the shim exits 0 once recorded;
// an exit file that cannot be written leaves the outcome in the shim's
// exit status.
func TestRecordsHowTheUploaderEnded(t *testing.T) {
	for _, c := range []struct{ script, exit, log string }{
		{"echo hello", "0", "uploader succeeded after"},
		{"exit 3", "exit status 3", "uploader exited with status 3 after"},
		{"kill -KILL $$", "signal: killed", "uploader ended (signal: killed) after"},
	} {
		dir := t.TempDir()
		exitFile := filepath.Join(dir, "exit")
		out, err := exec.Command(os.Args[0], Arg, exitFile, "/bin/sh", "-c", c.script).CombinedOutput()
		status, _ := os.ReadFile(exitFile)
		if err != nil || string(status) != c.exit+"\n" || !strings.Contains(string(out), c.log) {
			t.Errorf("%q: shim %v, exit file %q, log:\n%s", c.script, err, status, out)
		}
	}
	for script, want := range map[string]int{"true": UnrecordedSuccess, "false": UnrecordedFailure} {
		err := exec.Command(os.Args[0], Arg, "/nonexistent/exit", "/bin/sh", "-c", script).Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != want {
			t.Errorf("%s with an exit file that cannot be written: %v, want exit status %d", script, err, want)
		}
	}
	out, _ := exec.Command(os.Args[0], Arg, filepath.Join(t.TempDir(), "exit"), "/nonexistent/uploader").CombinedOutput()
	if !strings.Contains(string(out), "could not start the uploader") || strings.Contains(string(out), "/nonexistent") {
		t.Errorf("an uploader that cannot start: log %q (must say so, without the server's paths)", out)
	}
}

// TestShimStopsWhenLeaseRunsOut: a shim of a node of a cluster leaves its
// uploader alone while the node's lease file is touched, and stops it
// (SIGTERM) once the file is older than the lease, recording how it ended;
// the uploader never sees the shim's own settings.
func TestShimStopsWhenLeaseRunsOut(t *testing.T) {
	dir := t.TempDir()
	lease, exitFile := filepath.Join(dir, "lease"), filepath.Join(dir, "exit")
	os.WriteFile(lease, nil, 0o644)
	script := `env | grep -c CLOUDUPLOAD_SHIM_ ; trap 'echo stopping; exit 143' TERM; while true; do sleep 0.05; done`
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], Arg, exitFile, "/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), EnvLeaseFile+"="+lease, EnvLease+"=2s", EnvKillGrace+"=5s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Renewed for 4 s (twice the lease): the uploader runs on.
	for range 40 {
		now := time.Now()
		os.Chtimes(lease, now, now)
		select {
		case <-done:
			t.Fatalf("the shim ended while its lease was renewed:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// No more renewals: stopped within the lease and the watch's period.
	stopped := time.Now()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the shim did not stop its uploader 10 s after its lease stopped being renewed:\n%s", out.String())
	}
	took := time.Since(stopped)
	status, _ := os.ReadFile(exitFile)
	log := out.String()
	if strings.TrimSpace(string(status)) != "stopped: this node lost its lease in the cluster (exit status 143)" || !strings.Contains(log, "stopping") ||
		!strings.Contains(log, "lease in the cluster was not renewed for 2s") {
		t.Errorf("exit %q, log:\n%s", status, log)
	}
	if !slices.Contains(strings.Split(log, "\n"), "0") { // the count of CLOUDUPLOAD_SHIM_ variables
		t.Errorf("the uploader saw the shim's settings:\n%s", log)
	}
	t.Logf("stopped %s after the last renewal", took.Round(10*time.Millisecond))
}
