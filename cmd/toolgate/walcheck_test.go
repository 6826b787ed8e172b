package main

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

func walEntryBytes(key, value string) []byte {
	b := []byte{0x40, 0}
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = binary.AppendUvarint(b, 0)
	b = append(b, key...)
	b = append(b, value...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, walCRC))
}

// TestWALBadTail: a crash's tail (a partly written last entry, then
// zeros) passes; a flipped byte with writes after it, a complete entry
// with a bad checksum, or data after the end does not.
func TestWALBadTail(t *testing.T) {
	log := func(tail int) []byte {
		b := make([]byte, walFileHeader, 4096)
		for _, e := range []string{"k/a", "k/b", "l/r/1"} {
			b = append(b, walEntryBytes(e, `{"v":"some value"}`)...)
		}
		last := walEntryBytes("k/c", `{"revoked":true}`)
		b = append(b, last[:tail]...)
		return append(b, make([]byte, 1024)...)
	}
	full := len(walEntryBytes("k/c", `{"revoked":true}`))
	tests := []struct {
		name string
		b    func() []byte
		bad  bool
	}{
		{"Clean", func() []byte { return log(full) }, false},
		{"TornHeader", func() []byte { return log(3) }, false},
		{"TornValue", func() []byte { return log(full - 9) }, false},
		{"Empty", func() []byte { return make([]byte, 4096) }, false},
		{"FlipFirstEntry", func() []byte { b := log(full); b[walFileHeader+8] ^= 1; return b }, true},
		{"FlipLastEntry", func() []byte { b := log(full); b[len(b)-1024-8] ^= 1; return b }, true},
		{"DataAfterEnd", func() []byte { b := log(full); b[len(b)-10] = 7; return b }, true},
		// A kill -9 during a large entry's copy: its first block (header
		// included) not stored yet, the rest already there.
		{"TornCopyHeadMissing", func() []byte {
			b := log(full)
			big := walEntryBytes("l/r/2", strings.Repeat("x", 600))
			clear(big[:64])
			return append(b[:len(b)-1024], append(big, make([]byte, 1024)...)...)
		}, false},
		// The same shape hiding a complete entry is damage: a write would be lost.
		{"ZeroHeaderBeforeCompleteEntry", func() []byte {
			b := log(full)
			big := walEntryBytes("l/r/2", strings.Repeat("x", 600))
			clear(big[:64])
			next := walEntryBytes("k/d", `{"revoked":true}`)
			return append(b[:len(b)-1024], append(append(big, next...), make([]byte, 1024)...)...)
		}, true},
		{"HugeKey", func() []byte {
			b := log(0)
			b = append(b[:walFileHeader], 0, 0, 0xff, 0xff, 0xff, 0x7f)
			return append(b, make([]byte, 64)...)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, why := walBadTail(tt.b())
			if got := why != ""; got != tt.bad {
				t.Errorf("got damage %v (%q at %d), want %v", got, why, off, tt.bad)
			}
		})
	}
}
