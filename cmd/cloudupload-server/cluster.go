package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/backend/pgstore"
)

// fileMigrated, in a state directory moved into a database, says so: the
// directory alone no longer holds the jobs.
const fileMigrated = "MIGRATED"

// checkCluster validates the settings of a node of a cluster.
func (c *Config) checkCluster() error {
	if c.Database == "" {
		if c.AdvertiseURL != "" || c.NodeUploads != 0 {
			return errors.New("--advertise-url and --node-uploads need --database")
		}
		return nil
	}
	u, err := url.Parse(c.Database)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return errors.New("--database: want a postgres:// URL")
	}
	a, err := url.Parse(c.AdvertiseURL)
	switch {
	case c.AdvertiseURL == "":
		return errors.New("--database needs --advertise-url: the URL other nodes reach this one by")
	case err != nil || (a.Scheme != "http" && a.Scheme != "https") || a.Host == "":
		return fmt.Errorf("--advertise-url %q: want http://HOST:PORT or https://HOST:PORT", c.AdvertiseURL)
	case c.PubKey == "" || c.PrivKey == "":
		return errors.New("--database needs --pubkey and --privkey: every node of a cluster must have the same key pair")
	case c.Lease < 3*time.Second:
		return errors.New("--lease must be at least 3s")
	case c.NodeUploads < 0:
		return errors.New("--node-uploads must not be negative")
	}
	return nil
}

// nodeName is --node, or the host name.
func (c *Config) nodeName() (string, error) {
	if c.Node != "" {
		return c.Node, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("--node not given and no host name: %w", err)
	}
	return h, nil
}

// dataKey derives the key sealing target data in the database from the
// server's private key, which every node of a cluster shares (OBS's
// frontend encrypts secrets with the one public key).
func dataKey(privPath string) ([32]byte, error) {
	b, err := os.ReadFile(privPath)
	if err != nil {
		return [32]byte{}, fmt.Errorf("private key: %w", err)
	}
	return sha256.Sum256(append([]byte("cloudupload target data key v1\x00"), b...)), nil
}

// openStore opens the shared store of --database, or returns nil without
// one. A state directory migrated into a database refuses to start
// without it.
func openStore(ctx context.Context, c *Config, stateDir, priv string, log *slog.Logger) (backend.SharedStore, error) {
	if c.Database == "" {
		if b, err := os.ReadFile(filepath.Join(stateDir, fileMigrated)); err == nil {
			return nil, fmt.Errorf("the state directory %s was moved into a database (%s): start with --database", stateDir, firstLine(string(b)))
		}
		return nil, nil
	}
	name, err := c.nodeName()
	if err != nil {
		return nil, err
	}
	key, err := dataKey(priv)
	if err != nil {
		return nil, err
	}
	return pgstore.Open(ctx, pgstore.Config{
		URL: c.Database, Node: backend.NodeInfo{Name: name, URL: c.AdvertiseURL},
		Lease: c.Lease, DataKey: key, Logger: log,
	})
}

func firstLine(s string) string {
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}

// migrate imports the jobs of the state directory into the database, ids
// kept: finished jobs with their logs, unfinished ones held by this node
// (--node), so that starting it with --database on the same state directory
// goes on with them (live uploaders are re-adopted). Jobs already in the
// database are left as they are, so an interrupted migration can be run
// again. The server must not be running on the directory.
func migrate(ctx context.Context, c *Config, log *slog.Logger) error {
	if c.Database == "" {
		return errors.New("migrate: --database is required")
	}
	stateDir, err := filepath.Abs(c.StateDir)
	if err != nil {
		return err
	}
	unlock, err := lockStateDir(stateDir)
	if err != nil {
		return err
	}
	defer unlock()
	start := time.Now()
	disk, err := backend.OpenDiskStore(stateDir)
	if err != nil {
		return err
	}
	jobs, err := disk.Load(ctx)
	if err != nil {
		return fmt.Errorf("read the state directory: %w", err)
	}
	store, err := openStore(ctx, c, stateDir, c.PrivKey, log)
	if err != nil {
		return err
	}
	defer store.Close()
	imported, skipped, unfinished := 0, 0, 0
	for _, j := range jobs {
		if _, err := store.Get(ctx, j.ID); err == nil {
			skipped++
			continue
		}
		var data []byte
		if !j.State.Final() {
			unfinished++
			if data, err = disk.Data(ctx, j.ID); err != nil {
				return fmt.Errorf("job %d: %w", j.ID, err)
			}
		}
		logText, err := readJobLog(stateDir, j.ID)
		if err != nil {
			return fmt.Errorf("job %d: %w", j.ID, err)
		}
		if err := store.Import(ctx, j, data, logText); err != nil {
			return fmt.Errorf("job %d: %w", j.ID, err)
		}
		imported++
	}
	note := fmt.Sprintf("moved into %s (node %s) on %s\n", redactURL(c.Database), store.Node().Name, time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(stateDir, fileMigrated), []byte(note), 0o644); err != nil {
		return err
	}
	log.Info("state directory moved into the database", "state_dir", stateDir, "imported", imported,
		"already_there", skipped, "unfinished_held_by", store.Node().Name, "unfinished", unfinished,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// readJobLog reads the end of a job's log from the state directory ("" when
// it has none).
func readJobLog(stateDir string, id int64) ([]byte, error) {
	for _, sub := range []string{"done", "jobs"} {
		p := filepath.Join(stateDir, sub, fmt.Sprint(id), "log")
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		const keep = 4 << 20
		off := max(0, fi.Size()-keep)
		b := make([]byte, fi.Size()-off)
		_, err = f.ReadAt(b, off)
		return b, err
	}
	return nil, nil
}

// redactURL drops the password of a database URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the database"
	}
	return u.Redacted()
}

// lockStateDir takes the state directory's lock, as a running server holds
// it.
func lockStateDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is in use by a running server: stop it first", dir)
	}
	return func() { f.Close() }, nil
}
