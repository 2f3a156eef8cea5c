package azure

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache removes the file's pages from the page cache (they must be
// clean: the benchmark syncs the image after writing it), so that the next
// read comes from the disk, as a service reading a fresh build's image does.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
