package backend

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/atomicfile"
)

// Names of the files and directories under Config.StateDir (see doc.go).
const (
	fileNextID = "next-id"
	fileLock   = "lock"
	dirJobs    = "jobs"
	dirDone    = "done"
	fileJob    = "job.json"
	fileData   = "data"
	fileImage  = "image"
	fileLog    = "log"
	fileResult = "result"
	fileExit   = "exit"
	dirWork    = "work"

	// tmpMarker is part of the name of every temporary file of an atomic
	// write (".<name>.tmp-<random>"); leftovers are removed at Open.
	tmpMarker = atomicfile.TempMarker
)

// writeFileAtomic and syncDir: see package atomicfile.
var (
	writeFileAtomic = atomicfile.WriteFile
	syncDir         = atomicfile.SyncDir
)

// removeTemps removes temporary files left in dir by interrupted atomic writes.
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if atomicfile.IsTemp(e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// encodeJob is the content of job.json: the whole job, indented, so an
// operator can read it with cat.
func encodeJob(j cloudupload.Job) ([]byte, error) {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// readJob loads the job.json of the job directory dir, whose name is the id.
func readJob(dir string) (cloudupload.Job, error) {
	var j cloudupload.Job
	b, err := os.ReadFile(filepath.Join(dir, fileJob))
	if err != nil {
		return j, err
	}
	if err := decodeJob(b, &j); err != nil {
		return j, fmt.Errorf("%s: %w", filepath.Join(dir, fileJob), err)
	}
	id, err := parseID(filepath.Base(dir))
	if err != nil || id != j.ID {
		return j, fmt.Errorf("%s: job id %d does not match its directory", filepath.Join(dir, fileJob), j.ID)
	}
	return j, nil
}

// decodeJob parses a job document (job.json, a journal record).
func decodeJob(b []byte, j *cloudupload.Job) error {
	if err := json.Unmarshal(b, j); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if j.ID <= 0 {
		return fmt.Errorf("job id %d", j.ID)
	}
	if !j.State.Valid() {
		return fmt.Errorf("unknown state %q", j.State)
	}
	return nil
}

// parseID parses a job directory name: a positive decimal id without
// leading zeros.
func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != s {
		return 0, fmt.Errorf("not a job id: %q", s)
	}
	return id, nil
}

// readNextID reads the next-id file; a missing file reads as 1.
func readNextID(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 1, nil
	} else if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: not a job id: %q", path, strings.TrimSpace(string(b)))
	}
	return n, nil
}
