package backend

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/backend/shim"
)

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
	cmd := exec.Command(os.Args[0], shim.Arg, exitFile, "/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), shim.EnvLeaseFile+"="+lease, shim.EnvLease+"=2s", shim.EnvKillGrace+"=5s")
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
