package ledger

import (
	"errors"
	"os"
	"syscall"
)

// datasync forces f's data (and the size, not other metadata) to stable
// storage.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
