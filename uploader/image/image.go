package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	cloudupload "github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

// Containers and compressions; Format joins them ("raw.xz").
const (
	containerRaw      = "raw"
	containerVHDFixed = "vhdfixed"
	containerQcow2    = "qcow2"

	compXZ   = "xz"
	compGzip = "gz"
	compZstd = "zst"
)

// options select the decompressors; tests use them to cover the pure-Go
// paths on a machine that has the binaries.
type options struct {
	xzBinary   string // path of xz, "" for the pure-Go decoder
	zstdBinary string // path of zstd, "" for the pure-Go decoder
}

// Open opens the image at path whose name as built is filename (the name,
// not the path, decides the format; see the package comment). It reads the
// headers and indexes that give the disk size, so a truncated or corrupt
// container fails here with a clear error, but it does not decompress.
func Open(path, filename string) (targets.Image, error) {
	var o options
	if p, err := exec.LookPath("xz"); err == nil {
		o.xzBinary = p
	}
	return open(path, filename, o)
}

// img implements targets.Image.
type img struct {
	path, name string
	container  string // "" for a file that is not a disk image
	comp       string // "" when not compressed
	fileSize   int64
	opts       options
	qcow       *qcow2 // container qcow2

	mu         sync.Mutex
	streamSize int64 // decompressed size of the whole file, -1 until known
}

func open(path, filename string, o options) (*img, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", filename, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", filename, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return nil, cloudupload.Errorf(cloudupload.EINVALID, "image %s is not a regular file", filename)
	}
	im := &img{path: path, name: filename, fileSize: st.Size(), opts: o, streamSize: -1}
	container, comp, known := detectName(filename)
	if !known {
		container, comp, err = sniff(f, im.fileSize)
		if err != nil {
			return nil, fmt.Errorf("read image %s: %w", filename, unwrapPath(err))
		}
	}
	im.container, im.comp = container, comp
	if container == "" {
		im.comp = ""
		im.streamSize = im.fileSize // published as is
		return im, nil
	}
	switch comp {
	case "":
		im.streamSize = im.fileSize
	case compXZ:
		n, err := xzUncompressedSize(f, im.fileSize)
		if err != nil {
			return nil, im.invalid("not a valid xz file: %v", err)
		}
		im.streamSize = n
	case compZstd:
		n, err := zstdContentSize(f, im.fileSize)
		switch {
		case errors.Is(err, errNoContentSize):
			// DiskSize decompresses once.
		case err != nil:
			return nil, im.invalid("not a valid zstd file: %v", err)
		default:
			im.streamSize = n
		}
	case compGzip:
		var magic [3]byte
		if _, err := f.ReadAt(magic[:], 0); err != nil || magic != [3]byte{0x1f, 0x8b, 8} {
			return nil, im.invalid("not a gzip file")
		}
	}
	switch container {
	case containerVHDFixed:
		if comp == "" {
			if err := im.checkVHD(f); err != nil {
				return nil, err
			}
		}
	case containerQcow2:
		q, err := parseQcow2(f, im.fileSize)
		if err != nil {
			return nil, im.invalid("%v", err)
		}
		im.qcow = q
	}
	return im, nil
}

// checkVHD verifies the footer of an uncompressed VHD.
func (im *img) checkVHD(f io.ReaderAt) error {
	if im.fileSize < vhdFooterSize {
		return im.invalid("too short for a VHD")
	}
	footer := make([]byte, vhdFooterSize)
	if _, err := f.ReadAt(footer, im.fileSize-vhdFooterSize); err != nil {
		return fmt.Errorf("read image %s: %w", im.name, unwrapPath(err))
	}
	if err := checkVHDFooter(footer, im.fileSize-vhdFooterSize); err != nil {
		return im.invalid("%v", err)
	}
	return nil
}

func (im *img) invalid(format string, args ...any) error {
	return cloudupload.Errorf(cloudupload.EINVALID, "image %s: %s", im.name, fmt.Sprintf(format, args...))
}

func (im *img) Path() string { return im.path }

func (im *img) Format() string {
	if im.container == "" || im.comp == "" {
		return im.container
	}
	return im.container + "." + im.comp
}

