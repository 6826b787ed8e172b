//go:build unix

package ledger

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile maps length bytes of f read-only and shared, so that the
// mapping shows what is written to the file later (the active segment
// is mapped beyond its end and read only where records were written).
// A zero length maps nothing.
func mapFile(f *os.File, length int) ([]byte, error) {
	if length == 0 {
		return nil, nil
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, length, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	return b, nil
}

// unmapFile releases a mapping made by mapFile.
func unmapFile(b []byte) error {
	if b == nil {
		return nil
	}
	return syscall.Munmap(b)
}

// mapsGrow is whether a mapping beyond a file's end shows what is later
// written there (true for shared mappings on unix).
const mapsGrow = true
