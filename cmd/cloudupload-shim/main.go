// Command cloudupload-shim supervises one uploader for cloudupload-server,
// which starts it for every job (see package backend/shim). It is not meant
// to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/cloudupload/cloudupload/backend/shim"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != shim.Arg {
		fmt.Fprintln(os.Stderr, "cloudupload-shim: started by cloudupload-server for each job; not meant to be run by hand")
		os.Exit(2)
	}
	os.Exit(shim.Run(os.Args[2:]))
}
