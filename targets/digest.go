package targets

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/cloudupload/cloudupload"
)

// ImageSHA256Env names the environment variable in which the daemon hands
// the uploader the SHA-256 of the image file as received (64 hex digits),
// computed while it received the file. A target that needs the file's
// digest uses it instead of reading the file once more, and still checks it
// against the bytes it sends. An uploader run by hand may set it too.
const ImageSHA256Env = "CLOUDUPLOAD_IMAGE_SHA256"

// ImageSHA256 returns the digest in ImageSHA256Env, or nil when it is not
// set. A value that is not 64 hex digits is an EINVALID error.
func ImageSHA256(getenv func(string) string) ([]byte, error) {
	v := getenv(ImageSHA256Env)
	if v == "" {
		return nil, nil
	}
	sum, err := hex.DecodeString(v)
	if err != nil || len(sum) != sha256.Size {
		return nil, cloudupload.Errorf(cloudupload.EINVALID, "%s is not a SHA-256 in hex (64 hex digits)", ImageSHA256Env)
	}
	return sum, nil
}
