// Package imagesource implements backend.Fetcher: where the daemon finds the
// image of a job created with the public POST /cloudupload route.
//
// BuildRoot reads DIR/<project>/<repository>/<arch>/<package>/<filename>
// from a local build tree; RepServer downloads
// URL/build/<project>/<repository>/<arch>/<package>/<filename> from an OBS
// repository server, streaming to disk, resuming after dropped connections.
// Both report a missing image as ENOTFOUND "image not found: P/R/A/K/F"
// and other failures as *cloudupload.Error with a person-readable message.
package imagesource

import (
	"fmt"

	"github.com/cloudupload/cloudupload"
)

// imageName is the image's name for people: P/R/A/K/F.
func imageName(j cloudupload.Job) string {
	return fmt.Sprintf("%s/%s/%s/%s/%s", j.Project, j.Repository, j.Arch, j.Package, j.Filename)
}

// notFound is the error of a missing image.
func notFound(j cloudupload.Job) error {
	return cloudupload.Errorf(cloudupload.ENOTFOUND, "image not found: %s", imageName(j))
}

// checkNames re-checks the path segments of the image (CheckJob already did
// when the job was created; this package does not rely on it).
func checkNames(j cloudupload.Job) ([]string, error) {
	segs := []string{j.Project, j.Repository, j.Arch, j.Package, j.Filename}
	for i, f := range []string{"project", "repository", "arch", "package", "filename"} {
		if err := cloudupload.CheckName(f, segs[i]); err != nil {
			return nil, err
		}
	}
	return segs, nil
}
