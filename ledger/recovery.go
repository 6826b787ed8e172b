package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// keyApplied holds the seq (u64 BE) of the last record whose badger
// entries (admin and balance index) are in badger, written in the same
// badger transaction as those entries and as every checkpoint.
var keyApplied = []byte("l/applied")

// replayGroup bounds the records of one group Open replays.
const replayGroup = 4096

// recovery is what Open found in the segments and in badger: the heads
// it resumes from and the records whose badger entries badger may lack.
// It is built by recoverState, used by Open alone, and dropped once Open
// returns.
type recovery struct {
	st *recordStore
	// seq and hash are the chain's head: the last record of the last
	// segment.
	seq  uint64
	hash [32]byte
	// cpSeq is the seq of the last stored checkpoint.
	cpSeq uint64
	// aSeq and aHash are the last record applied (l/applied, at most the
	// head).
	aSeq  uint64
	aHash [32]byte
	// groups hold the records after aSeq (checked against the chain) with
	// their badger entries, ready to apply.
	groups []*group
	// journalFirst is the first seq of the segments (0: none).
	journalFirst uint64
	// unsealed says a segment had no index file: the gateway was not
	// stopped cleanly (Close seals the segment being written).
	unsealed bool
}

// recoverState opens the record store of the data dir dir (migrating a
// store of the old layout first, legacy.go), seals and indexes segments
// a crash left unsealed, and checks every record after l/applied
// against the chain: seqs consecutive, prev links, hashes and the
// canonical encoding. A torn last frame of the last segment (an
// unanswered group) is dropped (cut off the file unless ro); any other
// damage is an error wrapping ErrTampered. With ro nothing is written.
func recoverState(db *badger.DB, dir string, ro bool, segBytes int64) (*recovery, error) {
	sdir, tmp, err := prepareLayout(db, dir, ro, segBytes)
	if err != nil {
		return nil, err
	}
	st := &recordStore{dir: sdir, segBytes: segBytes, ro: ro, tmp: tmp}
	rec, err := recoverStore(db, st, ro)
	if err != nil {
		st.close()
		return nil, err
	}
	return rec, nil
}

func recoverStore(db *badger.DB, st *recordStore, ro bool) (*recovery, error) {
	cpSeq, applied, hasApplied, err := storedMarks(db)
	if err != nil {
		return nil, err
	}
	files, err := listFiles(st.dir, "", segSuffix)
	if err != nil {
		return nil, err
	}
	unsealed := false
	for i, f := range files {
		lastFile := i == len(files)-1
		g, err := openSealed(f.path, f.first)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrNotExist) && !fileExists(f.path):
			return nil, err
		case errors.Is(err, os.ErrNotExist):
			// Never sealed: the active segment at a crash (or a segment
			// whose seal a crash cut short). Index it from its frames.
			if g, err = indexUnsealed(f, lastFile, ro); err != nil {
				return nil, err
			}
			unsealed = true
		default:
			return nil, fmt.Errorf("%w: %v (the segment's records are intact only if `toolgate audit verify --offline` passes; delete the .idx file to have it rebuilt)", ErrTampered, err)
		}
		if g == nil {
			continue // empty
		}
		st.segs = append(st.segs, g)
	}
	rec := &recovery{st: st, cpSeq: cpSeq, unsealed: unsealed}
	if len(st.segs) > 0 {
		rec.journalFirst = st.segs[0].first
	}
	vs := st.snapshot(listSel{})
	if n := len(vs); n > 0 {
		v := &vs[n-1]
		b, err := v.record(v.n - 1)
		var r Record
		var prev [32]byte
		if err == nil {
			err = r.decodeBinaryHashes(b, &prev, &rec.hash)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: segment %d: last record undecodable", ErrTampered, v.first)
		}
		// The head is the last position; a record there that says
		// otherwise (records deleted or reordered) fails Verify, and the
		// records after l/applied are checked below.
		rec.seq = v.last()
	}
	rec.aSeq = min(applied, rec.seq)
	if !hasApplied {
		rec.aSeq = 0
	}
	if rec.aSeq > 0 {
		v, ok := findView(vs, rec.aSeq)
		if !ok {
			return nil, fmt.Errorf("%w: record %d (applied) missing from the segments", ErrTampered, rec.aSeq)
		}
		b, err := v.record(int(rec.aSeq - v.first))
		var r Record
		var prev [32]byte
		if err == nil {
			err = r.decodeBinaryHashes(b, &prev, &rec.aHash)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: record %d undecodable", ErrTampered, rec.aSeq)
		}
	}
	if rec.groups, err = replayAfter(vs, rec.aSeq, rec.aHash, rec.seq); err != nil {
		return nil, err
	}
	return rec, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// indexUnsealed reads a segment without an index: its frames must be
