//go:build !linux

package main

// releaseTablePages is a no-op where MADV_DONTNEED does not exist.
func releaseTablePages(storeDir string) int64 { return 0 }

// releaseLedgerPages is a no-op where the segments are not mapped.
func releaseLedgerPages(ledgerDir string) int64 { return 0 }
