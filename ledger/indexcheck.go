package ledger

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// indexCheck verifies the indexes against a verified chain while it
// streams by in seq order. The segment indexes are rebuilt per segment
// and compared (segment). For the admin index in badger it sums a keyed
// hash of every entry the chain implies, then sums the same over the
// entries actually stored (in key order) and compares: the hash key is
// random per check and never leaves the process, so a store edited
// beforehand cannot be crafted to give an equal sum; any missing, extra
// or altered entry changes the sum (probability of a miss 2^-256). Only
// on a mismatch does it walk the index again with point reads to name
// the first bad record.
type indexCheck struct {
	key      [32]byte
	wantA    digest
	balances map[string]uint64 // principal -> seq of its latest balance-bearing txn
	scratchK []byte
	// segFault is the first record a segment index gets wrong (0: none).
	segFault uint64
	segWhy   string
}

// digest is a sum, lane-wise mod 2^64, of keyed SHA-256 values: a
// multiset hash whose order of additions does not matter.
type digest struct {
	sum [4]uint64
	buf []byte
}

func (d *digest) add(key *[32]byte, k, v []byte) {
	d.buf = append(d.buf[:0], key[:]...)
	d.buf = binary.BigEndian.AppendUint32(d.buf, uint32(len(k)))
	d.buf = append(d.buf, k...)
	d.buf = append(d.buf, v...)
	h := sha256.Sum256(d.buf)
	for i := range d.sum {
		d.sum[i] += binary.LittleEndian.Uint64(h[8*i:])
	}
}

func newIndexCheck() *indexCheck {
	ix := &indexCheck{balances: map[string]uint64{}}
	rand.Read(ix.key[:])
	return ix
}

// expect records the badger index entries implied by stored record r
// (whose stored form is v).
func (ix *indexCheck) expect(r *Record, v []byte) {
	if r.Type == TypeAdmin {
		ix.scratchK = appendSeqKey(ix.scratchK[:0], prefixAdmin, r.Seq)
		ix.wantA.add(&ix.key, ix.scratchK, v)
	}
	if r.Principal != "" && r.Type == TypeTxn && r.BalanceAfter != nil {
		ix.balances[r.Principal] = r.Seq
	}
}

// segment compares a segment's index with the one its records imply (b,
// built while they streamed by).
func (ix *indexCheck) segment(v *segView, b *indexBuilder) {
	note := func(seq uint64, why string) {
		if ix.segFault == 0 || seq < ix.segFault {
			ix.segFault, ix.segWhy = seq, why
		}
	}
	if v.ix != nil {
		if ok, bad := v.checkIndex(b.encode(v.end)); !ok {
			note(bad, fmt.Sprintf("segment index %s: entry for record %d does not match the record (index tampered)", segName(v.first, idxSuffix), bad))
		}
		return
	}
	for i := range min(len(b.offs), v.n) {
		if b.offs[i] != v.offs[i] || b.ats[i] != v.ats[i] {
			note(v.first+uint64(i), fmt.Sprintf("segment %d index in memory: entry for record %d does not match the record", v.first, v.first+uint64(i)))
			return
		}
	}
	if len(b.offs) != v.n {
		note(v.first+uint64(min(len(b.offs), v.n)), fmt.Sprintf("segment %d index in memory: %d entries for %d records", v.first, v.n, len(b.offs)))
	}
}

// check reports the first record whose index entries are wrong and why,
// or reason "" when all agree; err is a store error.
func (ix *indexCheck) check(txn *badger.Txn, vs []segView) (seq uint64, reason string, err error) {
	if ix.segFault != 0 {
		return ix.segFault, ix.segWhy, nil
	}
	var got digest
	o := badger.DefaultIteratorOptions
	o.Prefix, o.PrefetchValues = prefixAdmin, false
	it := txn.NewIterator(o)
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := item.Value(func(v []byte) error { got.add(&ix.key, item.Key(), v); return nil }); err != nil {
			it.Close()
			return 0, "", err
		}
	}
	it.Close()
	if got.sum != ix.wantA.sum {
		seq, why, err := locateAdminFault(txn, vs)
		if err != nil {
			return 0, "", err
		}
		return seq, fmt.Sprintf("admin index: %s (index tampered)", why), nil
	}
	return ix.checkBalances(txn)
}

