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
	prefixBalance    = []byte("l/b/")
	prefixAdmin      = []byte("l/a/") // admin records: l/a/<seq> → a byte-exact copy of the record
)

func seqKey(prefix []byte, seq uint64) []byte {
	return appendSeqKey(make([]byte, 0, len(prefix)+8), prefix, seq)
}

func appendSeqKey(b, prefix []byte, seq uint64) []byte {
	b = append(b, prefix...)
	return binary.BigEndian.AppendUint64(b, seq)
}

// timeBytes maps t to 8 bytes that sort like t: Unix nanoseconds with the
// sign bit flipped, big-endian.
func appendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
}

func timeKey(at time.Time, seq uint64) []byte {
	return appendTimeKey(make([]byte, 0, len(prefixTime)+16), at, seq)
}

func appendTimeKey(b []byte, at time.Time, seq uint64) []byte {
	b = append(b, prefixTime...)
	b = appendTime(b, at)
	return binary.BigEndian.AppendUint64(b, seq)
}

func principalPrefix(p string) []byte {
	k := make([]byte, 0, len(prefixPrincipal)+len(p)+1+16)
	k = append(k, prefixPrincipal...)
	k = append(k, p...)
	return append(k, 0)
}

func principalKey(p string, at time.Time, seq uint64) []byte {
	return appendPrincipalKey(nil, p, at, seq)
}

func appendPrincipalKey(b []byte, p string, at time.Time, seq uint64) []byte {
	b = append(b, prefixPrincipal...)
	b = append(b, p...)
	b = append(b, 0)
	b = appendTime(b, at)
	return binary.BigEndian.AppendUint64(b, seq)
}

func balanceKey(p string) []byte {
	return append(append(make([]byte, 0, len(prefixBalance)+len(p)), prefixBalance...), p...)
}

// indexValue is the value of a time index entry: type, outcome and tool
// separated by NUL, so queries filter without reading the record.
func indexValue(r *Record) []byte { return appendIndexValue(nil, r) }

func appendIndexValue(v []byte, r *Record) []byte {
	v = append(v, r.Type...)
	v = append(v, 0)
	v = append(v, r.Outcome...)
	v = append(v, 0)
	return append(v, r.Tool...)
}
