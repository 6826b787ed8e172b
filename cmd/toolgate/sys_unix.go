//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockShared takes a shared flock on dir, as badger's read-only open
// does: a writable badger open (which takes it exclusively) fails while
// it is held. It writes nothing.
func lockShared(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// freeSpace describes the free bytes and inodes of dir's filesystem, or
// "" when it cannot tell.
func freeSpace(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "cannot stat: " + err.Error()
	}
	return fmt.Sprintf("%d MiB and %d inodes free", uint64(st.Bavail)*uint64(st.Bsize)>>20, st.Ffree)
}
