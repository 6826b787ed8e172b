package main

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
)

// badger's memtable write-ahead logs (*.mem) check each entry with a
// CRC, but on open badger reads up to the first entry that fails and
// silently truncates the rest: one flipped byte drops every later write
// (a revocation, all keys created since the last flush). A crash leaves
// only one kind of bad tail, the entry being copied in when the process
// died, followed by zeros. checkWAL tells the two apart before badger
// opens the store.

// WAL entry layout (badger v4, unencrypted): a 20-byte file header, then
// entries: meta, userMeta, uvarint klen, uvarint vlen, uvarint expiresAt,
// key, value, CRC-32C (big-endian) over all of it.
const (
	walFileHeader = 20
	walMaxKey     = 1 << 16
	walMaxValue   = 1 << 20 // badger's default value threshold: larger values go to the value log
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// walDamage is a write-ahead log that holds data after an entry that is
// not valid: not a crash's torn tail.
type walDamage struct {
	file   string
	offset int
	why    string
}

func (d *walDamage) Error() string {
	return fmt.Sprintf("store: badger's write-ahead log %s is damaged at byte %d (%s): badger would drop every write after it without a word",
		d.file, d.offset, d.why)
}

// checkWAL checks every *.mem file in the store directory dir.
func checkWAL(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if off, why := walBadTail(b); why != "" {
			return &walDamage{file: filepath.Base(f), offset: off, why: why}
		}
	}
	return nil
}

// walBadTail returns where and why b, a memtable log, holds more than
// valid entries followed by at most one torn entry and zeros; why is ""
// when it does not.
func walBadTail(b []byte) (int, string) {
	if len(b) < walFileHeader {
		return 0, "" // badger rewrites a log shorter than its header
	}
	off := walFileHeader
	for off < len(b) {
		end, zero, ok := walEntry(b, off)
		switch {
		case zero:
			nz := firstNonZero(b[off:])
			if nz < 0 || tornCopy(b, off, nz) {
				return 0, ""
			}
			return off + nz, "data after the end of the log"
		case ok:
			off = end
			continue
		case end < 0:
			return off, "an entry header that no write produces"
		}
		// A bad entry is a torn write only if the copy stopped before its
		// checksum and nothing follows it.
		if firstNonZero(b[end-crc32.Size:]) >= 0 {
			return off, "an entry whose checksum does not match"
		}
		return 0, ""
	}
	return 0, ""
}

// walCopyHead is how much of an entry's start a copy interrupted by a
// crash may not have stored yet: Go's memmove stores the first block of
// a large copy last, so a process killed mid-write can leave an entry
// whose header is still zero and whose body is already there.
const walCopyHead = 256

// tornCopy reports whether the data after a zero header at off (its first
// non-zero byte at off+nz) is one entry caught mid-copy by a crash: it
// starts within walCopyHead bytes, spans at most one entry, and holds no
// complete entry (nothing whose checksum holds is lost).
func tornCopy(b []byte, off, nz int) bool {
	if nz >= walCopyHead {
		return false
	}
	last := len(b) - 1
	for last > off && b[last] == 0 {
		last--
	}
	if last-off > walMaxKey+walMaxValue {
		return false
	}
	for p := off + 1; p <= last; p++ {
		if _, zero, ok := walEntry(b, p); ok && !zero {
			return false
		}
	}
	return true
}

// walEntry parses the entry at off. zero reports an all-zero header (the
// log ends); otherwise end is the entry's end (-1 when its header is
// malformed or it runs past the file) and ok whether its checksum holds.
func walEntry(b []byte, off int) (end int, zero, ok bool) {
	p := off + 2
	if p > len(b) {
		return -1, false, false
	}
	var lens [3]uint64
	for i := range lens {
		v, n := binary.Uvarint(b[p:])
		if n <= 0 {
			return -1, false, false
		}
		lens[i], p = v, p+n
	}
	if b[off] == 0 && b[off+1] == 0 && lens == [3]uint64{} {
		return 0, true, false
	}
	if lens[0] > walMaxKey || lens[1] > uint64(len(b)) {
		return -1, false, false
	}
	end = p + int(lens[0]) + int(lens[1]) + crc32.Size
	if end > len(b) {
		return -1, false, false
	}
	want := binary.BigEndian.Uint32(b[end-crc32.Size : end])
	return end, false, crc32.Checksum(b[off:end-crc32.Size], walCRC) == want
}

// firstNonZero returns the index of the first non-zero byte of b, or -1.
func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}
