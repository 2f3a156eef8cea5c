// Command cloudupload-server is the cloud upload daemon: it serves the OBS
// cloud upload API (backend/httpapi) over the job manager (backend), which
// keeps the jobs under --state-dir and runs one uploader process per job.
// This file only wires: flags and config file → backend.Config → HTTP.
// SIGHUP re-reads the --clients file (a file that does not parse keeps the
// previous one, and the log says why).
//
// Usage:
//
//	cloudupload-server [--listen 127.0.0.1:5452] [--state-dir ./state]
//	    [--build-root DIR | --repserver URL] [--uploader PATH] [--shim PATH]
//	    [--max-uploads 4] [--max-uploads-per-user 2] [--kill-grace 30s]
//	    [--retention 0] [--mirror NAME=DIR]... [--config FILE]
//	    [--tls-cert FILE --tls-key FILE] [--token-file FILE]
//	    [--clients FILE] [--private-reads]
//	    [--pubkey FILE] [--privkey FILE] [--log-level info]
//	    [--max-connections 512] [--memory-limit 40]
//	    [--database URL --advertise-url URL [--node NAME] [--lease 30s] [--node-uploads N]]
//	cloudupload-server migrate --state-dir DIR --database URL --advertise-url URL [--node NAME] --pubkey FILE --privkey FILE
//
// With --database the jobs live in PostgreSQL, shared by the nodes of a
// cluster (backend/pgstore); migrate moves a state directory's jobs there,
// ids kept.
//
// At start it runs `<uploader> protocol` once to learn whether the uploader
// speaks this project's protocol (and can validate target data at create)
// or only has OBS's argv. --help prints the usage to stdout; a bad flag or
// setting is one line on stderr and exit status 2.
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/internal/cli"
)

func main() {
	backend.RunShimIfRequested()
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		os.Exit(runMigrate(os.Args[2:]))
	}
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		if errors.Is(err, errHelp) {
			os.Exit(0)
		}
		os.Exit(cli.UsageError(os.Stderr, "cloudupload-server", err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := m.Run(ctx); err != nil {
		m.Logger.Error("cannot start", "err", err)
		os.Exit(1)
	}
	lost := false
	select {
	case <-ctx.Done():
	case <-m.Lost():
		lost = true
	}
	stop()
	m.Logger.Info("shutting down (uploaders keep running and are taken over at the next start)")
	if err := m.Close(); err != nil {
		m.Logger.Error("shutdown", "err", err)
		os.Exit(1)
	}
	if lost {
		m.Logger.Error("this node lost its lease in the cluster: exiting; start it again to rejoin")
		os.Exit(1)
	}
	m.Logger.Info("stopped")
}

// runMigrate is `cloudupload-server migrate`: the server's flags (or its
// config file), then the state directory's jobs are imported into
// --database.
func runMigrate(args []string) int {
	m := NewMain()
	if err := m.ParseFlags(args); err != nil {
		if errors.Is(err, errHelp) {
			return 0
		}
		return cli.UsageError(os.Stderr, "cloudupload-server migrate", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := migrate(ctx, &m.Config, m.Logger); err != nil {
		m.Logger.Error("migration failed", "err", err)
		return 1
	}
	return 0
}
