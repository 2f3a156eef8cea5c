// Command clouduploader is the per-job uploader process the daemon runs:
//
//	clouduploader <user> <target> <image> <target data file> <filename> <result file>
//	clouduploader validate <target>   (target data on stdin)
//	clouduploader targets
//	clouduploader protocol            (prints cloudupload.UploaderProtocol)
//
// It only wires the uploader package to the registry's targets and the
// process's environment; see package uploader for what it does.
package main

import (
	"context"
	"os"

	"github.com/cloudupload/cloudupload/targets/registry"
	"github.com/cloudupload/cloudupload/uploader"
)

func main() {
	os.Exit(uploader.Main(context.Background(), os.Args[1:], uploader.Options{
		Targets: registry.All(),
		Getenv:  os.Getenv,
		Stdin:   os.Stdin,
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Exit:    os.Exit,
	}))
}
