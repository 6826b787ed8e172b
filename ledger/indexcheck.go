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

// indexCheck verifies the indexes against a verified chain without
// holding either in memory: while the chain streams by in seq order it
// sums a keyed hash of every index entry the chain implies, then it sums
// the same over the entries actually stored (in key order) and compares.
// The hash key is random per check and never leaves the process, so a
// store edited beforehand cannot be crafted to give an equal sum; any
// missing, extra or altered entry changes the sum (probability of a miss
// 2^-256). Only on a mismatch does it walk the index again with point
// reads to name the first bad record.
type indexCheck struct {
	key                 [32]byte
	wantP, wantT, wantA digest
	balances            map[string]uint64 // principal -> seq of its latest balance-bearing txn
	scratchK, scratchV  []byte
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

// expect records the index entries implied by stored record r (whose
// stored form is v).
func (ix *indexCheck) expect(r *Record, v []byte) {
	ix.scratchK = appendTimeKey(ix.scratchK[:0], r.At, r.Seq)
	ix.scratchV = appendIndexValue(ix.scratchV[:0], r)
	ix.wantT.add(&ix.key, ix.scratchK, ix.scratchV)
	if r.Type == TypeAdmin {
		ix.scratchK = appendSeqKey(ix.scratchK[:0], prefixAdmin, r.Seq)
		ix.wantA.add(&ix.key, ix.scratchK, v)
	}
	if r.Principal == "" {
		return
	}
	ix.scratchK = appendPrincipalKey(ix.scratchK[:0], r.Principal, r.At, r.Seq)
	ix.wantP.add(&ix.key, ix.scratchK, v)
	if r.Type == TypeTxn && r.BalanceAfter != nil {
		ix.balances[r.Principal] = r.Seq
	}
}

// expected returns the entry index prefix implies for stored record v, or
// ok false when it implies none.
func expectedEntry(prefix []byte, v []byte) (k, ev []byte, ok bool, err error) {
	var r Record
	var prev, hash [32]byte
	if err := r.decodeBinaryHashes(v, &prev, &hash); err != nil {
		return nil, nil, false, err
	}
	if bytes.Equal(prefix, prefixTime) {
		return timeKey(r.At, r.Seq), indexValue(&r), true, nil
	}
	if bytes.Equal(prefix, prefixAdmin) {
		if r.Type != TypeAdmin {
			return nil, nil, false, nil
		}
		return seqKey(prefixAdmin, r.Seq), v, true, nil
	}
	if r.Principal == "" {
		return nil, nil, false, nil
	}
	return principalKey(r.Principal, r.At, r.Seq), v, true, nil
}

// check compares the stored indexes with what expect saw. It returns the
// first record whose index entries are wrong and why, or reason "" when
// all agree; err is a store error.
func (ix *indexCheck) check(txn *badger.Txn) (seq uint64, reason string, err error) {
	for _, idx := range []struct {
		prefix []byte
		name   string
		want   *digest
	}{{prefixPrincipal, "principal", &ix.wantP}, {prefixTime, "time", &ix.wantT}, {prefixAdmin, "admin", &ix.wantA}} {
		var got digest
		o := badger.DefaultIteratorOptions
		o.Prefix, o.PrefetchValues = idx.prefix, false
		it := txn.NewIterator(o)
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error { got.add(&ix.key, item.Key(), v); return nil }); err != nil {
				it.Close()
				return 0, "", err
			}
		}
		it.Close()
		if got.sum != idx.want.sum {
			seq, why, err := locateIndexFault(txn, idx.prefix)
			if err != nil {
				return 0, "", err
			}
			return seq, fmt.Sprintf("%s index: %s (index tampered)", idx.name, why), nil
		}
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

// locateIndexFault names the first record whose entry in the index under
// prefix is altered, extra or missing, with point reads.
func locateIndexFault(txn *badger.Txn, prefix []byte) (uint64, string, error) {
	first, why := ^uint64(0), ""
	note := func(seq uint64, format string, args ...any) {
		if seq < first {
			first, why = seq, fmt.Sprintf(format, args...)
		}
	}
	// Every stored entry must be the one its record implies.
	o := badger.DefaultIteratorOptions
	o.Prefix, o.PrefetchValues = prefix, false
	it := txn.NewIterator(o)
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		minLen := len(prefix) + 16
		if bytes.Equal(prefix, prefixAdmin) {
			minLen = len(prefix) + 8
		}
		if len(k) < minLen {
			note(0, "malformed entry %q", k)
			continue
		}
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			it.Close()
			return 0, "", err
		}
		rec, err := txn.Get(seqKey(prefixRecord, seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			note(seq, "entry for record %d, which does not exist", seq)
			continue
		}
		if err != nil {
			it.Close()
			return 0, "", err
		}
		rv, err := rec.ValueCopy(nil)
		if err != nil {
			it.Close()
			return 0, "", err
		}
		wk, wv, ok, err := expectedEntry(prefix, rv)
		switch {
		case err != nil:
			note(seq, "record %d undecodable", seq)
		case !ok:
			note(seq, "entry for record %d, which has none", seq)
		case !bytes.Equal(k, wk):
			note(seq, "entry for record %d under the wrong key", seq)
		case !bytes.Equal(v, wv):
			note(seq, "entry for record %d does not match the record", seq)
		}
	}
	it.Close()
	// Every record's entry must exist.
	o.Prefix = prefixRecord
	it = txn.NewIterator(o)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return 0, "", err
		}
		wk, _, ok, err := expectedEntry(prefix, v)
		if err != nil || !ok {
			continue
		}
		seq := binary.BigEndian.Uint64(wk[len(wk)-8:])
		if seq >= first {
			break
		}
		if _, err := txn.Get(wk); errors.Is(err, badger.ErrKeyNotFound) {
			note(seq, "entry for record %d missing", seq)
			break
		} else if err != nil {
			return 0, "", err
		}
	}
	if why == "" {
		return 0, "entries do not match the chain", nil
	}
	return first, why, nil
}
