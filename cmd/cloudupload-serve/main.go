// Command cloudupload-serve is the download server for mirror trees: it
// serves the trees the mirror target publishes into, to people and
// scripts, and enforces each directory's BUILD-INFO.txt (package
// download). It faces the internet; the upload daemon does not. This file
// only wires: flags → download.Config → HTTP.
//
// Usage:
//
//	cloudupload-serve --mirror NAME=DIR... [--listen 127.0.0.1:8080]
//	    [--tls-cert FILE --tls-key FILE] [--users FILE]
//	    [--trust-proxy ADDR [--user-header H] [--groups-header H]]
//	    [--user-data-log FILE] [--access-log FILE|-] [--cookie-key FILE]
//	    [--log-level info]
//
// SIGHUP re-reads the users file (the previous one stays in use when the
// new one does not parse) and reopens the access and user-data logs (for
// logrotate); SIGTERM and SIGINT stop the server after the
// running requests, waiting at most 10 seconds.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		if errors.Is(err, errHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "cloudupload-serve:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := m.Run(ctx, hup); err != nil {
		m.Logger.Error("cannot start", "err", err)
		os.Exit(1)
	}
	<-ctx.Done()
	stop()
	m.Logger.Info("shutting down")
	if err := m.Close(); err != nil {
		m.Logger.Error("shutdown", "err", err)
		os.Exit(1)
	}
	m.Logger.Info("stopped")
}
