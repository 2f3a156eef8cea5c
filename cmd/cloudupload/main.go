// Command cloudupload is the command-line client of cloudupload-server for
// people and CI scripts: submit, push, list, show, log, kill and wait. This
// file only wires the process to package cli, where the commands, their
// flags, the configuration and the exit statuses are documented.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudupload/cloudupload/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.NewApp().Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
