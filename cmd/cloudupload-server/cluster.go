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
	"time"

	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/backend/pgstore"
)

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
		if note, ok := backend.Migrated(stateDir); ok {
			return nil, fmt.Errorf("the state directory %s was %s: start with --database", stateDir, note)
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

// migrate moves the state directory's jobs into --database
// (backend.Migrate) as this node's.
func migrate(ctx context.Context, c *Config, log *slog.Logger) error {
	if c.Database == "" {
		return errors.New("migrate: --database is required")
	}
	stateDir, err := filepath.Abs(c.StateDir)
	if err != nil {
		return err
	}
	start := time.Now()
	store, err := openStore(ctx, c, stateDir, c.PrivKey, log)
	if err != nil {
		return err
	}
	defer store.Close()
	node := store.Node().Name
	r, err := backend.Migrate(ctx, stateDir, store,
		fmt.Sprintf("moved into %s (node %s) on %s", redactURL(c.Database), node, time.Now().UTC().Format(time.RFC3339)))
	if err != nil {
		return err
	}
	log.Info("state directory moved into the database", "state_dir", stateDir, "imported", r.Imported,
		"already_there", r.Skipped, "unfinished_held_by", node, "unfinished", r.Unfinished,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// redactURL drops the password of a database URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the database"
	}
	return u.Redacted()
}