// KnownDiskSize returns the disk size when it is known without reading the
// whole image (it is not for gzip, nor for zstd frames without sizes).
func (im *img) KnownDiskSize() (int64, bool) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.streamSize < 0 {
		return 0, false
	}
	n, err := im.diskSizeLocked()
	return n, err == nil
}

// DiskSize returns the size of the disk. For raw.gz (gzip stores the size
// only modulo 2^32) and zstd files with frames that do not declare their
// size, the first call decompresses the whole image once, discarding the
// output; the result is kept.
func (im *img) DiskSize(ctx context.Context) (int64, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.streamSize < 0 {
		n, err := im.measure(ctx)
		if err != nil {
			return 0, err
		}
		im.streamSize = n
	}
	return im.diskSizeLocked()
}

func (im *img) diskSizeLocked() (int64, error) {
	n := im.streamSize
	switch im.container {
	case "":
		return im.fileSize, nil
	case containerQcow2:
		n = im.qcow.size
	case containerVHDFixed:
		n -= vhdFooterSize
		if n < 0 {
			return 0, im.invalid("too short for a VHD")
		}
	}
	if n%512 != 0 {
		return 0, im.invalid("disk size %d is not a multiple of 512 bytes", n)
	}
	return n, nil
}

// measure decompresses the whole file and counts its bytes.
func (im *img) measure(ctx context.Context) (int64, error) {
	r, err := im.openStream(ctx)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return 0, fmt.Errorf("measure image %s: %w", im.name, err)
	}
	return n, nil
}

// OpenDisk streams the disk: decompressed, without VHD footer or qcow2
// metadata, exactly DiskSize bytes (when the size is not known yet, as for
// gzip before DiskSize, the stream is not length-checked). For vhdfixed.*
// the footer is checked at the end of the stream: a bad footer makes the
// last Read fail instead of returning io.EOF.
func (im *img) OpenDisk(ctx context.Context) (io.ReadCloser, error) {
	im.mu.Lock()
	known := im.streamSize >= 0
	var size int64
	var sizeErr error
	if known {
		size, sizeErr = im.diskSizeLocked()
	}
	im.mu.Unlock()
	if sizeErr != nil {
		return nil, sizeErr
	}
	switch {
	case im.container == containerQcow2:
		f, err := os.Open(im.path)
		if err != nil {
			return nil, fmt.Errorf("open image %s: %w", im.name, unwrapPath(err))
		}
		z := newQcow2Reader(im.qcow, f, im.name)
		return &readCloser{Reader: &ctxReader{ctx: ctx, r: z}, close: func() error {
			z.Close()
			return f.Close()
		}}, nil
	case im.comp == "" && im.container != "":
		f, err := os.Open(im.path)
		if err != nil {
			return nil, fmt.Errorf("open image %s: %w", im.name, unwrapPath(err))
		}
		// The VHD footer was checked by Open.
		return &readCloser{Reader: &ctxReader{ctx: ctx, r: io.NewSectionReader(f, 0, size)}, close: f.Close}, nil
	}
	rc, err := im.openStream(ctx)
	if err != nil {
		return nil, err
	}
	if !known {
		return rc, nil
	}
	e := &exactReader{r: rc, left: size, name: im.name}
	if im.container == containerVHDFixed {
		e.trailer = func(r io.Reader) error {
			footer := make([]byte, vhdFooterSize)
			if _, err := io.ReadFull(r, footer); err != nil {
				return im.invalid("read VHD footer: %v", err)
			}
			if err := checkVHDFooter(footer, size); err != nil {
				return im.invalid("%v", err)
			}
			return nil
		}
	}
	return &readCloser{Reader: e, close: rc.Close}, nil
}

