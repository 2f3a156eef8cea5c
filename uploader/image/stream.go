package image

import (
	"context"
	"io"
	"os/exec"
	"strings"
)

// OpenStream returns the content of the file at path, whose name as built
// is filename, decompressed by the compression the name ends in (".gz" or
// ".tgz", ".xz" or ".txz", ".zst", ".zstd" or ".tzst"; anything else is read
// as is). It is for targets that read a file's content as a stream, such as
// a tar archive, rather than as a disk: nothing is checked beyond what the
// decompressor checks, and the stream is not length-checked. Close releases
// every resource (decompressor processes included) even when the stream
// was not read to the end.
func OpenStream(ctx context.Context, path, filename string) (io.ReadCloser, error) {
	im := &img{path: path, name: filename, comp: StreamCompression(filename)}
	if p, err := exec.LookPath("xz"); err == nil {
		im.opts.xzBinary = p
	}
	return im.openStream(ctx)
}

// StreamCompression returns the compression OpenStream applies to a file
// named filename: "gz", "xz", "zst" or "" for none.
func StreamCompression(filename string) string {
	name := strings.ToLower(filename)
	for _, c := range []struct{ suffix, comp string }{
		{".gz", compGzip}, {".tgz", compGzip},
		{".xz", compXZ}, {".txz", compXZ},
		{".zst", compZstd}, {".zstd", compZstd}, {".tzst", compZstd},
	} {
		if strings.HasSuffix(name, c.suffix) {
			return c.comp
		}
	}
	return ""
}
