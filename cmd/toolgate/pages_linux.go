//go:build linux

package main

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// madvDontneed is MADV_DONTNEED: drop the range's pages from this
// process's mapping. On a shared file mapping the pages stay in the page
// cache and a later read maps them again; the contents never change.
const madvDontneed = 4

// releaseTablePages drops the pages of the store's table files (*.sst)
// from this process's mappings (MADV_DONTNEED). badger maps every table,
// and the start reads every key block (and the ledger's admin entries
// for a full state check), so after the load the store's tables are
// resident in the process: its RSS counts them, a million keys' tables
// included, though the gateway serves keys from memory. The pages stay
// in the page cache (MADV_PAGEOUT, used before, also evicted them from
// it, and the next start's badger open read them from the disk again:
// store_ms 0.2-0.5 s instead of ~30 ms); a later read maps them again.
// It returns the bytes advised; errors (an old kernel, a table unmapped meanwhile by a
// compaction) only mean nothing was released, and are not reported.
func releaseTablePages(storeDir string) int64 {
	return releasePages(storeDir, madvDontneed, ".sst")
}

// releaseLedgerPages drops the ledger's mapped segments and indexes
// (ledger/*.seg, *.idx) from the process's RSS after the start: the
// meters' restore walks the time index of the last hours and reads the
// first bytes of every record in it (admin records too, one per key after
// a bulk creation), which leaves whole segments resident. They stay in the
// page cache for later reads. It returns the bytes advised.
func releaseLedgerPages(ledgerDir string) int64 {
	return releasePages(ledgerDir, madvDontneed, ".seg", ".idx")
}

// releasePages gives advice to every mapping of this process of a file
// in dir whose name ends in one of suffixes, and returns the bytes
// advised.
func releasePages(dir string, advice uintptr, suffixes ...string) int64 {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || filepath.Dir(fields[5]) != abs || !slices.ContainsFunc(suffixes, func(s string) bool { return strings.HasSuffix(fields[5], s) }) {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), advice); e == 0 {
			n += int64(end - start)
		}
	}
	return n
}