// openStream returns the whole file decompressed (or as is).
func (im *img) openStream(ctx context.Context) (io.ReadCloser, error) {
	f, err := os.Open(im.path)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", im.name, unwrapPath(err))
	}
	switch im.comp {
	case "":
		return &readCloser{Reader: &ctxReader{ctx: ctx, r: f}, close: f.Close}, nil
	case compXZ:
		if im.opts.xzBinary != "" {
			defer f.Close() // the child has its own descriptor
			return startDecompressor(ctx, im.name, f, im.opts.xzBinary, "--decompress", "--stdout", "--threads=0")
		}
		if blocks := xzParallelBlocks(f, im.fileSize); blocks != nil {
			x := newXZParallelReader(ctx, im.name, f, blocks)
			return &readCloser{Reader: &ctxReader{ctx: ctx, r: x}, close: x.Close}, nil
		}
		xr, err := xz.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			f.Close()
			return nil, im.invalid("xz: %v", err)
		}
		return &readCloser{Reader: &ctxReader{ctx: ctx, r: &errPrefixReader{r: xr, prefix: "decompress image " + im.name + ": xz"}}, close: f.Close}, nil
	case compGzip:
		br := bufio.NewReaderSize(f, 1<<20)
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, im.invalid("gzip: %v", err)
		}
		return &readCloser{Reader: &ctxReader{ctx: ctx, r: &errPrefixReader{r: zr, prefix: "decompress image " + im.name + ": gzip"}}, close: func() error {
			zr.Close()
			return f.Close()
		}}, nil
	case compZstd:
		if im.opts.zstdBinary != "" {
			defer f.Close()
			return startDecompressor(ctx, im.name, f, im.opts.zstdBinary, "--decompress", "--stdout", "--quiet")
		}
		zr, err := zstd.NewReader(bufio.NewReaderSize(f, 1<<20), zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			f.Close()
			return nil, im.invalid("zstd: %v", err)
		}
		return &readCloser{Reader: &ctxReader{ctx: ctx, r: &errPrefixReader{r: zr, prefix: "decompress image " + im.name + ": zstd"}}, close: func() error {
			zr.Close()
			return f.Close()
		}}, nil
	}
	f.Close()
	return nil, fmt.Errorf("image %s: unknown compression %q", im.name, im.comp)
}

// detectName returns the container and compression the file name gives,
// and whether the name says anything at all.
func detectName(filename string) (container, comp string, known bool) {
	name := strings.ToLower(filename)
	for _, c := range []struct{ suffix, comp string }{{".xz", compXZ}, {".gz", compGzip}, {".zst", compZstd}, {".zstd", compZstd}} {
		if strings.HasSuffix(name, c.suffix) {
			name, comp = strings.TrimSuffix(name, c.suffix), c.comp
			break
		}
	}
	for _, c := range []struct{ suffix, container string }{
		{".raw", containerRaw}, {".img", containerRaw},
		{".vhdfixed", containerVHDFixed}, {".vhd", containerVHDFixed},
		{".qcow2", containerQcow2},
	} {
		if strings.HasSuffix(name, c.suffix) {
			if c.container == containerQcow2 && comp != "" {
				return "", "", true // a compressed qcow2 cannot be streamed
			}
			return c.container, comp, true
		}
	}
	if comp != "" && !hasExtension(name) {
		return containerRaw, comp, true // "disk.xz"
	}
	return "", "", hasExtension(name)
}

// hasExtension reports whether name ends in an extension that says what the
// file is: a dot and up to ten characters, at least one a letter (".iso",
// ".tar", ".7z", but not the ".4" of "Build3.4").
func hasExtension(name string) bool {
	i := strings.LastIndexByte(name, '.')
	if i < 0 || len(name)-i-1 > 10 || i == len(name)-1 {
		return false
	}
	for _, r := range name[i+1:] {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return true
		}
	}
	return false
}

// sniff decides the format from the content of a file whose name says
// nothing.
func sniff(f io.ReaderAt, size int64) (container, comp string, err error) {
	head := make([]byte, 1024)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return "", "", err
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return containerQcow2, "", nil
	case bytes.HasPrefix(head, xzHeaderMagic):
		return containerRaw, compXZ, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b, 8}):
		return containerRaw, compGzip, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return containerRaw, compZstd, nil
	}
	if size < 1024 || size%512 != 0 {
		return "", "", nil
	}
	tail := make([]byte, 8)
	if _, err := f.ReadAt(tail, size-vhdFooterSize); err != nil {
		return "", "", err
	}
	if bytes.Equal(tail, vhdCookie) {
		return containerVHDFixed, "", nil
	}
	if head[510] == 0x55 && head[511] == 0xaa || bytes.Equal(head[512:520], []byte("EFI PART")) {
		return containerRaw, "", nil
	}
	return "", "", nil
}

// unwrapPath drops the path from an *fs.PathError, so messages name the
// image by its file name only.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