// checkBalances compares l/b/ with the latest balance-bearing txn of each
// principal seen in the chain.
func (ix *indexCheck) checkBalances(txn *badger.Txn) (uint64, string, error) {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefixBalance
	it := txn.NewIterator(o)
	defer it.Close()
	seen := 0
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		p := string(item.Key()[len(prefixBalance):])
		want, ok := ix.balances[p]
		v, err := item.ValueCopy(nil)
		if err != nil {
			return 0, "", err
		}
		if !ok {
			s := uint64(0)
			if len(v) == 8 {
				s = binary.BigEndian.Uint64(v)
			}
			return s, fmt.Sprintf("balance index: entry for %q, which has no balance-bearing txn (index tampered)", p), nil
		}
		if len(v) != 8 || binary.BigEndian.Uint64(v) != want {
			return want, fmt.Sprintf("balance index: entry for %q does not name its latest balance-bearing txn %d (index tampered)", p, want), nil
		}
		seen++
	}
	if seen != len(ix.balances) {
		first := uint64(0)
		for p, s := range ix.balances {
			if _, err := txn.Get(balanceKey(p)); errors.Is(err, badger.ErrKeyNotFound) && (first == 0 || s < first) {
				first = s
			}
		}
		return first, fmt.Sprintf("balance index: entry for the principal of txn %d missing (index tampered)", first), nil
	}
	return 0, "", nil
}

// locateAdminFault names the first record whose admin index entry is
// altered, extra or missing, with point reads.
func locateAdminFault(txn *badger.Txn, vs []segView) (uint64, string, error) {
	first, why := ^uint64(0), ""
	note := func(seq uint64, format string, args ...any) {
		if seq < first {
			first, why = seq, fmt.Sprintf(format, args...)
		}
	}
	// Every stored entry must be a copy of an admin record.
	o := badger.DefaultIteratorOptions
	o.Prefix, o.PrefetchValues = prefixAdmin, false
	it := txn.NewIterator(o)
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		if len(k) != len(prefixAdmin)+8 {
			note(0, "malformed entry %q", k)
			continue
		}
		seq := binary.BigEndian.Uint64(k[len(prefixAdmin):])
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			it.Close()
			return 0, "", err
		}
		sv, ok := findView(vs, seq)
		if !ok {
			note(seq, "entry for record %d, which does not exist", seq)
			continue
		}
		rv, err := sv.record(int(seq - sv.first))
		var r Record
		if err == nil {
			err = r.decodeBinary(rv)
		}
		switch {
		case err != nil:
			note(seq, "record %d undecodable", seq)
		case r.Type != TypeAdmin:
			note(seq, "entry for record %d, which has none", seq)
		case !bytes.Equal(v, rv):
			note(seq, "entry for record %d does not match the record", seq)
		}
	}
	it.Close()
	// Every admin record's entry must exist.
	var r Record
	for k := range vs {
		v := &vs[k]
		for i := 0; i < v.n; i++ {
			seq := v.first + uint64(i)
			if seq >= first {
				break
			}
			rv, err := v.record(i)
			if err != nil || r.decodeBinary(rv) != nil || r.Type != TypeAdmin {
				continue
			}
			if _, err := txn.Get(seqKey(prefixAdmin, seq)); errors.Is(err, badger.ErrKeyNotFound) {
				note(seq, "entry for record %d missing", seq)
			} else if err != nil {
				return 0, "", err
			}
		}
	}
	if why == "" {
		return 0, "entries do not match the chain", nil
	}
	return first, why, nil
}
