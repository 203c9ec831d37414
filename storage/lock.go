package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// The spool and the dead letters belong to one process: two writers
// appending to one spool would interleave records, and two drainers would
// replay (and delete) each other's segments. A data directory is therefore
// held under an exclusive flock(2) on LockFileName for as long as a process
// uses it — the service, or an operator command replaying what a dead
// instance left. The kernel drops the lock when the process dies, even by
// kill -9, so a crash never leaves a stale lock; the pid in the file is
// only there to name the holder in the error.

// LockFileName is the lock file in a data directory.
const LockFileName = "telemetryd.lock"

// ErrDirInUse is wrapped by LockDir's error when another process (or
// another LockDir in this one) holds the directory.
var ErrDirInUse = errors.New("in use")

// DirLock is an exclusive hold on a data directory; release it with Unlock.
type DirLock struct {
	f *os.File
}

// LockDir creates dir if needed and takes its lock without waiting. When
// the directory is held it fails with an error wrapping ErrDirInUse that
// names the holder's pid: "data dir X is in use by pid N".
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := holderOf(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is %w by %s (%s)", dir, ErrDirInUse, holder, path)
		}
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	// Ours now: record who holds it, for the next one's error message.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// holderOf names the process recorded in a held lock file.
func holderOf(f *os.File) string {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	if pid, err := strconv.Atoi(string(bytes.TrimSpace(buf[:n]))); err == nil && pid > 0 {
		return "pid " + strconv.Itoa(pid)
	}
	return "another process"
}

// Unlock releases the directory. The lock file stays (removing it would
// let a process that opened it before the removal hold a lock on a file
// nobody else sees).
func (l *DirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}
