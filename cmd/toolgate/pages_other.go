//go:build !linux

package main

// releaseTablePages is a no-op where MADV_PAGEOUT does not exist.
func releaseTablePages(storeDir string) int64 { return 0 }
