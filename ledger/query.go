package ledger

import (
	"bytes"
	"encoding/binary"
	"time"

	badger "github.com/dgraph-io/badger/v4"
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
// It reads one consistent snapshot. fn must not keep the record after it
// returns; an error from fn stops the query and is returned unchanged.
func (l *Ledger) Query(q Query, fn func(*Record) error) error {
	var r Record
	return l.QueryRaw(q, func(raw []byte) error {
		if err := r.UnmarshalJSON(raw); err != nil {
			return err
		}
		return fn(&r)
	})
}

// QueryRaw is Query with each record given as its stored JSON (the form
// MarshalJSON writes, one line without newline), for streaming to clients
// without decoding. raw is valid only until fn returns.
func (l *Ledger) QueryRaw(q Query, fn func(raw []byte) error) error {
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
	return l.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix, o.PrefetchValues, o.Reverse = prefix, false, q.Desc
		it := txn.NewIterator(o)
		defer it.Close()
		var buf []byte
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
			l.scanned.Add(1)
			if len(k) != len(prefix)+16 {
				continue
			}
			var match bool
			err := item.Value(func(v []byte) error {
				match = q.matchIndex(v)
				return nil
			})
			if err != nil {
				return err
			}
			if !match {
				continue
			}
			rec, err := txn.Get(seqKey(prefixRecord, binary.BigEndian.Uint64(k[len(k)-8:])))
			if err != nil {
				return err
			}
			if buf, err = rec.ValueCopy(buf[:0]); err != nil {
				return err
			}
			if err := fn(buf); err != nil {
				return err
			}
			if n++; q.Limit > 0 && n >= q.Limit {
				return nil
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
	return (q.Type == "" || string(typ) == q.Type) &&
		(q.Outcome == "" || string(outcome) == q.Outcome) &&
		(q.ExcludeOutcome == "" || string(outcome) != q.ExcludeOutcome) &&
		(q.Tool == "" || string(tool) == q.Tool)
}
