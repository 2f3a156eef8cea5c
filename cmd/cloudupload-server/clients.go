package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudupload/cloudupload/internal/credfile"
)

// pushClients is the --clients file, re-read on SIGHUP until Close.
type pushClients struct {
	*credfile.Reloader
	stop func()
}

// loadClients reads path (an error is fatal at start) and re-reads it on
// every SIGHUP, logging the outcome.
func loadClients(path string, log *slog.Logger) (*pushClients, error) {
	r, err := credfile.NewReloader(path)
	if err != nil {
		return nil, fmt.Errorf("clients: %w", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Watch(ctx, sig, log)
	}()
	return &pushClients{Reloader: r, stop: func() {
		signal.Stop(sig)
		cancel()
		<-done
	}}, nil
}

// Close stops reloading on SIGHUP.
func (c *pushClients) Close() { c.stop() }
