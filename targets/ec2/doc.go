// Package ec2 is the ec2 target: it turns a built disk image into a
// registered AMI in the user's own AWS account, fast.
//
// # Credentials
//
// The uploader's own identity comes from the SDK's default chain; it then
// assumes the user's role (arn, external_id) with the session name
// "cloudupload-<job>", refreshed automatically (see targets/awsauth).
//
// # Methods
//
// method "ebs" (the default) writes the disk straight into a new EBS
// snapshot with the EBS direct APIs: StartSnapshot, then parallel
// PutSnapshotBlock of every 512 KiB block that is not all zeros (a sparse
// disk costs only its data), each with its SHA-256, a per-request timeout,
// the SDK's retries (throttling and 5xx, without a client-side retry
// quota) and the target's own retries on top, then CompleteSnapshot with
// the number of blocks sent. Memory is bounded by (workers+2) blocks
// whatever the image size. No S3 bucket and no vmimport role are needed.
//
// method "import" uploads the raw disk to s3_bucket (multipart, bounded
// memory), runs ImportSnapshot and waits for it, treating deleting/deleted
// (how a failed import ends) as failure. The staging object and any
// unfinished multipart upload are always removed.
//
// Both then register the AMI (hvm, /dev/xvda on gp3, deleted on
// termination, the job's architecture, ENA, optional SR-IOV, boot mode,
// IMDSv2 and NitroTPM), tag image and snapshot (the user's tags, Name,
// cloudupload:job, cloudupload:token, cloudupload:image), wait until it is
// available, grant launch and create-volume permission to share_accounts,
// and copy it to copy_regions (tagged and shared there too).
//
// # Result
//
// The AMI id; with copy_regions, "region:ami-…" pairs separated by commas,
// the home region first.
//
// # Existing AMI names
//
// An AMI name is unique per account and region, so the target looks the
// name up in every region before uploading anything. An image of that name
// carrying this job's cloudupload:token tag (same job id, user, project,
// repository, arch, package, file name, region, ami_name and image file) is
// this job's own earlier work: the target reuses it and succeeds
// idempotently, completing what is missing (sharing, copies). Any other
// image of that name fails the job with a conflict naming that image.
//
// # Failure and kill
//
// On any failure, and when the context is cancelled, the target stops
// within seconds and removes, with a fresh two-minute context, everything
// it created: the unfinished snapshot, the registered AMI and its
// snapshot, partial copies and their snapshots, an import task, the S3
// object and multipart upload. Reused images are left alone.
package ec2
