package image

import (
	"os"
	"syscall"
)

// pipeSize is the capacity asked for the pipe from a decompressor: 1 MiB,
// the unprivileged maximum by default, instead of 64 KiB, so the reader
// takes the output in large pieces with few wake-ups while the
// decompressor keeps writing.
const pipeSize = 1 << 20

// growPipe enlarges the pipe f is an end of, when the system allows it.
func growPipe(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		const fSetPipeSz = 1031 // F_SETPIPE_SZ
		syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSz, pipeSize)
	})
}
