// Package targets defines what a publication destination is (Target), what it
// is given (Request, Image, Log), and helpers every target shares. One
// package per target lives below it (targets/ec2, targets/s3,
// targets/mirror); targets/registry lists them explicitly; targets/targettest
// is the conformance suite every target must pass.
//
// Targets run only inside the uploader process (bin/clouduploader), never in
// the daemon.
package targets

import (
	"context"
	"io"
)

// Job says which build a target publishes. Fields come from the daemon's
// environment (CLOUDUPLOAD_*) or, when the uploader is started by hand with
// only OBS's argv, are derived from it (see uploader).
type Job struct {
	ID         string // the job's name ("6"); "manual-<pid>" when started by hand
	User       string
	Project    string
	Repository string
	Arch       string // x86_64, aarch64, …
	Package    string
	Filename   string // the image's file name as built
}

// Image is the built file to publish, as received by the daemon.
type Image interface {
	// Path is the file as received (possibly compressed).
	Path() string
	// Format names the container: "raw", "raw.xz", "raw.gz", "raw.zst",
	// "vhdfixed.xz", "qcow2", or "" when the file is not a disk image
	// (publishing targets may still copy it as it is).
	Format() string
	// DiskSize is the size in bytes of the disk the image holds:
	// decompressed, without container overhead (VHD footer, qcow2 metadata).
	DiskSize(ctx context.Context) (int64, error)
	// OpenDisk returns the disk's bytes from offset 0, decompressed, as a
	// stream of exactly DiskSize bytes. Close releases every resource
	// (decompressor processes included) even when the stream was not read to
	// the end.
	OpenDisk(ctx context.Context) (io.ReadCloser, error)
}

// Request is one publication.
type Request struct {
	Job   Job
	Data  []byte // the target data (JSON) as the user sent it
	Image Image
	Log   *Log
	// Getenv looks up the uploader's environment (os.Getenv in production).
	Getenv func(string) string
}

// Target publishes images to one kind of destination.
type Target interface {
	// Name is the target's name in requests, e.g. "ec2".
	Name() string
	// Check validates target data for job without any network call and
	// without reading the image. A rejection is a *cloudupload.Error with
	// code EINVALID whose message names the offending field. The daemon calls
	// it (through `clouduploader validate`) before creating a job.
	Check(job Job, data []byte, getenv func(string) string) error
	// Upload publishes req.Image and returns the result the job's details
	// will show (an AMI id, an s3:// URL, a path). It logs each step and its
	// progress to req.Log. When ctx is cancelled (the job is killed) it
	// stops within seconds, removes everything it created, and returns an
	// error wrapping ctx.Err(). On any failure it removes what it created.
	Upload(ctx context.Context, req Request) (result string, err error)
}
