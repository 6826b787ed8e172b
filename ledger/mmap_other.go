//go:build !unix

package ledger

import (
	"io"
	"os"
)

// mapFile reads the file into memory (no mmap here); a segment being
// written is read again when its mapping is too short (see mapsGrow).
func mapFile(f *os.File, length int) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := min(int64(length), fi.Size())
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

func unmapFile([]byte) error { return nil }

const mapsGrow = false
