package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
)

// keyApplied holds the seq (u64 BE) of the last record applied from the
// journal, written in the same badger transaction as that record.
var keyApplied = []byte("l/applied")

// recovery is what Open found in the store and the journal: the heads it
// resumes from and the journaled records the store lacks. It is built by
// recoverState, used by Open alone, and dropped once Open returns.
type recovery struct {
	// seq and hash are the chain's head: the journal's end, or the
	// store's last record when that is further.
	seq  uint64
	hash [32]byte
	// cpSeq is the seq of the last stored checkpoint.
	cpSeq uint64
	// aSeq and aHash are the last record applied from the journal
	// (l/applied).
	aSeq  uint64
	aHash [32]byte
	// groups are the journaled records after aSeq, one group per frame,
	// checked against the chain and ready to apply.
	groups []*group
	// segs are the journal segments found, in seq order.
	segs []segment
	// journalFirst is the first seq the journal held (0: none),
	// journalLast its last (aSeq when it holds nothing newer).
	journalFirst, journalLast uint64
}

// recoverState reads badger's head and replays the journal in dir onto
// it, checking every frame and record (see replayJournal). It writes
// nothing. Errors are badger's, the journal's, or wrap ErrTampered.
func recoverState(db *badger.DB, dir string) (*recovery, error) {
	seq, h, cpSeq, aSeq, aHash, err := storedHead(db)
	if err != nil {
		return nil, err
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	groups, jFirst, jSeq, jHash, err := replayJournal(segs, aSeq, aHash)
	if err != nil {
		return nil, err
	}
	if jSeq > seq {
		seq, h = jSeq, jHash
	}
	return &recovery{
		seq: seq, hash: h, cpSeq: cpSeq, aSeq: aSeq, aHash: aHash,
		groups: groups, segs: segs, journalFirst: jFirst, journalLast: jSeq,
	}, nil
}

// repair applies the journaled records the store lacks through a (whose
// goroutine is not running yet), syncs badger, deletes the old journal
// and starts an empty one in dir whose first record will be rec.seq+1.
// It returns that journal; segBytes is its segment size.
func (rec *recovery) repair(a *applier, db *badger.DB, dir string, segBytes int64) (*journal, error) {
	a.queue = rec.groups
	if err := a.applyPending(false); err != nil {
		return nil, fmt.Errorf("apply journal: %w", err)
	}
	if a.seq < rec.seq { // badger held records beyond the journal
		a.seq, a.hash = rec.seq, rec.hash
		a.applied.Store(rec.seq)
	}
	if len(rec.segs) > 0 {
		// Everything journaled is in badger now; make that durable before
		// the journal goes.
		if err := db.Sync(); err != nil {
			return nil, err
		}
	}
	j := &journal{dir: dir, syncDir: true, segBytes: segBytes, segs: rec.segs}
	if err := j.remove(rec.segs); err != nil {
		return nil, err
	}
	if err := j.create(rec.seq + 1); err != nil {
		return nil, err
	}
	return j, nil
}

// storedHead reads the seq and hash of the last stored record, the seq
// of the last stored checkpoint, and the seq and hash of the last record
// applied from the journal (l/applied; the last stored record for a
// store written before the journal existed).
func storedHead(db *badger.DB) (seq uint64, h [32]byte, cpSeq, aSeq uint64, aHash [32]byte, err error) {
	err = db.View(func(txn *badger.Txn) error {
		if k, v, ok, err := last(txn, prefixRecord); err != nil {
			return err
		} else if ok {
			var r Record
			var prev [32]byte
			if err := r.decodeBinaryHashes(v, &prev, &h); err != nil {
				return fmt.Errorf("decode head record %x: %w", k, err)
			}
			seq = binary.BigEndian.Uint64(k[len(prefixRecord):])
		}
		if k, _, ok, err := last(txn, prefixCheckpoint); err != nil {
			return err
		} else if ok {
			cpSeq = binary.BigEndian.Uint64(k[len(prefixCheckpoint):])
		}
		aSeq, aHash = seq, h
		item, err := txn.Get(keyApplied)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if len(v) != 8 {
			return fmt.Errorf("%w: malformed %s", ErrTampered, keyApplied)
		}
		if s := binary.BigEndian.Uint64(v); s < seq {
			// Records beyond l/applied were stored by a transaction split
			// in parts; the journal holds them. (l/applied beyond the last
			// record means records were deleted: Verify reports that.)
			aSeq = s
		}
		switch {
		case aSeq < seq && aSeq > 0:
			item, err := txn.Get(seqKey(prefixRecord, aSeq))
			if err != nil {
				return fmt.Errorf("read applied record %d: %w", aSeq, err)
			}
			return item.Value(func(v []byte) error {
				var r Record
				var prev [32]byte
				return r.decodeBinaryHashes(v, &prev, &aHash)
			})
		case aSeq == 0:
			aHash = [32]byte{}
		}
		return nil
	})
	return seq, h, cpSeq, aSeq, aHash, err
}

// replayJournal reads the segments in order and checks every frame and
// every record against the chain: seqs consecutive from the segment's
// name, prev links, hashes and the canonical encoding; the first record
// after aSeq must link to aHash. It returns the records after aSeq as
// groups (one per frame) ready to apply, the journal's first seq (0 when
// it is empty), and its last seq and hash (aSeq, aHash when it holds
// nothing newer). A torn last frame of
// the last segment is ignored; any other damage is an error wrapping
// ErrTampered.
func replayJournal(segs []segment, aSeq uint64, aHash [32]byte) (groups []*group, first, seq uint64, h [32]byte, err error) {
	seq, h = aSeq, aHash
	var r Record
	var prev, self [32]byte
	var scratch []byte
	var next uint64 // the next seq the journal must hold; 0 before the first record
	for i, s := range segs {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return nil, 0, 0, h, fmt.Errorf("journal: %w", err)
		}
		bodies, torn, err := parseFrames(b)
		if err == nil && torn && i != len(segs)-1 {
			err = errors.New("torn frame before the last segment")
		}
		if err != nil {
			return nil, 0, 0, h, fmt.Errorf("%w: journal %s: %v", ErrTampered, filepath.Base(s.path), err)
		}
		if len(bodies) > 0 {
			if next != 0 && s.first != next {
				return nil, 0, 0, h, fmt.Errorf("%w: journal %s: expected a segment starting at %d", ErrTampered, filepath.Base(s.path), next)
			}
			next = s.first
			if first == 0 {
				first = s.first
			}
		}
		for _, body := range bodies {
			var g *group
			err := frameRecords(body, func(v []byte) error {
				if err := r.decodeBinaryHashes(v, &prev, &self); err != nil {
					return fmt.Errorf("record after %d undecodable", next-1)
				}
				if r.Seq != next {
					return fmt.Errorf("record %d where %d belongs", r.Seq, next)
				}
				next++
				if r.Seq <= aSeq {
					return nil // in badger already
				}
				if r.Seq != seq+1 {
					return fmt.Errorf("records %d..%d missing (the store ends at %d)", seq+1, r.Seq-1, aSeq)
				}
				if prev != h {
					return fmt.Errorf("record %d: prev does not match the hash of record %d", r.Seq, seq)
				}
				var want [32]byte
				scratch, want = hashRecord(scratch, &prev, &r)
				if want != self {
					return fmt.Errorf("record %d: hash does not match its contents", r.Seq)
				}
				if g == nil {
					g = &group{firstSeq: r.Seq, done: closedChan}
				}
				rv, rend := g.addRecord(&r, &prev, &self)
				if !bytes.Equal(g.buf[rv:rend], v) {
					return fmt.Errorf("record %d: not in canonical form", r.Seq)
				}
				seq, h = r.Seq, self
				g.lastSeq, g.lastHash = seq, h
				return nil
			})
			if err != nil {
				return nil, 0, 0, h, fmt.Errorf("%w: journal %s: %v", ErrTampered, filepath.Base(s.path), err)
			}
			if g != nil {
				groups = append(groups, g)
			}
		}
	}
	return groups, first, seq, h, nil
}

// last returns the last key of prefix (which must be followed by a u64
// seq) and its value; ok is false when there is none.
func last(txn *badger.Txn, prefix []byte) (k, v []byte, ok bool, err error) {
	o := badger.DefaultIteratorOptions
	o.Reverse, o.Prefix, o.PrefetchValues = true, prefix, false
	it := txn.NewIterator(o)
	defer it.Close()
	seek := append(append([]byte{}, prefix...), 0xff)
	it.Seek(seek)
	if !it.ValidForPrefix(prefix) {
		return nil, nil, false, nil
	}
	k = it.Item().KeyCopy(nil)
	if len(k) != len(prefix)+8 {
		return nil, nil, false, fmt.Errorf("malformed key %q", k)
	}
	v, err = it.Item().ValueCopy(nil)
	return k, v, err == nil, err
}
