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
// # The object's SHA-256
//
// The SHA-256 of the stored bytes is computed while they are sent, never in
// a pass before the first part goes up, and is stored with the object:
//
//   - as metadata x-amz-meta-sha256 (hex) when it is known before the upload
//     starts: the daemon computes the SHA-256 of the file while it receives
//     it and hands it to the uploader as CLOUDUPLOAD_IMAGE_SHA256 (hex; an
//     uploader run by hand may set it too). It applies to a file stored as
//     received, not to a decompressed disk. The upload still hashes what it
//     sends and fails, aborting the multipart upload before its last part
//     is sent, when the file hashes otherwise (it changed after it was
//     received).
//   - otherwise (decompress, or a run without the variable) as the object
//     tag sha256, written with PutObjectTagging once the upload is complete
//     (beside the user's tags, so with decompress at most 9 of those; the
//     tag key sha256 is reserved). S3 takes metadata only when an upload
//     starts; adding it later means CopyObject of the object onto itself,
//     which copies every byte again server-side (UploadPartCopy above
//     5 GiB) and leaves a second version in a versioned bucket; a tag is
//     one small request. A failure to tag fails the job and deletes the
//     object.
//
// Objects below the part size (and the empty object) are read into memory
// and stored with one PutObject carrying the SHA-256 in the metadata and as
// its checksum, which S3 verifies.
//
// Larger ones go in a multipart upload: 16 MiB parts (larger when that would
// need more than 10,000), 8 in flight, in three stages. One goroutine reads
// the parts in order (a decompressed stream into at most 10 pooled part
// buffers, ≤ 256 MiB; a plain file's parts are not buffered but read in
// place, io.SectionReader); one hashes them in order: the object's SHA-256
// and each part's CRC32C; the senders send each part with its CRC32C in the
// signed x-amz-checksum-crc32c header, which S3 verifies, and an
// UNSIGNED-PAYLOAD signature (the checksum protects the body; the payload
// is not hashed a second time). The upload is created with checksum
// algorithm CRC32C and type FULL_OBJECT: S3 combines the parts' CRC32C
// into the object's, which any client can compare with the local file. S3's
// full-object checksums exist only for CRC algorithms (SHA-256 is only
// composite, per part), so the SHA-256 goes in metadata or tag as above.
// CRC32C costs a small fraction of SHA-256 on both sides (SSE4.2), and,
// because each part's CRC32C comes from the same read as the SHA-256, S3
// refuses a part whose bytes differ from those hashed (a plain file's part
// is read a second time to be sent). No "Expect: 100-continue" is sent.
// The log says how long the server took to join the parts after the last
// one (a server that copies every byte, such as versitygw, takes seconds
// per GiB).
// Only a decompressed disk whose size the file does not tell (gzip, zstd
// without frame sizes) is decompressed once before the upload, to learn
// the size the parts are cut by.
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
// cleanup), s3:PutObjectTagging with tags, with decompress and for uploads
// without CLOUDUPLOAD_IMAGE_SHA256 (the tag sha256), s3:PutObjectAcl with
// public; and
// s3:ListBucket on arn:aws:s3:::<bucket>, without which S3 answers a missing
// latest pointer with 403 instead of 404. Its trust policy names the
// service's account with the condition sts:ExternalId = external_id.
package s3
