//go:build !linux

package ledger

import "os"

// datasync forces f to stable storage.
func datasync(f *os.File) error { return f.Sync() }
