//go:build unix

package main

import (
	"errors"
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
