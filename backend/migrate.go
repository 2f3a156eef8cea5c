package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// fileMigrated, in a state directory moved into a shared store, says so:
// the directory alone no longer holds the jobs.
const fileMigrated = "MIGRATED"

// MigrateResult counts what Migrate did.
type MigrateResult struct {
	Imported   int // jobs written to the shared store
	Skipped    int // jobs already there (an earlier run)
	Unfinished int // of the imported, held by this node
}

// Migrate imports the jobs of the state directory stateDir into store, ids
// kept: finished jobs with the end of their logs, unfinished ones held by
// store's node, so that a Manager on the same state directory with that
// store goes on with them (live uploaders are re-adopted). Jobs already in
// the store are left as they are, so an interrupted migration can be run
// again. It takes the state directory's lock (no server may run on it) and
// marks the directory, with note, so that Migrated tells.
func Migrate(ctx context.Context, stateDir string, store SharedStore, note string) (MigrateResult, error) {
	var r MigrateResult
	lock, err := lockStateDir(stateDir)
	if err != nil {
		return r, err
	}
	defer lock.Close()
	disk, err := OpenDiskStore(stateDir)
	if err != nil {
		return r, err
	}
	defer disk.Close()
	jobs, err := disk.Load(ctx)
	if err != nil {
		return r, fmt.Errorf("read the state directory: %w", err)
	}
	for _, j := range jobs {
		if _, err := store.Get(ctx, j.ID); err == nil {
			r.Skipped++
			continue
		}
		var data []byte
		if !j.State.Final() {
			if data, err = disk.Data(ctx, j.ID); err != nil {
				return r, fmt.Errorf("job %d: %w", j.ID, err)
			}
		}
		log, err := jobLogTail(stateDir, j.ID)
		if err != nil {
			return r, fmt.Errorf("job %d: %w", j.ID, err)
		}
		if err := store.Import(ctx, j, data, log); err != nil {
			return r, fmt.Errorf("job %d: %w", j.ID, err)
		}
		r.Imported++
		if !j.State.Final() {
			r.Unfinished++
		}
	}
	return r, os.WriteFile(filepath.Join(stateDir, fileMigrated), []byte(strings.TrimSpace(note)+"\n"), 0o644)
}

// Migrated returns the note of a state directory that Migrate moved into a
// shared store, and whether it was.
func Migrated(stateDir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(stateDir, fileMigrated))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// jobLogTail reads the end of job id's log (what a shared store keeps) from
// the state directory; nil when it has none.
func jobLogTail(stateDir string, id int64) ([]byte, error) {
	name := strconv.FormatInt(id, 10)
	for _, sub := range []string{dirDone, dirJobs} {
		b, err := readTail(filepath.Join(stateDir, sub, name, fileLog), maxSavedLog)
		if !errors.Is(err, os.ErrNotExist) {
			return b, err
		}
	}
	return nil, nil
}
