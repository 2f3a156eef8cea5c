package targettest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	cloudupload "github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

// dirTarget publishes into a directory: a staging file, then a rename. Its
// flaws are switched on to check that the suite catches them.
type dirTarget struct {
	dir        string
	disk       bool // publish the disk (OpenDisk), else the file (Path)
	leaky      bool // keeps the staging file on failure
	swallow    bool // hides the cause of a failure (%v, not %w)
	noClose    bool // never closes the disk stream
	readsEarly bool // reads the image before checking the data
	silent     bool // reports no progress
}

type dirData struct {
	Name string `json:"name"`
}

func (d *dirTarget) Name() string { return "dir" }

func (d *dirTarget) Check(job targets.Job, data []byte, getenv func(string) string) error {
	var v dirData
	if err := json.Unmarshal(data, &v); err != nil {
		return cloudupload.Errorf(cloudupload.EINVALID, "target data is not a JSON object: %v", err)
	}
	if err := cloudupload.CheckName("name", v.Name); err != nil {
		return err
	}
	return nil
}

func (d *dirTarget) Upload(ctx context.Context, req targets.Request) (res string, err error) {
	if d.swallow {
		defer func() {
			if err != nil {
				err = errors.New(err.Error())
			}
		}()
	}
	if d.readsEarly {
		req.Image.Path()
	}
	if err := d.Check(req.Job, req.Data, req.Getenv); err != nil {
		return "", err
	}
	var v dirData
	json.Unmarshal(req.Data, &v)
	defer req.Log.Step("copy %s", req.Job.Filename)()
	var src io.Reader
	var total int64
	if d.disk {
		if total, err = req.Image.DiskSize(ctx); err != nil {
			return "", err
		}
		rc, err := req.Image.OpenDisk(ctx)
		if err != nil {
			return "", err
		}
		if !d.noClose {
			defer rc.Close()
		}
		src = rc
	} else {
		f, err := os.Open(req.Image.Path())
		if err != nil {
			return "", fmt.Errorf("open image: %w", err)
		}
		defer f.Close()
		src = f
		if fi, err := f.Stat(); err == nil {
			total = fi.Size()
		}
	}
	var progress *targets.Progress
	if d.silent {
		progress = req.Log.Pass("copy", total)
	} else {
		progress = req.Log.Progress("copy", total)
	}
	tmp, err := os.CreateTemp(d.dir, ".staging-*")
	if err != nil {
		return "", err
	}
	defer func() {
		tmp.Close()
		if err != nil && !d.leaky {
			os.Remove(tmp.Name())
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, rerr := src.Read(buf)
		if _, err := tmp.Write(buf[:n]); err != nil {
			return "", err
		}
		progress.Add(int64(n))
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", fmt.Errorf("read image: %w", rerr)
		}
	}
	progress.Done()
	final := filepath.Join(d.dir, v.Name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	return final, nil
}

func harness(t *testing.T, tg *dirTarget) Harness {
	return Harness{
		New: func(t *testing.T) targets.Target { return tg },
		ValidData: func(t *testing.T) []byte {
			return fmt.Appendf(nil, `{"name":%q}`, strings.ReplaceAll(t.Name(), "/", "_"))
		},
		Invalid: []InvalidCase{
			{Data: []byte(`{}`), Field: "name"},
			{Data: []byte(`{"name":"../x"}`), Field: "name"},
			{Name: "not-json", Data: []byte(`[`), Field: "JSON"},
		},
		Verify: func(t *testing.T, result string, want []byte) {
			got, err := os.ReadFile(result)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("published %d bytes, want %d", len(got), len(want))
			}
		},
		Leftovers: func(t *testing.T) []string {
			m, _ := filepath.Glob(filepath.Join(tg.dir, ".staging-*"))
			return m
		},
		WantsDisk: tg.disk,
		Secrets:   []string{"AKIDSECRET"},
	}
}

func TestGoodTargets(t *testing.T) {
	for _, disk := range []bool{true, false} {
		t.Run(fmt.Sprintf("disk=%v", disk), func(t *testing.T) {
			Run(t, harness(t, &dirTarget{dir: t.TempDir(), disk: disk}))
		})
	}
}

// TestBadTarget runs the suite on a flawed target when the parent test
// (TestSuiteCatchesFlaws) asks for it; it fails on purpose.
func TestBadTarget(t *testing.T) {
	flaw := os.Getenv("TARGETTEST_FLAW")
	if flaw == "" {
		t.Skip("run by TestSuiteCatchesFlaws")
	}
	tg := &dirTarget{dir: t.TempDir(), disk: true}
	switch flaw {
	case "leaky":
		tg.leaky = true
	case "swallow":
		tg.swallow = true
	case "noclose":
		tg.noClose = true
	case "readsearly":
		tg.readsEarly = true
	case "leaky-file":
		tg.leaky, tg.disk = true, false
	case "silent":
		tg.silent = true
	}
	Run(t, harness(t, tg))
}

func TestSuiteCatchesFlaws(t *testing.T) {
	for flaw, want := range map[string]string{
		"leaky":      "left at the destination",
		"leaky-file": "left at the destination",
		"swallow":    "want one wrapping context.Canceled",
		"noclose":    "disk stream(s) not closed",
		"readsearly": "read the image before rejecting invalid data",
		"silent":     "Upload reported no progress",
	} {
		t.Run(flaw, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBadTarget$", "-test.v")
			cmd.Env = append(os.Environ(), "TARGETTEST_FLAW="+flaw)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed a target that is %s (err %v):\n%s", flaw, err, out)
			}
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("output does not say %q:\n%s", want, out)
			}
		})
	}
}
