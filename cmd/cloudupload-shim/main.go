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
	shim.RunIfRequested()
	fmt.Fprintln(os.Stderr, "cloudupload-shim: started by cloudupload-server for each job; not meant to be run by hand")
	os.Exit(2)
}
