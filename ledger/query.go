package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
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
// first or newest first with Desc. It walks the segments' principal
// lists when q.Principal is set and their time order otherwise (merged
// across segments, restricted to the time range by binary search), and
// reads each record in place from its mapped segment, filtering on its
// first fields, so it never scans the whole log. It reads one consistent
// snapshot: records acknowledged after it started are left out. fn must not keep the record
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
	if err := l.waitApplied(); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.Since.IsZero() {
		lo = q.Since.UnixNano()
	}
	if !q.Until.IsZero() {
		hi = q.Until.UnixNano()
	}
	vs := l.st.snapshot(listSel{want: true, principal: q.Principal})
	m := newMerge(vs, lo, hi, q.Desc)
	n := 0
	for {
		v, i, ok := m.next()
		if !ok {
			return nil
		}
		l.opts.hooks.scan()
		b, err := v.record(int(i))
		if err != nil {
			return fmt.Errorf("query: record %d: %w", v.first+uint64(i), err)
		}
		typ, outcome, tool, ok := binaryFilter(b)
		if !ok {
			return fmt.Errorf("query: record %d: %w", v.first+uint64(i), errBinary)
		}
		if !q.match(typ, outcome, tool) {
			continue
		}
		if err := fn(b); err != nil {
			return err
		}
		if n++; q.Limit > 0 && n >= q.Limit {
			return nil
		}
	}
}

// merge walks sorted lists of record numbers of several segments in
// (At, seq) order (or its reverse), restricted to lo <= At < hi: a heap
// of cursors, one per list.
type merge struct {
	h    []cursor
	desc bool
}

type cursor struct {
	v    *segView
	list []uint32
	pos  int // next index into list
	stop int // pos when done (past the end, or before the start for desc)
	at   int64
	seq  uint64
}

func newMerge(vs []segView, lo, hi int64, desc bool) *merge {
	m := &merge{desc: desc}
	for k := range vs {
		v := &vs[k]
		for _, list := range v.lists {
			ats := v.ats
			a := sort.Search(len(list), func(p int) bool { return ats[list[p]] >= lo })
			b := sort.Search(len(list), func(p int) bool { return ats[list[p]] >= hi })
			if a >= b {
				continue
			}
			c := cursor{v: v, list: list, pos: a, stop: b}
			if desc {
				c.pos, c.stop = b-1, a-1
			}
			c.load()
			m.h = append(m.h, c)
		}
	}
	for k := len(m.h)/2 - 1; k >= 0; k-- {
		m.down(k)
	}
	return m
}

func (c *cursor) load() {
	i := c.list[c.pos]
	c.at, c.seq = c.v.ats[i], c.v.first+uint64(i)
}

// before reports whether cursor a's entry comes before b's.
func (m *merge) before(a, b *cursor) bool {
	less := a.at < b.at || a.at == b.at && a.seq < b.seq
	return less != m.desc
}

func (m *merge) down(k int) {
	n := len(m.h)
	for {
		c := 2*k + 1
		if c >= n {
			return
		}
		if c+1 < n && m.before(&m.h[c+1], &m.h[c]) {
			c++
		}
		if !m.before(&m.h[c], &m.h[k]) {
			return
		}
		m.h[k], m.h[c] = m.h[c], m.h[k]
		k = c
	}
}

// next returns the next record (its view and number), or false.
func (m *merge) next() (*segView, uint32, bool) {
	if len(m.h) == 0 {
		return nil, 0, false
	}
	c := &m.h[0]
	v, i := c.v, c.list[c.pos]
	if m.desc {
		c.pos--
	} else {
		c.pos++
	}
	if c.pos == c.stop {
		last := len(m.h) - 1
		m.h[0] = m.h[last]
		m.h = m.h[:last]
	} else {
		c.load()
	}
	if len(m.h) > 0 {
		m.down(0)
	}
	return v, i, true
}

// LatestBalances calls fn, in principal order, once for each principal
// that has a "txn" record with BalanceAfter set, with the BalanceAfter of
// its latest such record (highest seq). It reads one small badger index
// (l/b/, written by the applier with the record's other entries) plus one
// record per principal, so a restart rebuilds prepaid balances without
// walking the log. It may run beside Append. An index entry that does not
// lead to a matching record is reported as an error wrapping ErrTampered;
// an error from fn stops the walk and is returned unchanged.
func (l *Ledger) LatestBalances(fn func(principal string, balance money.Micros) error) error {
	if err := l.waitApplied(); err != nil {
		return fmt.Errorf("latest balances: %w", err)
	}
	vs := l.st.snapshot(listSel{})
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
			v, ok := findView(vs, seq)
			if !ok {
				return fmt.Errorf("latest balances: %w: balance index for %q names missing record %d", ErrTampered, principal, seq)
			}
			b, err := v.record(int(seq - v.first))
			if err == nil {
				err = r.decodeBinary(b)
			}
			if err != nil {
				return fmt.Errorf("latest balances: record %d: %w", seq, err)
			}
			if r.Seq != seq || r.Type != TypeTxn || r.BalanceAfter == nil || r.Principal != principal {
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
func (l *Ledger) AdminRecords(fn func(*Record) error) error { return l.AdminRecordsAfter(0, fn) }

// AdminRecordsAfter is AdminRecords restricted to the admin records with
// a seq above after: it seeks the admin index to after+1, so it reads
// only those.
func (l *Ledger) AdminRecordsAfter(after uint64, fn func(*Record) error) error {
	if err := l.waitApplied(); err != nil {
		return fmt.Errorf("admin records: %w", err)
	}
	vs := l.st.snapshot(listSel{})
	return l.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefixAdmin
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		var scratch []byte
		if after == math.MaxUint64 {
			return nil
		}
		from := prefixAdmin
		if after > 0 {
			from = binary.BigEndian.AppendUint64(append([]byte(nil), prefixAdmin...), after+1)
		}
		for it.Seek(from); it.Valid(); it.Next() {
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
			sv, ok := findView(vs, seq)
			if !ok {
				return fmt.Errorf("admin records: %w: index names missing record %d", ErrTampered, seq)
			}
			var r Record
			var prev, self [32]byte
			err = func() error {
				rv, err := sv.record(int(seq - sv.first))
				if err != nil {
					return fmt.Errorf("admin records: %w: record %d undecodable", ErrTampered, seq)
				}
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
			}()
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

// RecordHash returns the hex hash of record seq as the chain stores it,
// after checking the record's hash against its contents (an error
// wrapping ErrTampered if they differ); ok is false when the ledger holds
// no record seq. It first waits until every acknowledged record is
// applied, like Query.
func (l *Ledger) RecordHash(seq uint64) (hash string, ok bool, err error) {
	if err := l.waitApplied(); err != nil {
		return "", false, fmt.Errorf("record hash: %w", err)
	}
	b, ok, err := l.st.lookup(seq)
	if !ok || err != nil {
		return "", ok, err
	}
	var r Record
	var prev, self [32]byte
	if err := r.decodeBinaryHashes(b, &prev, &self); err != nil || r.Seq != seq {
		return "", true, fmt.Errorf("record hash: %w: record %d undecodable", ErrTampered, seq)
	}
	if _, h := hashRecord(nil, &prev, &r); h != self {
		return "", true, fmt.Errorf("record hash: %w: record %d: hash does not match its contents", ErrTampered, seq)
	}
	return hex.EncodeToString(self[:]), true, nil
}
