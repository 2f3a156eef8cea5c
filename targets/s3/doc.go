// Package s3 is the s3 target: it publishes a build's file into the user's
// own S3 bucket, under the user's IAM role, and answers s3://bucket/key.
//
// # Target data
//
//	{"arn": "arn:aws:iam::123456789012:role/obs",   required: the role to assume
//	 "external_id": "…",                             optional, as for ec2
//	 "region": "eu-central-1",                       required: the bucket's region
//	 "bucket": "my-builds",                          required: S3 bucket naming rules
//	 "prefix": "{project}/{repository}/{arch}/{package}/{filename}",
//	 "storage_class": "STANDARD_IA",                 optional: STANDARD, REDUCED_REDUNDANCY,
//	                                                 STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING,
//	                                                 GLACIER, GLACIER_IR, DEEP_ARCHIVE
//	 "tags": {"release": "16.0"},                    optional: ≤ 10, keys ≤ 128, values ≤ 256 characters
//	 "public": false,                                true: the object gets the public-read ACL
//	 "latest": false,                                true: also move the latest pointer (below)
//	 "decompress": false}                            true: store the decompressed disk
//
// Unknown fields are refused, naming them; every error names its field; Check
// makes no network call.
//
// prefix is the key template. Placeholders: {project} {repository} {arch}
// {package} {filename} {job} {date}; {date} is the UTC time the upload
// started as 20261121T071124Z. A prefix ending in "/" gets {filename}
// appended ("releases/" → "releases/{filename}"). The default is
// DefaultPrefix. Each placeholder's value must be non-empty and hold no "/";
// the key must be at most 1024 bytes, must not start with "/", and has no
// empty, "." or ".." segment. With decompress, {filename} is the name
// without its compression suffix and with ".raw" for a container suffix that
// is not raw (x.raw.xz → x.raw, x.img.gz → x.img, x.vhdfixed.xz and x.qcow2 →
// x.raw).
//
// public uses the canned ACL public-read on the object (and its pointer).
// Buckets with ACLs disabled (Object Ownership "bucket owner enforced", the
// default for new buckets) refuse it with a clear message: such buckets are
// made readable with a bucket policy instead, and public stays false.
//
// # The latest pointer
//
// With latest, after the object is complete, the object <dir>/latest is
// written, where <dir> is the part of the key before the first segment that
// uses {filename}, {job} or {date} (the default template gives
// project/repository/arch/package/latest). Its body is the full key of the
// newest publication followed by a newline, it carries
// x-amz-website-redirect-location: /<key> (an S3 website endpoint redirects
// to the file) and x-amz-meta-cloudupload-order, the time that upload
// started. It only moves forward: a publication whose upload started before
// the one the pointer names leaves it alone. Writes are conditional
// (If-None-Match: * for a new pointer, If-Match: <etag> otherwise) and retried
// when another job wins the race, so concurrent jobs never move it back.
// When the pointer cannot be written the job fails and the object it just
// stored is deleted. One pointer per directory: a package publishing several
// files per build should put {job} or {date} in its template's directory.
//
// # The upload
//
// Credentials are those of the ec2 target (awsauth: the service's identity,
// then AssumeRole of arn with external_id, session cloudupload-<job>,
// refreshed). Path-style addressing is used when AWS_ENDPOINT_URL or
// AWS_ENDPOINT_URL_S3 is set.
//
// The object's SHA-256 is stored as metadata x-amz-meta-sha256 (hex). S3 takes
// metadata only when an upload starts, and offers a full-object checksum only
// for CRC algorithms (CopyObject onto itself to add metadata later would copy
// the whole object server-side, and only up to 5 GiB), so the SHA-256 is
// computed first, in one sequential pass; for a plain file, other goroutines
// hash each part meanwhile on the spare cores. Measured here for 1 GiB
// (BenchmarkUpload1GiB, a loaded 2-core machine): that pass takes 1–2 s of a
// 6 s upload to a local server; against real S3 links it is a small share. For
// decompress it costs a second decompression (which also gives the size of a
// gzip disk, otherwise known only by decompressing).
//
// Objects below the part size go in one PutObject carrying that SHA-256,
// which S3 verifies; larger ones in a multipart upload: 16 MiB parts (larger
// when that would need more than 10,000), 8 in flight, each sent with its
// SHA-256 in the signed x-amz-checksum-sha256 header, which S3 verifies, and
// an UNSIGNED-PAYLOAD signature (the checksum protects the body; the payload
// is not hashed a third time). No "Expect: 100-continue" is sent. A plain
// file's parts are read in place (io.SectionReader, no buffering); a
// decompressed stream is read into at most 9 part buffers (≤ 256 MiB),
// hashed per part by the sending goroutine and as a whole on the way, and the
// upload fails before its last part if the bytes differ from the first pass.
// x-amz-meta-cloudupload-job names the job and start time of the upload that
// wrote the object.
//
// On failure or kill the multipart upload is aborted, with a fresh context,
// after every part request has returned, so no parts are left; an object
// the upload completed (a completion whose answer was lost, or a pointer
// that could not be written) is deleted when its metadata shows it is ours.
// An existing object at the key is replaced, as S3 does (versioned buckets
// keep the old version). The SDK retries errors (8 attempts); a part request
// with no answer within a minute plus 16 s per MiB is sent again (3 tries).
//
// # Permissions
//
// The role (arn) needs, on arn:aws:s3:::<bucket>/*: s3:PutObject,
// s3:AbortMultipartUpload, s3:GetObject (the latest pointer, and the check
// before deleting an object after a failure), s3:DeleteObject (that
// cleanup), s3:PutObjectTagging with tags, s3:PutObjectAcl with public; and
// s3:ListBucket on arn:aws:s3:::<bucket>, without which S3 answers a missing
// latest pointer with 403 instead of 404. Its trust policy names the
// service's account with the condition sts:ExternalId = external_id.
package s3