// whole (but for a torn last frame of the last segment) and its records
// consecutive from its name's seq. Unless ro, the torn tail is cut off
// and the index file written; an empty last segment is removed. It
// returns nil for an empty segment.
func indexUnsealed(f segment, last, ro bool) (*storeSeg, error) {
	data, err := mapPath(f.path)
	if err != nil {
		return nil, err
	}
	b := &indexBuilder{first: f.first}
	end, torn, err := scanRecords(data, b.add)
	if err == nil && torn && !last {
		err = errors.New("torn frame before the last segment")
	}
	if err != nil {
		unmapFile(data)
		return nil, fmt.Errorf("%w: segment %s: %v", ErrTampered, filepath.Base(f.path), err)
	}
	if len(b.offs) == 0 {
		unmapFile(data)
		if !ro {
			if err := os.Remove(f.path); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	idx := b.encode(int64(end))
	g := &storeSeg{first: f.first, path: f.path, data: data[:end:end], mapping: data, idx: idx}
	if !ro {
		if torn {
			if err := os.Truncate(f.path, int64(end)); err != nil {
				unmapFile(data)
				return nil, fmt.Errorf("cut the torn tail of %s: %w", filepath.Base(f.path), err)
			}
			if err := syncPath(f.path); err != nil {
				unmapFile(data)
				return nil, err
			}
		}
		if err := writeIndexFile(strings.TrimSuffix(f.path, segSuffix)+idxSuffix, idx); err != nil {
			unmapFile(data)
			return nil, fmt.Errorf("write segment index: %w", err)
		}
	}
	if g.ix, err = decodeIndex(idx); err != nil {
		unmapFile(data)
		return nil, err
	}
	return g, nil
}

func syncPath(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// replayAfter checks the records after aSeq up to head against the chain
// (aHash is the hash of record aSeq) and returns them as groups carrying
// their badger entries.
func replayAfter(vs []segView, aSeq uint64, aHash [32]byte, head uint64) ([]*group, error) {
	if head <= aSeq {
		return nil, nil
	}
	v, ok := findView(vs, aSeq+1)
	if !ok {
		return nil, fmt.Errorf("%w: records %d..%d missing (the segments start at %d)", ErrTampered, aSeq+1, head, firstOf(vs))
	}
	var groups []*group
	var g *group
	var r Record
	var prev, self [32]byte
	var scratch, enc []byte
	seq, h := aSeq, aHash
	k := 0
	for ; k < len(vs) && &vs[k] != v; k++ {
	}
	for ; k < len(vs); k++ {
		v := &vs[k]
		if v.first > seq+1 {
			return nil, fmt.Errorf("%w: records %d..%d missing (next segment starts at %d)", ErrTampered, seq+1, v.first-1, v.first)
		}
		for i := int(seq + 1 - v.first); i < v.n; i++ {
			b, err := v.record(i)
			if err == nil {
				err = r.decodeBinaryHashes(b, &prev, &self)
			}
			want := seq + 1
			switch {
			case err != nil:
				return nil, fmt.Errorf("%w: record %d undecodable", ErrTampered, want)
			case r.Seq != want:
				return nil, fmt.Errorf("%w: record %d where %d belongs", ErrTampered, r.Seq, want)
			case prev != h:
				return nil, fmt.Errorf("%w: record %d: prev does not match the hash of record %d", ErrTampered, want, seq)
			}
			var hh [32]byte
			scratch, hh = hashRecord(scratch, &prev, &r)
			if hh != self {
				return nil, fmt.Errorf("%w: record %d: hash does not match its contents", ErrTampered, want)
			}
			if enc = r.appendBinary(enc[:0], &prev, &self); !bytes.Equal(enc, b) {
				return nil, fmt.Errorf("%w: record %d: not in canonical form", ErrTampered, want)
			}
			if g == nil {
				g = &group{firstSeq: want, done: closedChan, indexed: true}
				groups = append(groups, g)
			}
			g.addEntries(&r, b)
			seq, h = want, self
			g.lastSeq, g.lastHash = seq, h
			if g.lastSeq-g.firstSeq+1 >= replayGroup {
				g = nil
			}
		}
	}
	return groups, nil
}

func firstOf(vs []segView) uint64 {
	if len(vs) == 0 {
		return 0
	}
	return vs[0].first
}

// storedMarks reads the seq of the last stored checkpoint and l/applied.
func storedMarks(db *badger.DB) (cpSeq, applied uint64, hasApplied bool, err error) {
	err = db.View(func(txn *badger.Txn) error {
		if k, _, ok, err := last(txn, prefixCheckpoint); err != nil {
			return err
		} else if ok {
			cpSeq = binary.BigEndian.Uint64(k[len(prefixCheckpoint):])
		}
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
		applied, hasApplied = binary.BigEndian.Uint64(v), true
		return nil
	})
	return cpSeq, applied, hasApplied, err
}

// repair applies the replayed records' badger entries through a (whose
// goroutine is not running yet) and returns the journal, which starts a
// new segment at rec.seq+1 (in dir, DATA/ledger) with its first write.
func (rec *recovery) repair(a *applier, segBytes int64) (*journal, error) {
	a.queue = rec.groups
	if err := a.applyPending(false); err != nil {
		return nil, fmt.Errorf("apply journal: %w", err)
	}
	if a.seq < rec.seq {
		a.seq, a.hash = rec.seq, rec.hash
		a.applied.Store(rec.seq)
	}
	j := &journal{dir: rec.st.dir, segBytes: segBytes}
	if err := j.create(rec.seq + 1); err != nil {
		return nil, err
	}
	return j, nil
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
