package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/money"
)

// Query selects records through an index. The zero Query selects every
// record, oldest first.
type Query struct {
	Principal      string    // only this principal's records (principal index); "" = all (time index)
	Since          time.Time // At >= Since; zero = unbounded
	Until          time.Time // At < Until; zero = unbounded
	Type           string    // "call" or "txn"; "" = both
	Outcome        string    // only this outcome
	ExcludeOutcome string    // all but this outcome (recent denials: Type "call", ExcludeOutcome "allowed")
	Tool           string    // only this tool
	Limit          int       // at most this many records; 0 = no limit
	Desc           bool      // newest first
}

// Query calls fn for each record matching q, ordered by (At, Seq), oldest
// first or newest first with Desc. It walks the principal index when
// q.Principal is set and the time index otherwise, filters on the index
// entry and reads only matching records, so it never scans the whole log.
// A principal query reads the records from the index itself (each entry
// holds a copy); a time query reads them from l/r/ in near-sequential
// order. It reads one consistent snapshot. fn must not keep the record
// (it is reused for the next one; copying it, *r, is fine); an error from
// fn stops the query and is returned unchanged.
func (l *Ledger) Query(q Query, fn func(*Record) error) error {
	var r Record
	return l.scan(q, func(v []byte) error {
		if err := r.decodeBinary(v); err != nil {
			return fmt.Errorf("query: %w", err)
		}
		return fn(&r)
	})
}

// QueryRaw is Query with each record given as its JSON (the form
// MarshalJSON writes, one line without newline), for streaming to clients
// without building Records. raw is valid only until fn returns.
func (l *Ledger) QueryRaw(q Query, fn func(raw []byte) error) error {
	var r Record
	var prev, hash [32]byte
	var buf []byte
	return l.scan(q, func(v []byte) error {
		if err := r.decodeBinaryHashes(v, &prev, &hash); err != nil {
			return fmt.Errorf("query: %w", err)
		}
		buf = r.appendJSONHashes(buf[:0], &prev, &hash)
		return fn(buf)
	})
}

// scan calls fn with the stored form of each record matching q; v is
// valid only until fn returns.
func (l *Ledger) scan(q Query, fn func(v []byte) error) error {
	prefix := prefixTime
	if q.Principal != "" {
		prefix = principalPrefix(q.Principal)
	}
	lo := append([]byte{}, prefix...)
	if !q.Since.IsZero() {
		lo = appendTime(lo, q.Since)
	}
	hi := append([]byte{}, prefix...)
	if !q.Until.IsZero() {
		hi = appendTime(hi, q.Until)
	} else {
		hi = append(hi, bytes.Repeat([]byte{0xff}, 17)...)
	}
	if err := l.waitApplied(); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	return l.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix, o.PrefetchValues, o.Reverse = prefix, false, q.Desc
		it := txn.NewIterator(o)
		defer it.Close()
		var rc *recordCursor
		if q.Principal == "" {
			rc = newRecordCursor(txn, q.Desc)
			defer rc.close()
		}
		n := 0
		if q.Desc {
			it.Seek(hi)
		} else {
			it.Seek(lo)
		}
		for ; it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			k := item.Key()
			if q.Desc && bytes.Compare(k, lo) < 0 || !q.Desc && bytes.Compare(k, hi) >= 0 {
				break
			}
			l.opts.hooks.scan()
			if len(k) != len(prefix)+16 {
				continue
			}
			var match bool
			err := item.Value(func(v []byte) error {
				if rc != nil {
					match = q.matchIndex(v)
					return nil
				}
				typ, outcome, tool, ok := binaryFilter(v)
				if !ok {
					return fmt.Errorf("query: principal index entry %x: %w", k, errBinary)
				}
				if match = q.match(typ, outcome, tool); match {
					return fn(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if !match {
				continue
			}
			if rc != nil {
				if err := rc.get(binary.BigEndian.Uint64(k[len(k)-8:]), fn); err != nil {
					return err
				}
			}
			if n++; q.Limit > 0 && n >= q.Limit {
				return nil
			}
		}
		return nil
	})
}

// recordCursor reads records by seq through one iterator: when the wanted
// seq follows the current one (time order is nearly seq order) it steps
// instead of seeking.
type recordCursor struct {
	it   *badger.Iterator
	desc bool
	key  []byte
}

func newRecordCursor(txn *badger.Txn, desc bool) *recordCursor {
	o := badger.DefaultIteratorOptions
	o.Prefix, o.PrefetchValues, o.Reverse = prefixRecord, false, desc
	return &recordCursor{it: txn.NewIterator(o), desc: desc}
}

func (c *recordCursor) close() { c.it.Close() }

func (c *recordCursor) get(seq uint64, fn func(v []byte) error) error {
	c.key = appendSeqKey(c.key[:0], prefixRecord, seq)
	found := false
	if c.it.Valid() {
		cmp := bytes.Compare(c.it.Item().Key(), c.key)
		if cmp != 0 && (cmp < 0) != c.desc {
			c.it.Next()
			cmp = 1
			if c.it.Valid() {
				cmp = bytes.Compare(c.it.Item().Key(), c.key)
			}
		}
		found = cmp == 0
	}
	if !found {
		c.it.Seek(c.key)
		if !c.it.Valid() || !bytes.Equal(c.it.Item().Key(), c.key) {
			return fmt.Errorf("query: record %d: %w", seq, badger.ErrKeyNotFound)
		}
	}
	return c.it.Item().Value(fn)
}

// LatestBalances calls fn, in principal order, once for each principal
// that has a "txn" record with BalanceAfter set, with the BalanceAfter of
// its latest such record (highest seq). It reads one small index (l/b/,
// written in the same transaction as the record) plus one record per
// principal, so a restart rebuilds prepaid balances without walking the
// log. It reads one consistent snapshot and may run beside Append. An
// index entry that does not lead to a matching record is reported as an
// error wrapping ErrTampered; an error from fn stops the walk and is
// returned unchanged.
func (l *Ledger) LatestBalances(fn func(principal string, balance money.Micros) error) error {
	if err := l.waitApplied(); err != nil {
		return fmt.Errorf("latest balances: %w", err)
	}
	return l.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix, o.PrefetchValues = prefixBalance, false
		it := txn.NewIterator(o)
		defer it.Close()
		var r Record
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			principal := string(item.Key()[len(prefixBalance):])
			var seq uint64
			err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("latest balances: %w: balance index for %q malformed", ErrTampered, principal)
				}
				seq = binary.BigEndian.Uint64(v)
				return nil
			})
			if err != nil {
				return err
			}
			rec, err := txn.Get(seqKey(prefixRecord, seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("latest balances: %w: balance index for %q names missing record %d", ErrTampered, principal, seq)
			}
			if err != nil {
				return fmt.Errorf("latest balances: %w", err)
			}
			if err := rec.Value(r.decodeBinary); err != nil {
				return fmt.Errorf("latest balances: record %d: %w", seq, err)
			}
			if r.Type != TypeTxn || r.BalanceAfter == nil || r.Principal != principal {
				return fmt.Errorf("latest balances: %w: balance index for %q names record %d, which is not its balance", ErrTampered, principal, seq)
			}
			if err := fn(principal, *r.BalanceAfter); err != nil {
				return err
			}
		}
		return nil
	})
}

