package ledger

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Export writes, as JSON lines, the records with Since <= At < Until (zero
// = unbounded) in seq order, each stored checkpoint right after the record
// it covers, and last a fresh checkpoint signed over the last exported
// record, so a file cut short is detected. An export is one contiguous seq
// range, from the smallest to the largest seq in the time range: if clocks
// stepped back, a few records just outside the range are included so the
// chain stays unbroken. Record lines are the records' JSON (see Record.AppendJSON);
// checkpoint lines are {"type":"checkpoint","seq","hash","at","count","sig"}.
// An empty range writes nothing.
//
// Export verifies what it copies, and the records after the range up to
// the next stored checkpoint or the applied head, before signing: it returns an error wrapping
// ErrTampered rather than sign a chain that does not verify. On a
// writable ledger it first applies everything acknowledged and commits a
// checkpoint over that head; records acknowledged after Export started
// are left out. Errors from
// w are returned wrapped.
func (l *Ledger) Export(w io.Writer, since, until time.Time) error {
	if l.roJournalLast != 0 {
		return fmt.Errorf("export: %w (records %d..%d)", ErrJournalPending, l.roJournalFirst, l.roJournalLast)
	}
	if err := l.checkpointNow(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	// The applied head as the writer computed it: trusted, and inside
	// the snapshot taken below. Records applied later are not exported.
	headSeq, headHash := l.appliedHead()
	vs := l.st.snapshot(listSel{want: !since.IsZero() || !until.IsZero()})
	lo, hi, ok := seqRange(vs, since, until)
	if !ok {
		return nil
	}
	if !l.readOnly {
		if lo > headSeq {
			return nil
		}
		hi = min(hi, headSeq)
	}
	return l.db.View(func(txn *badger.Txn) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		c := &chain{pub: l.pub, rep: Report{OK: true}}

		co := badger.DefaultIteratorOptions
		co.Prefix, co.PrefetchValues = prefixCheckpoint, false
		ci := txn.NewIterator(co)
		defer ci.Close()
		ci.Seek(seqKey(prefixCheckpoint, lo))

		var line []byte
		var hiHash [32]byte
		anchored := false // a checkpoint at or after hi verified
		start, ok := findView(vs, lo)
		if !ok {
			return fmt.Errorf("export: %w: record %d missing", ErrTampered, lo)
		}
		k := 0
		for ; &vs[k] != start; k++ {
		}
		for ; k < len(vs) && !anchored; k++ {
			v := &vs[k]
			if c.started && v.first != c.seq+1 {
				return fmt.Errorf("export: %w: record %d missing", ErrTampered, c.seq+1)
			}
			i := 0
			if !c.started {
				i = int(lo - v.first)
			}
			for ; i < v.n && !anchored; i++ {
				ks := v.first + uint64(i)
				b, err := v.record(i)
				if err != nil {
					return fmt.Errorf("export: %w: record %d undecodable", ErrTampered, ks)
				}
				if !c.started {
					var r Record
					var prev, self [32]byte
					if err := r.decodeBinaryHashes(b, &prev, &self); err != nil {
						return fmt.Errorf("export: %w: record %d undecodable", ErrTampered, ks)
					}
					c.anchor(lo-1, prev)
				}
				if !c.stored(b, 0) {
					return fmt.Errorf("export: %w: %s", ErrTampered, c.rep.Reason)
				}
				inRange := ks <= hi
				if inRange {
					line = c.r.appendJSONHashes(line[:0], &c.prev, &c.self)
					bw.Write(append(line, '\n'))
				}
				for ; ci.Valid(); ci.Next() {
					s := binary.BigEndian.Uint64(ci.Item().Key()[len(prefixCheckpoint):])
					if s > ks {
						break
					}
					raw, err := ci.Item().ValueCopy(nil)
					if err != nil {
						return err
					}
					cp, err := decodeCheckpoint(raw)
					if err != nil || !c.checkpoint(cp) {
						return fmt.Errorf("export: %w: checkpoint %d: %s", ErrTampered, s, c.rep.Reason)
					}
					if inRange {
						line = cp.appendJSON(line[:0])
						bw.Write(append(line, '\n'))
					}
					if s >= hi {
						anchored = true
					}
				}
				if ks == hi {
					hiHash = c.hash
				}
				if !l.readOnly && ks == headSeq {
					if c.hash != headHash {
						return fmt.Errorf("export: %w: record %d differs from the head the writer committed", ErrTampered, ks)
					}
					anchored = true
				}
			}
		}
		if c.seq < hi {
			return fmt.Errorf("export: %w: record %d missing", ErrTampered, c.seq+1)
		}
		// A stopped data dir may end without a checkpoint after a crash;
		// read-only exports then sign the verified links up to hi.
		if !anchored && !l.readOnly {
			return fmt.Errorf("export: %w: records after %d are not covered by a checkpoint", ErrTampered, c.goodCP)
		}
		fresh := l.cp.sign(hi, hiHash)
		line = fresh.appendJSON(line[:0])
		bw.Write(append(line, '\n'))
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("export: write: %w", err)
		}
		return nil
	})
}

