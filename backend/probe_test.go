package backend

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestProbeUploader runs `<uploader> protocol` on programs that speak the
// protocol and on programs with OBS's argv only.
func TestProbeUploader(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 500 * time.Millisecond
	for _, c := range []struct {
		name, body string
		ok         bool
		detail     string
	}{
		{"ours", `[ "$1" = protocol ] && echo "cloudupload-uploader 1" && exit 0; exit 2`, true, "printed cloudupload-uploader 1"},
		{"obs", `echo "usage: clouduploader <user> <target> <file> <targetdata> <filename> <resultfile>" >&2; exit 1`, false, "exited 1"},
		{"chatty", `echo "uploading protocol to nowhere"; exit 0`, false, `printed "uploading protocol to nowhere"`},
		{"hangs", `sleep 30 & sleep 30`, false, "did not answer within 500ms"},
	} {
		start := time.Now()
		ok, detail, err := ProbeUploader(context.Background(), script(c.name, c.body))
		if err != nil || ok != c.ok || detail != c.detail {
			t.Errorf("%s: %v %q %v, want %v %q", c.name, ok, detail, err, c.ok, c.detail)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: the probe took %s", c.name, took)
		}
	}
	if _, _, err := ProbeUploader(context.Background(), filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing uploader probed without error")
	}
}

// TestNoValidate: with an uploader that cannot validate, a job is created
// whatever its target data, and the uploader judges it when it runs.
func TestNoValidate(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	cfg.NoValidate = true
	m := open(t, cfg)
	j := create(t, m, "alice", fakeData{Mode: "fail", Result: "the data is wrong", Invalid: "validate would refuse this"})
	receive(t, m, j.ID, "img")
	wantState(t, wait(t, m, j.ID), "failed", "the data is wrong")
}
