// Package azure is the azure target: it turns a built disk image into an
// Azure managed image and/or an Azure Compute Gallery image version in the
// user's own subscription, as the service principal the user stored in
// OBS. It is what OBS's frontend sends for `target=azure`.
//
// # Target data
//
// A JSON object, as OBS's frontend (Backend::Api::Cloud.upload) builds it
// from the user's Cloud::Azure::Configuration and the upload form. Unknown
// fields are an error naming them; every error names its field and comes
// before any network call.
//
//	application_id   the principal's client id, RSA-encrypted (required)
//	application_key  its client secret, RSA-encrypted (required)
//	user_id          accepted for compatibility with OBS, ignored
//	image_name       2–63 of [[:alnum:]]([\w.-]*\w)? (required): the managed
//	                 image's name; the blob is image_name + ".vhd"
//	subscription     subscription id (required; letters, digits, '-')
//	container        3–63 of [-a-z0-9] (required), must exist
//	storage_account  3–24 of [a-z0-9] (required), in resource_group
//	resource_group   1–90 of [-\w.]*[-\w] (required)
//	tenant           tenant id or domain (default: found from the
//	                 subscription, from ARM's unauthenticated challenge)
//	location         region of the image (default: the storage account's)
//	hyper_v_generation  V1 | V2 (default: V2 when the disk has a GPT, else V1)
//	architecture     x64 | Arm64 (default and must match: the job's arch)
//	os_type          Linux (default) | Windows
//	tags             {"key": "value"} on the image and the gallery version
//	gallery          {"name", "image_definition", "version": "1.2.3",
//	                  "target_regions": ["northeurope", …]}: also publish a
//	                 gallery image version (the definition must exist and
//	                 match the architecture, generation and OS type)
//	managed_image    true (default) | false: with false, only the gallery
//	                 version is made, straight from the blob (Arm64 needs this:
//	                 managed images are x64 only)
//	keep_blob        true (default, as OBS's uploader left it) | false:
//	                 delete the blob once the image exists
//
// application_id and application_key are what OBS's frontend stores and
// sends: each encrypted with this server's public key (GET
// /cloudupload/_pubkey) with RSA PKCS#1 v1.5, then Base64.encode64 (newlines
// are ignored). The uploader decrypts them with the private key whose path
// the server passes as CLOUDUPLOAD_PRIVKEY, at `clouduploader validate` too,
// so a value that does not decrypt is a 400 at create naming the field. The
// plain values are kept in memory only: never in a log, an error, argv or
// the job's files. PKCS#1 v1.5 decryption can be an oracle; every failure
// gives the same answer, and a plain text must also look like a client id
// (a GUID) or a secret (8–256 printable characters), which a forged
// ciphertext does not.
//
// # What it does
//
//  1. Signs in as the service principal (azidentity client secret) to the
//     tenant, looks up the storage account (its location and id) and, with
//     a gallery, checks the image definition.
//  2. Writes the disk as a page blob holding a fixed VHD: the disk rounded up
//     to 1 MiB, then a 512-byte VHD footer the target computes
//     (uploader/image.VHDFooter). Any image the uploader opens works (.raw,
//     .raw.xz, .vhdfixed.xz, .qcow2, …), streamed, never copied. A 64 KiB
//     grain that is all zeros is never sent (a page blob starts zeroed), so
//     a sparse disk costs its data; writes of up to 4 MiB go in parallel
//     (CLOUDUPLOAD_AZURE_WORKERS, default 16), each with its CRC64
//     (x-ms-content-crc64, CRC-64/NVME, which the service checks; TLS
//     protects the wire, the CRC also what TLS does not, such as a
//     TLS-terminating proxy, at a twentieth of the CPU of a Content-MD5),
//     over HTTP/1.1 keep-alive connections, one per worker; the SDK
//     retries throttling (429, 503 with Retry-After), timeouts and 5xx.
//     Memory is bounded by (workers+2) × 4 MiB whatever the image, and a
//     disk read slower than it is sent (decompressed) holds fewer buffers.
//     A raw image that is a sparse file is read only where it holds data
//     (SEEK_DATA, uploader/image.OpenSparse).
//  3. The blob is written with the principal's token when it has a data
//     role (Storage Blob Data Contributor), otherwise with the account key
//     from ARM's listKeys; the log says which.
//  4. Creates the managed image (Generalized OS disk from the blob, the
//     generation, the OS type) and waits for it, and/or the gallery image
//     version (from the managed image, or from the blob) replicated to the
//     image's region and target_regions. The user's tags plus
//     cloudupload:job, cloudupload:token and cloudupload:image go on both.
//
// # Result
//
// The managed image's resource id; with a gallery, the gallery version's
// id after a comma (or alone with "managed_image": false).
//
// # Reruns and existing names
//
// The blob's metadata carries cloudupload_token (the job, user, project,
// repository, arch, package, file name, subscription, account, container,
// resource group, image name and image file) and cloudupload_state
// (uploading, then complete). A blob, image or gallery version of that name
// carrying this job's token is its own earlier work: a complete blob and a
// finished image or version are reused, an unfinished blob is written again.
// Anything else of that name is an error naming it, and is left alone.
//
// # Failure and kill
//
// On any failure, and when the context is cancelled, the target stops
// within seconds and removes with a fresh two-minute context what this run
// created or left unfinished: the gallery version, the managed image, the
// blob.
//
// # What an OBS operator configures
//
// Nothing Azure-specific: the server's key pair (generated in
// STATE/keys on first start, or --pubkey/--privkey) is what OBS's frontend
// encrypts with (it fetches /cloudupload/_pubkey), and the server passes
// CLOUDUPLOAD_PRIVKEY to every uploader. The user stores the principal's
// application id and secret in OBS (Cloud::Azure::Configuration).
//
// # The role the principal needs
//
// In the user's subscription: on the resource group, Contributor (or a
// custom role with Microsoft.Compute/images/read, write, delete;
// Microsoft.Compute/galleries/images/read and
// galleries/images/versions/read, write, delete with a gallery;
// Microsoft.Storage/storageAccounts/read and, unless it has a data role,
// storageAccounts/listKeys/action). For bearer-token writes to the blob:
// Storage Blob Data Contributor on the storage account or container.
//
// # Environment
//
//	CLOUDUPLOAD_PRIVKEY              the server's private key (set by the server)
//	AZURE_AUTHORITY_HOST             Azure AD authority (default
//	                                 https://login.microsoftonline.com/); any
//	                                 other host disables AAD instance
//	                                 discovery, as Azure Stack needs
//	CLOUDUPLOAD_AZURE_ARM_ENDPOINT   ARM (default https://management.azure.com)
//	CLOUDUPLOAD_AZURE_ARM_AUDIENCE   ARM's token audience, for sovereign clouds
//	                                 and Azure Stack (default
//	                                 https://management.core.windows.net/)
//	CLOUDUPLOAD_AZURE_BLOB_ENDPOINT  blob service with {account} (default
//	                                 https://{account}.blob.core.windows.net)
//	CLOUDUPLOAD_AZURE_WORKERS        parallel page writes, 1–64 (default 16)
//	SSL_CERT_FILE                    extra CAs, as Go reads them on Linux
//
// Endpoints must be https: the SDK sends bearer tokens only over TLS.
package azure
