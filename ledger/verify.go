package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Report is the result of a verification. When OK is false, FirstBadSeq is
// the first record the chain can no longer vouch for and Reason says why.
// Records and Checkpoints count what was checked before the failure.
type Report struct {
	OK          bool   `json:"ok"`
	Records     int    `json:"records"`
	Checkpoints int    `json:"checkpoints"`
	FirstBadSeq uint64 `json:"first_bad_seq,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// JournalRecords, on a read-only ledger opened after a crash, counts
	// the records (included in Records) that only the journal holds: each
	// checked for its seq, prev link, hash and encoding, but not yet
	// covered by a checkpoint (the next start applies and covers them).
	JournalRecords int `json:"journal_records,omitempty"`
	// Uncovered counts the records after the newest checkpoint, vouched
	// for by the hash chain only until the next one. It is 0 online and
	// after a clean stop (both checkpoint the head first).
	Uncovered int `json:"uncovered_records,omitempty"`
}

// chain checks records and checkpoints as they stream by, in seq order.
type chain struct {
	pub     ed25519.PublicKey
	started bool
	seq     uint64 // last record checked
	hash    [32]byte
	goodCP  uint64 // last checkpoint that verified
	rep     Report
	scratch []byte

	// The last stored record checked by stored, decoded.
	r          Record
	prev, self [32]byte
}

func (c *chain) fail(seq uint64, format string, args ...any) bool {
	c.rep.OK = false
	c.rep.FirstBadSeq = seq
	c.rep.Reason = fmt.Sprintf(format, args...)
	return false
}

// anchor starts the chain at prev (the hash before the first record).
func (c *chain) anchor(seq uint64, prev [32]byte) {
	c.started, c.seq, c.hash, c.goodCP = true, seq, prev, seq
}

// position checks that keySeq (0 when unkeyed) is the next seq.
func (c *chain) position(keySeq uint64) bool {
	want := c.seq + 1
	if keySeq != 0 && keySeq != want {
		if keySeq > want {
			return c.fail(want, "record %d missing (next stored record is %d)", want, keySeq)
		}
		return c.fail(want, "record key %d out of order", keySeq)
	}
	return true
}

// record checks one exported record line: its position, its canonical
// encoding and its link. keySeq is the seq its key says (or 0 when
// unkeyed).
func (c *chain) record(raw []byte, keySeq uint64) bool {
	want := c.seq + 1
	if !c.position(keySeq) {
		return false
	}
	var r Record
	if err := r.UnmarshalJSON(raw); err != nil {
		return c.fail(want, "record %d: undecodable: %v", want, err)
	}
	if r.Seq != want {
		return c.fail(want, "record %d: seq field says %d (records missing, reordered or swapped)", want, r.Seq)
	}
	c.scratch = r.appendCanonical(c.scratch[:0])
	canon := c.scratch
	if !bytes.HasPrefix(raw, canon[:len(canon)-1]) || !bytes.Equal(raw[len(canon)-1:], []byte(`,"prev":"`+r.Prev+`","hash":"`+r.Hash+`"}`)) {
		return c.fail(want, "record %d: not in canonical form (edited)", want)
	}
	if r.Prev != hex.EncodeToString(c.hash[:]) {
		return c.fail(want, "record %d: prev does not match the hash of record %d (records missing, reordered or rewritten)", want, want-1)
	}
	h := chainHash(c.hash, canon)
	if r.Hash != hex.EncodeToString(h[:]) {
		return c.fail(want, "record %d: hash does not match its contents (edited)", want)
	}
	c.seq, c.hash = want, h
	c.rep.Records++
	return true
}

// stored checks one stored record (the binary form) like record does,
// and leaves it decoded in c.r, c.prev and c.self.
func (c *chain) stored(v []byte, keySeq uint64) bool {
	want := c.seq + 1
	if !c.position(keySeq) {
		return false
	}
	if err := c.r.decodeBinaryHashes(v, &c.prev, &c.self); err != nil {
		return c.fail(want, "record %d: undecodable (edited): %v", want, err)
	}
	if c.r.Seq != want {
		return c.fail(want, "record %d: seq field says %d (records missing, reordered or swapped)", want, c.r.Seq)
	}
	if c.prev != c.hash {
		return c.fail(want, "record %d: prev does not match the hash of record %d (records missing, reordered or rewritten)", want, want-1)
	}
	var h [32]byte
	c.scratch, h = hashRecord(c.scratch, &c.hash, &c.r)
	if h != c.self {
		return c.fail(want, "record %d: hash does not match its contents (edited)", want)
	}
	c.seq, c.hash = want, h
	c.rep.Records++
	return true
}

// checkpoint checks a checkpoint against the record last checked, which
// must be the one it covers.
func (c *chain) checkpoint(cp Checkpoint) bool {
	if !cp.Valid(c.pub) {
		return c.fail(c.goodCP+1, "checkpoint at seq %d: signature does not verify (forged or re-signed)", cp.Seq)
	}
	if cp.Seq != c.seq || c.seq == 0 {
		if cp.Seq > c.seq {
			return c.fail(c.seq+1, "checkpoint at seq %d but the chain ends at %d (records truncated or deleted)", cp.Seq, c.seq)
		}
		return c.fail(cp.Seq, "checkpoint at seq %d out of place", cp.Seq)
	}
	if cp.Hash != hex.EncodeToString(c.hash[:]) {
		return c.fail(c.goodCP+1, "checkpoint at seq %d does not match the chain: records %d..%d were rewritten", cp.Seq, c.goodCP+1, cp.Seq)
	}
	c.goodCP = cp.Seq
	c.rep.Checkpoints++
	return true
}

// Verify recomputes the stored chain from seq 1: each segment's frames
// and their checksums, each record's position, encoding, prev link and
// hash, seq gap-freeness across segments, and every checkpoint's
// signature and agreement with the chain. A non-empty chain without any
// checkpoint fails (it could be a forgery with the checkpoints removed).
// When the chain verifies, it then checks the indexes against it: each
// sealed segment's index file must be the one its records imply (it is
// rebuilt and compared byte for byte), the active segment's index in
// memory likewise, every admin index entry must be a byte-exact copy of
// its record, none may be missing or extra, and each principal's balance
// index entry must name its latest balance-bearing txn; a query or
// restart could otherwise be fed records the chain does not vouch for.
// On a writable ledger Verify first journals what is pending, waits until
// the applier has applied it and commits a checkpoint over that head, so
// records appended so far are covered; that checkpoint signs the hash
// the writer computed, never one read back from disk. Deleting the newest
// records together with their checkpoints cannot be detected from the
// store alone; compare with an export or a published checkpoint. Verify
// reads one consistent snapshot and may run beside Append.
//
// On a read-only ledger opened after a crash, the records after
// l/applied (whose badger entries and checkpoint the next start writes)
// are counted in JournalRecords too.
func (l *Ledger) Verify() Report {
	if err := l.checkpointNow(); err != nil {
		return Report{Reason: err.Error()}
	}
	// A crash before the first checkpoint leaves a chain without one; it
	// is accepted only on a read-only ledger that found the marks of a
	// crash (a clean stop writes a checkpoint and seals the last segment).
	// Records after l/applied (read-only, after a crash) have no badger
	// entries yet: the badger indexes are checked up to it.
	applied := ^uint64(0)
	if l.roJournalFirst != 0 {
		applied = l.roJournalFirst - 1
	}
	rep := verifyStore(l.db, func() []segView { return l.st.snapshot(listSel{}) }, l.pub, l.readOnly && l.crashed, applied)
	if rep.OK && l.roJournalLast != 0 {
		rep.JournalRecords = int(l.roJournalLast - l.roJournalFirst + 1)
	}
	return rep
}

// verifyStore checks the records of the segments snap returns against the
// checkpoints and indexes in db. snap is taken inside the badger read
// transaction, after it began: a checkpoint or index entry is written
// only after its records are in their segment, so every one the
// transaction sees refers to records the snapshot holds, while records
// appended meanwhile may be in the snapshot with their checkpoint not
// yet seen (taken the other way round, a concurrent append's checkpoint
// read as "the chain ends before it": a truncation).
func verifyStore(db *badger.DB, snap func() []segView, pub ed25519.PublicKey, crashedBeforeCheckpoint bool, applied uint64) Report {
	c := &chain{pub: pub, rep: Report{OK: true}}
	c.anchor(0, zeroHash)
	ix := newIndexCheck()
	err := db.View(func(txn *badger.Txn) error {
		// The indexes are checked up to what the applier had applied when
		// the transaction began: records journaled since have no entries in
		// it yet (l/applied is written in the applier's last transaction).
		if it, err := txn.Get(keyApplied); err == nil {
			if v, err := it.ValueCopy(nil); err == nil && len(v) == 8 {
				applied = min(applied, binary.BigEndian.Uint64(v))
			}
		}
		vs := snap()
		co := badger.DefaultIteratorOptions
		co.Prefix = prefixCheckpoint
		ci := txn.NewIterator(co)
		defer ci.Close()
		ci.Rewind()

		// checkCPs checks the checkpoints with seq <= upTo, in order.
		checkCPs := func(upTo uint64) (bool, error) {
			for ; ci.Valid(); ci.Next() {
				k := ci.Item().Key()
				if len(k) != len(prefixCheckpoint)+8 {
					return c.fail(c.goodCP+1, "malformed checkpoint key %q", k), nil
				}
				s := binary.BigEndian.Uint64(k[len(prefixCheckpoint):])
				if s > upTo {
					return true, nil
				}
				v, err := ci.Item().ValueCopy(nil)
				if err != nil {
					return false, err
				}
				cp, err := decodeCheckpoint(v)
				if err != nil {
					return c.fail(c.goodCP+1, "checkpoint at seq %d: undecodable: %v", s, err), nil
				}
				if cp.Seq != s {
					return c.fail(c.goodCP+1, "checkpoint key %d holds checkpoint %d", s, cp.Seq), nil
				}
				if !c.checkpoint(cp) {
					return false, nil
				}
			}
			return true, nil
		}
		if ok, err := checkCPs(0); err != nil || !ok {
			return err
		}
		for k := range vs {
			v := &vs[k]
			if v.first != c.seq+1 {
				if v.first > c.seq+1 {
					c.fail(c.seq+1, "record %d missing (next stored record is %d)", c.seq+1, v.first)
				} else {
					c.fail(v.first, "segment %d overlaps records up to %d (records reordered or duplicated)", v.first, c.seq)
				}
				return nil
			}
			b := &indexBuilder{first: v.first}
			var cperr error
			_, torn, err := scanRecords(v.data[:v.end], func(off int, rv []byte) error {
				if !c.stored(rv, 0) {
					return errStop
				}
				if c.seq <= applied {
					ix.expect(&c.r, rv)
				}
				b.add(off, rv)
				ok, err := checkCPs(c.seq)
				if err != nil || !ok {
					cperr = err
					return errStop
				}
				return nil
			})
			if cperr != nil {
				return cperr
			}
			if !c.rep.OK {
				return nil
			}
			if err != nil || torn {
				why := "torn"
				if err != nil {
					why = err.Error()
				}
				c.fail(c.seq+1, "record %d: segment %d damaged: %s (edited or truncated)", c.seq+1, v.first, why)
				return nil
			}
			ix.segment(v, b)
		}
		if ok, err := checkCPs(^uint64(0)); err != nil || !ok {
			return err
		}
		if c.rep.Records > 0 && c.rep.Checkpoints == 0 && !crashedBeforeCheckpoint {
			c.fail(1, "no signed checkpoint covers the chain (checkpoints deleted or chain forged)")
			return nil
		}
		seq, reason, err := ix.check(txn, vs)
		if err == nil && reason != "" {
			c.fail(seq, "%s", reason)
		}
		return err
	})
	if err != nil {
		return Report{Records: c.rep.Records, Checkpoints: c.rep.Checkpoints, Reason: "read store: " + err.Error()}
	}
	if c.rep.OK {
		c.rep.Uncovered = int(c.seq - c.goodCP)
	}
	return c.rep
}

// errStop ends a walk early; the reason is elsewhere.
var errStop = errors.New("stop")
