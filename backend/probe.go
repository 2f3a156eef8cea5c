package backend

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload"
)

// probeTimeout bounds `<uploader> protocol` (a variable for the tests).
var probeTimeout = 5 * time.Second

// ProbeUploader finds out whether the uploader at path speaks this
// project's protocol: it runs `<path> protocol` once, with no input and
// at most 5 seconds, and compares the first line it prints with
// cloudupload.UploaderProtocol. It returns whether it does and, for the
// log, what the program did ("printed …", "exited 1", "did not answer
// within 5s"). An error means the program could not be run at all.
func ProbeUploader(ctx context.Context, path string) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "protocol")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out boundedBuffer
	out.max = 4 << 10
	cmd.Stdout = &out
	err := cmd.Run()
	first, _, _ := strings.Cut(out.String(), "\n")
	first = strings.TrimSpace(first)
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return false, fmt.Sprintf("did not answer within %s", probeTimeout), nil
	case errors.As(err, &ee):
		return false, fmt.Sprintf("exited %d", ee.ExitCode()), nil
	case err != nil:
		return false, "", fmt.Errorf("run %s protocol: %w", path, err)
	case first == cloudupload.UploaderProtocol:
		return true, "printed " + first, nil
	}
	return false, fmt.Sprintf("printed %q", truncate(first, 80)), nil
}
