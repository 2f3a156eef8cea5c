// Package image opens a built image file for a target: it finds the
// container and compression from the file name (or, when the name says
// nothing, from the content), knows the size of the disk inside without
// decompressing where the format allows, and streams the disk's bytes,
// decompressed and without container overhead, never through a temporary
// copy.
//
// Formats (targets.Image.Format):
//
//	raw          .raw, .img
//	raw.xz       .raw.xz, .img.xz   (xz binary when on PATH, else pure Go:
//	                                multi-block files one block per core)
//	raw.gz       .raw.gz, .img.gz
//	raw.zst      .raw.zst, .img.zst
//	vhdfixed     .vhdfixed, .vhd    raw disk + 512-byte fixed VHD footer
//	vhdfixed.xz  .vhdfixed.xz, .vhd.xz (and .gz, .zst)
//	qcow2        .qcow2             v2/v3, deflate or zstd compressed clusters;
//	                                no backing file, encryption, data file
//	""           anything else: not a disk; OpenDisk gives the file as is
//
// A name "says nothing" when it has no alphabetic extension (e.g. "disk" or
// "image-1.2"): then the first and last bytes decide (qcow2, xz, gzip and
// zstd magic, a VHD footer, an MBR or GPT partition table). A name with an
// extension this package does not know (.iso, .tar.xz, .box, .json) is a
// plain file, format "".
//
// VHDFooter writes the footer that makes a raw disk a fixed VHD (the azure
// target appends it to its page blobs).
//
// Errors about the image's content are *cloudupload.Error with code
// EINVALID, naming the image by its file name, never by its path on the
// server.
package image
