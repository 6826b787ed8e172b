//go:build linux

package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4): reclaim the range's pages now.
// It is only advice: on memory that is not file-backed and has no swap it
// does nothing, and it never changes what the memory holds.
const madvPageout = 21

// releaseTablePages asks the kernel to reclaim the pages of the store's
// table files (*.sst) mapped by this process. badger maps every table
// and, with its checksums verified at open, reads all of them, so after
// the start (keys loaded, state checked) the whole store is resident in
// the process: its RSS counts the store's size, a million keys' tables
// included, though the gateway serves keys from memory. Pages read again
// later come back from the page cache or the disk. It returns the bytes
// advised; errors (an old kernel, a table unmapped meanwhile by a
// compaction) only mean nothing was released, and are not reported.
func releaseTablePages(storeDir string) int64 {
	abs, err := filepath.Abs(storeDir)
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
		if len(fields) < 6 || !strings.HasSuffix(fields[5], ".sst") || filepath.Dir(fields[5]) != abs {
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
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), madvPageout); e == 0 {
			n += int64(end - start)
		}
	}
	return n
}
