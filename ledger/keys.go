package ledger

import "encoding/binary"

// Key prefixes in badger; the layout is documented in the package doc.
var (
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

func balanceKey(p string) []byte {
	return append(append(make([]byte, 0, len(prefixBalance)+len(p)), prefixBalance...), p...)
}
