package ledger

import (
	"encoding/binary"
	"time"
)

// Key prefixes; the layout is documented in the package doc.
var (
	prefixRecord     = []byte("l/r/")
	prefixPrincipal  = []byte("l/p/")
	prefixTime       = []byte("l/t/")
	prefixCheckpoint = []byte("l/c/")
)

func seqKey(prefix []byte, seq uint64) []byte {
	k := make([]byte, 0, len(prefix)+8)
	k = append(k, prefix...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// timeBytes maps t to 8 bytes that sort like t: Unix nanoseconds with the
// sign bit flipped, big-endian.
func appendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
}

func timeKey(at time.Time, seq uint64) []byte {
	k := make([]byte, 0, len(prefixTime)+16)
	k = append(k, prefixTime...)
	k = appendTime(k, at)
	return binary.BigEndian.AppendUint64(k, seq)
}

func principalPrefix(p string) []byte {
	k := make([]byte, 0, len(prefixPrincipal)+len(p)+1+16)
	k = append(k, prefixPrincipal...)
	k = append(k, p...)
	return append(k, 0)
}

func principalKey(p string, at time.Time, seq uint64) []byte {
	k := principalPrefix(p)
	k = appendTime(k, at)
	return binary.BigEndian.AppendUint64(k, seq)
}

// indexValue is the value of both index entries: type, outcome and tool
// separated by NUL, so queries filter without reading the record.
func indexValue(r *Record) []byte {
	v := make([]byte, 0, len(r.Type)+len(r.Outcome)+len(r.Tool)+2)
	v = append(v, r.Type...)
	v = append(v, 0)
	v = append(v, r.Outcome...)
	v = append(v, 0)
	return append(v, r.Tool...)
}
