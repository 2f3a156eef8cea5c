package mirror

import (
	"os"
	"syscall"
)

func inode(st os.FileInfo) uint64 {
	if st == nil {
		return 0
	}
	return st.Sys().(*syscall.Stat_t).Ino
}
