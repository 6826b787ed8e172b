package ledger

import (
	"encoding/binary"
	"time"
)

// The legacy layout's record keys (legacy.go), which tests write to build
// a store as the old code left it.
var (
	prefixRecord    = prefixLegacyRecord
	prefixPrincipal = prefixLegacyPrincipal
	prefixTime      = prefixLegacyTime
)

func appendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
}

func timeKey(at time.Time, seq uint64) []byte {
	b := append([]byte{}, prefixTime...)
	b = appendTime(b, at)
	return binary.BigEndian.AppendUint64(b, seq)
}

func principalKey(p string, at time.Time, seq uint64) []byte {
	b := append([]byte{}, prefixPrincipal...)
	b = append(b, p...)
	b = append(b, 0)
	b = appendTime(b, at)
	return binary.BigEndian.AppendUint64(b, seq)
}

func indexValue(r *Record) []byte {
	v := append([]byte{}, r.Type...)
	v = append(v, 0)
	v = append(v, r.Outcome...)
	v = append(v, 0)
	return append(v, r.Tool...)
}
