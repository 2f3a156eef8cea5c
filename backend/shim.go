package backend

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend/shim"
)

// RunShimIfRequested runs the uploader shim and exits when the process was
// started as one (argv[1] is shim.Arg); otherwise it returns at once. The
// daemon's main and every TestMain of a package that runs a Manager must
// call it first thing: without Config.Shim the daemon re-executes its own
// binary as the shim.
func RunShimIfRequested() { shim.RunIfRequested() }

// startShim starts the shim for job j: in its own process group, in the
// job's fresh work directory, stdin /dev/null, stdout and stderr appended to
// the job log, with the OBS argv
// `<user> <target> <image> <data file> <filename> <result file>` for the
// uploader. The target data file's path is in argv, its content never is.
func (m *Manager) startShim(j cloudupload.Job) (*exec.Cmd, error) {
	dir := m.jobDir(j.ID)
	work := filepath.Join(dir, dirWork)
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	if err := os.Mkdir(work, 0o750); err != nil {
		return nil, err
	}
	for _, name := range []string{fileExit, fileResult, fileProgress} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	log, err := os.OpenFile(filepath.Join(dir, fileLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the shim has its own copy
	cmd := &exec.Cmd{
		Path: m.shimPath(),
		Args: []string{
			"cloudupload-shim", shim.Arg, filepath.Join(dir, fileExit),
			m.cfg.Uploader, j.User, j.Target, filepath.Join(dir, fileImage),
			filepath.Join(dir, fileData), j.Filename, filepath.Join(dir, fileResult),
		},
		Dir:         work,
		Env:         append(m.env(j), append(m.shimEnv(), "CLOUDUPLOAD_CLIENT="+j.Client)...),
		Stdout:      log,
		Stderr:      log,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// shimPath is the program started as a job's shim: Config.Shim, else this
// program itself (see RunShimIfRequested).
func (m *Manager) shimPath() string {
	if m.cfg.Shim != "" {
		return m.cfg.Shim
	}
	return "/proc/self/exe"
}

// env is the environment of uploader processes for job j (j.ID 0: no job
// yet, as when validating).
func (m *Manager) env(j cloudupload.Job) []string {
	env := append(os.Environ(), m.cfg.UploaderEnv...)
	for k, v := range jobEnv(j) {
		env = append(env, k+"="+v)
	}
	if j.ID != 0 {
		env = append(env, envProgressFile+"="+filepath.Join(m.jobDir(j.ID), fileProgress))
	}
	return env
}

// jobEnv is the part of an uploader's environment that describes job j:
// CLOUDUPLOAD_JOB (unless j has no id yet), _PROJECT, _REPOSITORY, _ARCH,
// _PACKAGE, _USER and _FILENAME.
func jobEnv(j cloudupload.Job) map[string]string {
	env := map[string]string{
		"CLOUDUPLOAD_PROJECT":    j.Project,
		"CLOUDUPLOAD_REPOSITORY": j.Repository,
		"CLOUDUPLOAD_ARCH":       j.Arch,
		"CLOUDUPLOAD_PACKAGE":    j.Package,
		"CLOUDUPLOAD_USER":       j.User,
		"CLOUDUPLOAD_FILENAME":   j.Filename,
	}
	if j.ID != 0 {
		env["CLOUDUPLOAD_JOB"] = strconv.FormatInt(j.ID, 10)
	}
	return env
}
