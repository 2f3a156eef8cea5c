// Package ec2 is the ec2 target: it turns a built disk image into a
// registered AMI in the user's own AWS account, fast.
//
// # Target data
//
// A JSON object; unknown fields are an error naming them.
//
//	arn              IAM role to assume in the user's account (required)
//	external_id      its external id (optional, as OBS sent it)
//	region           home region, such as eu-central-1 (required)
//	ami_name         3 to 100 of letters, digits, '.', '_', '-', not starting
//	                 with '.' or '_' (what both OBS and AWS allow; required)
//	vpc_subnet_id    accepted for compatibility with OBS (subnet-…), unused
//	user_id          accepted for compatibility with OBS, ignored
//	description      AMI description (default: file name and job)
//	boot_mode        legacy-bios | uefi | uefi-preferred (default: AWS's)
//	ena              true (default) | false
//	sriov            SriovNetSupport "simple" (default false)
//	tpm              NitroTPM v2.0, needs a uefi boot mode (default false)
//	imds_v2          require IMDSv2 (default false)
//	tags             {"key": "value"} on the image and its snapshot
//	share_accounts   12-digit account ids given launch permission
//	copy_regions     regions to copy the AMI to
//	root_volume_size GiB, at least the disk (default: the disk rounded up)
//	method           ebs (default) | import
//	s3_bucket        staging bucket in region, for method import
//
// The architecture is the job's (x86_64, aarch64); when the uploader is run
// by hand without it, it is taken from the file name, default x86_64.
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
// A raw image that is a sparse file is read only where it holds data
// (SEEK_DATA). The uploader's environment may set CLOUDUPLOAD_EC2_WORKERS
// (1–256, default 32) for the number of parallel block writes.
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
