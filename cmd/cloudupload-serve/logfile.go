package main

import (
	"os"
	"sync"
)

// logFile is a file opened for appending that SIGHUP reopens, so that
// logrotate can move it away and the server continues in a new file.
type logFile struct {
	path string
	perm os.FileMode
	mu   sync.Mutex
	f    *os.File
}

func openLog(path string, perm os.FileMode) (*logFile, error) {
	l := &logFile{path: path, perm: perm}
	return l, l.Reopen()
}

func (l *logFile) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(b)
}

func (l *logFile) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Sync()
}

// Reopen opens the path again (creating it) and closes the previous file;
// on error the previous file stays in use.
func (l *logFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, l.perm)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