// matchIndex applies the filters to an index value (type NUL outcome NUL
// tool).
func (q *Query) matchIndex(v []byte) bool {
	typ, rest, _ := bytes.Cut(v, []byte{0})
	outcome, tool, _ := bytes.Cut(rest, []byte{0})
	return q.match(typ, outcome, tool)
}

func (q *Query) match(typ, outcome, tool []byte) bool {
	return (q.Type == "" || string(typ) == q.Type) &&
		(q.Outcome == "" || string(outcome) == q.Outcome) &&
		(q.ExcludeOutcome == "" || string(outcome) != q.ExcludeOutcome) &&
		(q.Tool == "" || string(tool) == q.Tool)
}

// AdminRecords calls fn with every admin record (TypeAdmin), in seq
// order, read through the admin index. Each index entry must equal its
// record byte for byte and the record's hash must match its contents,
// else the walk stops with an error wrapping ErrTampered (Verify checks
// the whole chain and that no entry is missing). It first waits until
// every acknowledged record is applied, like Query. fn owns the Record it
// is given; an error from fn stops the walk and is returned unchanged.
func (l *Ledger) AdminRecords(fn func(*Record) error) error {
	if err := l.waitApplied(); err != nil {
		return fmt.Errorf("admin records: %w", err)
	}
	return l.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefixAdmin
		it := txn.NewIterator(o)
		defer it.Close()
		var scratch []byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != len(prefixAdmin)+8 {
				return fmt.Errorf("admin records: %w: malformed index key %q", ErrTampered, k)
			}
			seq := binary.BigEndian.Uint64(k[len(prefixAdmin):])
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("admin records: %w", err)
			}
			rec, err := txn.Get(seqKey(prefixRecord, seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("admin records: %w: index names missing record %d", ErrTampered, seq)
			}
			if err != nil {
				return fmt.Errorf("admin records: %w", err)
			}
			var r Record
			var prev, self [32]byte
			err = rec.Value(func(rv []byte) error {
				if !bytes.Equal(rv, v) {
					return fmt.Errorf("admin records: %w: index entry of record %d does not match it", ErrTampered, seq)
				}
				if err := r.decodeBinaryHashes(rv, &prev, &self); err != nil || r.Seq != seq || r.Type != TypeAdmin {
					return fmt.Errorf("admin records: %w: record %d undecodable or not an admin record", ErrTampered, seq)
				}
				var h [32]byte
				scratch, h = hashRecord(scratch, &prev, &r)
				if h != self {
					return fmt.Errorf("admin records: %w: record %d: hash does not match its contents", ErrTampered, seq)
				}
				return nil
			})
			if err != nil {
				return err
			}
			r.Prev, r.Hash = hex.EncodeToString(prev[:]), hex.EncodeToString(self[:])
			if err := fn(&r); err != nil {
				return err
			}
		}
		return nil
	})
}