// seqRange returns the smallest and largest seq with since <= At < until
// among the views (which carry the time lists when a bound is set).
func seqRange(vs []segView, since, until time.Time) (lo, hi uint64, ok bool) {
	if len(vs) == 0 {
		return 0, 0, false
	}
	if since.IsZero() && until.IsZero() {
		return vs[0].first, vs[len(vs)-1].last(), true
	}
	a, b := int64(math.MinInt64), int64(math.MaxInt64)
	if !since.IsZero() {
		a = since.UnixNano()
	}
	if !until.IsZero() {
		b = until.UnixNano()
	}
	for k := range vs {
		v := &vs[k]
		for _, list := range v.lists {
			p := sort.Search(len(list), func(p int) bool { return v.ats[list[p]] >= a })
			q := sort.Search(len(list), func(p int) bool { return v.ats[list[p]] >= b })
			for _, i := range list[p:q] {
				s := v.first + uint64(i)
				if !ok || s < lo {
					lo = s
				}
				if !ok || s > hi {
					hi = s
				}
				ok = true
			}
		}
	}
	return lo, hi, ok
}

// VerifyExport checks an export file offline against the published key
// pub: the first record's prev is taken as the anchor, then every later
// link, seq continuity, canonical encoding, every checkpoint's signature
// and hash, and that the file ends with a checkpoint over its last record
// (so a truncated file fails). A file without records fails.
func VerifyExport(r io.Reader, pub ed25519.PublicKey) Report {
	c := &chain{pub: pub, rep: Report{OK: true}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	lastWasCP := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		switch {
		case bytes.HasPrefix(line, []byte(`{"type":"checkpoint",`)):
			cp, err := decodeCheckpoint(line)
			if err != nil {
				c.fail(c.goodCP+1, "line %d: undecodable checkpoint: %v", n, err)
				return c.rep
			}
			if !c.started {
				c.fail(cp.Seq, "line %d: checkpoint before any record", n)
				return c.rep
			}
			if !c.checkpoint(cp) {
				return c.rep
			}
			lastWasCP = true
		case bytes.HasPrefix(line, []byte(`{"seq":`)):
			if !c.started {
				var rec Record
				if err := rec.UnmarshalJSON(line); err != nil || rec.Seq == 0 {
					c.fail(1, "line %d: undecodable first record", n)
					return c.rep
				}
				prev, ok := parseHash(rec.Prev)
				if !ok {
					c.fail(rec.Seq, "line %d: first record has a malformed prev", n)
					return c.rep
				}
				c.anchor(rec.Seq-1, prev)
			}
			if !c.record(line, 0) {
				return c.rep
			}
			lastWasCP = false
		default:
			c.fail(c.seq+1, "line %d: neither a record nor a checkpoint", n)
			return c.rep
		}
	}
	if err := sc.Err(); err != nil {
		c.fail(c.seq+1, "read: %v", err)
		return c.rep
	}
	if c.rep.Records == 0 {
		c.fail(0, "export holds no records")
		return c.rep
	}
	if !lastWasCP {
		c.fail(c.goodCP+1, "export truncated: records after %d are not covered by a checkpoint", c.goodCP)
	}
	return c.rep
}
