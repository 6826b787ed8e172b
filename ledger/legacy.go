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

// Stores written before segments became the record store (the "legacy"
// layout) kept every record in badger — l/r/<seq> (stored form),
// l/t/<at><seq> (time index), l/p/<principal>0x00<at><seq> (a copy) — and
// the journal as DATA/ledger-<first seq>.wal, deleted once applied. Open
// migrates such a store: it copies the records (badger's up to
// l/applied, then the journal's, checked against the chain like a start
// checks them) into sealed segments in a staging dir, makes them durable,
// renames the dir to DATA/ledger (from then on the segments are the
// store), and then drops the legacy keys and journal files. A read-only
// Open migrates into a temporary directory instead and leaves the data
// dir as it was. The records' bytes, the chain and the checkpoints are
// unchanged (checkpoints stay in badger under l/c/, as do l/a/ and l/b/).
var (
	prefixLegacyRecord    = []byte("l/r/")
	prefixLegacyTime      = []byte("l/t/")
	prefixLegacyPrincipal = []byte("l/p/")
)

// migrateFrame bounds the bytes of one frame written by a migration.
const migrateFrame = 64 << 10

// prepareLayout returns the directory holding the segments (DATA/ledger,
// or for a read-only Open of a legacy store a temporary copy, also
// returned as tmp to remove at close), migrating a legacy store first.
func prepareLayout(db *badger.DB, dir string, ro bool, segBytes int64) (sdir, tmp string, err error) {
	sdir = filepath.Join(dir, segDir)
	legacyJournal, err := listSegments(dir)
	if err != nil {
		return "", "", err
	}
	hasLegacy, err := hasPrefix(db, prefixLegacyRecord)
	if err != nil {
		return "", "", err
	}
	if fi, err := os.Stat(sdir); err == nil && fi.IsDir() {
		// Migrated (or new). Leftovers of a migration cut short go now.
		if !ro && (hasLegacy || len(legacyJournal) > 0) {
			if err := dropLegacy(db, dir, legacyJournal); err != nil {
				return "", "", err
			}
		}
		return sdir, "", nil
	}
	if !hasLegacy && len(legacyJournal) == 0 {
		if !ro {
			if err := os.MkdirAll(sdir, 0o700); err != nil {
				return "", "", fmt.Errorf("create %s: %w", sdir, err)
			}
			if err := syncDir(dir); err != nil {
				return "", "", err
			}
		}
		return sdir, "", nil
	}
	if ro {
		tmp, err := os.MkdirTemp("", "toolgate-ledger-*")
		if err != nil {
			return "", "", err
		}
		out := filepath.Join(tmp, segDir)
		if _, err := migrate(db, dir, out, legacyJournal, segBytes); err != nil {
			os.RemoveAll(tmp)
			return "", "", err
		}
		return out, tmp, nil
	}
	stage := filepath.Join(dir, segDir+".migrating")
	if err := os.RemoveAll(stage); err != nil {
		return "", "", err
	}
	aSeq, err := migrate(db, dir, stage, legacyJournal, segBytes)
	if err != nil {
		os.RemoveAll(stage)
		return "", "", fmt.Errorf("migrate the ledger to segments: %w", err)
	}
	// l/applied keeps its legacy meaning (every record up to it has its
	// badger entries); a store older than the journal lacked it.
	err = db.Update(func(txn *badger.Txn) error {
		return txn.Set(keyApplied, binary.BigEndian.AppendUint64(nil, aSeq))
	})
	if err == nil {
		err = db.Sync()
	}
	if err == nil {
		err = os.Rename(stage, sdir)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return "", "", fmt.Errorf("migrate the ledger to segments: %w", err)
	}
	if err := dropLegacy(db, dir, legacyJournal); err != nil {
		return "", "", err
	}
	return sdir, "", nil
}

func hasPrefix(db *badger.DB, prefix []byte) (bool, error) {
	found := false
	err := db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix, o.PrefetchValues = prefix, false
		it := txn.NewIterator(o)
		defer it.Close()
		it.Rewind()
		found = it.Valid()
		return nil
	})
	return found, err
}

// dropLegacy deletes the legacy record keys and journal files, once the
// segments hold everything.
func dropLegacy(db *badger.DB, dir string, journal []segment) error {
	for _, p := range [][]byte{prefixLegacyRecord, prefixLegacyTime, prefixLegacyPrincipal} {
		if err := db.DropPrefix(p); err != nil {
			return fmt.Errorf("drop the legacy ledger keys: %w", err)
		}
	}
	for _, s := range journal {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return syncDir(dir)
}

// migrate writes the legacy store's chain into sealed segments in out
// and returns the legacy applied head (l/applied, or the last stored
// record for a store older than the journal). The journal's records
// after it are checked like a start checks them.
func migrate(db *badger.DB, dir, out string, journal []segment, segBytes int64) (uint64, error) {
	if err := os.MkdirAll(out, 0o700); err != nil {
		return 0, err
	}
	sw := &segWriter{dir: out, segBytes: segBytes}
	var aSeq uint64
	var aHash [32]byte
	err := db.View(func(txn *badger.Txn) error {
		var last uint64
		var hasApplied bool
		if item, err := txn.Get(keyApplied); err == nil {
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 8 {
				return fmt.Errorf("%w: malformed %s", ErrTampered, keyApplied)
			}
			aSeq, hasApplied = binary.BigEndian.Uint64(v), true
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		o := badger.DefaultIteratorOptions
		o.Prefix = prefixLegacyRecord
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefixLegacyRecord)+8 {
				return fmt.Errorf("%w: malformed record key %q", ErrTampered, k)
			}
			s := binary.BigEndian.Uint64(k[len(prefixLegacyRecord):])
			if hasApplied && s > aSeq {
				break // the journal holds these
			}
			if s != last+1 {
				return fmt.Errorf("%w: record %d missing (next stored record is %d)", ErrTampered, last+1, s)
			}
			err := it.Item().Value(func(v []byte) error {
				var r Record
				var prev, self [32]byte
				if err := r.decodeBinaryHashes(v, &prev, &self); err != nil || r.Seq != s {
					return fmt.Errorf("%w: record %d undecodable", ErrTampered, s)
				}
				aHash = self
				return sw.add(s, v)
			})
			if err != nil {
				return err
			}
			last = s
		}
		if !hasApplied || aSeq > last {
			aSeq = last
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := replayLegacyJournal(journal, aSeq, aHash, sw.add); err != nil {
		return 0, err
	}
	if err := sw.finish(); err != nil {
		return 0, err
	}
	return aSeq, syncDir(out)
}

// replayLegacyJournal reads legacy journal segments in order and checks
// every frame and every record against the chain (seqs consecutive from
// the segment's name, prev links, hashes, canonical encoding; the first
// record after aSeq links to aHash), calling fn with each record after
// aSeq. A torn last frame of the last segment is ignored; any other
// damage is an error wrapping ErrTampered.
func replayLegacyJournal(segs []segment, aSeq uint64, aHash [32]byte, fn func(seq uint64, v []byte) error) error {
	seq, h := aSeq, aHash
	var r Record
	var prev, self [32]byte
	var scratch, enc []byte
	var next uint64
	for i, s := range segs {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		bodies, torn, err := parseFrames(b)
		if err == nil && torn && i != len(segs)-1 {
			err = errors.New("torn frame before the last segment")
		}
		if err != nil {
			return fmt.Errorf("%w: journal %s: %v", ErrTampered, filepath.Base(s.path), err)
		}
		if len(bodies) > 0 {
			if next != 0 && s.first != next {
				return fmt.Errorf("%w: journal %s: expected a segment starting at %d", ErrTampered, filepath.Base(s.path), next)
			}
			next = s.first
		}
		for _, body := range bodies {
			err := frameRecords(body, func(v []byte) error {
				if err := r.decodeBinaryHashes(v, &prev, &self); err != nil {
					return fmt.Errorf("record after %d undecodable", next-1)
				}
				if r.Seq != next {
					return fmt.Errorf("record %d where %d belongs", r.Seq, next)
				}
				next++
				if r.Seq <= aSeq {
					return nil
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
				if enc = r.appendBinary(enc[:0], &prev, &self); !bytes.Equal(enc, v) {
					return fmt.Errorf("record %d: not in canonical form", r.Seq)
				}
				seq, h = r.Seq, self
				return fn(r.Seq, v)
			})
			if err != nil {
				return fmt.Errorf("%w: journal %s: %v", ErrTampered, filepath.Base(s.path), err)
			}
		}
	}
	return nil
}

// segWriter writes records into sealed segments (frames, rotation at
// segBytes, an index per segment), for a migration.
type segWriter struct {
	dir      string
	segBytes int64

	f     *os.File
	first uint64
	size  int64
	frame []byte
	ix    *indexBuilder
}

func (w *segWriter) add(seq uint64, v []byte) error {
	if w.f == nil {
		f, err := os.OpenFile(filepath.Join(w.dir, segName(seq, segSuffix)), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		w.f, w.first, w.size, w.ix = f, seq, 0, &indexBuilder{first: seq}
		w.frame = append(w.frame[:0], make([]byte, frameHeader)...)
	}
	// The record's length prefix goes at offset size+len(frame).
	if err := w.ix.add(int(w.size)+len(w.frame), v); err != nil {
		return fmt.Errorf("%w: %v", ErrTampered, err)
	}
	w.frame = binary.AppendUvarint(w.frame, uint64(len(v)))
	w.frame = append(w.frame, v...)
	if len(w.frame) >= migrateFrame {
		if err := w.flushFrame(); err != nil {
			return err
		}
		if w.size >= w.segBytes {
			return w.seal()
		}
	}
	return nil
}

func (w *segWriter) flushFrame() error {
	if len(w.frame) <= frameHeader {
		return nil
	}
	body := w.frame[frameHeader:]
	binary.LittleEndian.PutUint32(w.frame, uint32(len(body)))
	binary.LittleEndian.PutUint32(w.frame[4:], crc32Checksum(body))
	if _, err := w.f.Write(w.frame); err != nil {
		return err
	}
	w.size += int64(len(w.frame))
	w.frame = append(w.frame[:0], make([]byte, frameHeader)...)
	return nil
}

func (w *segWriter) seal() error {
	if err := w.flushFrame(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	path := filepath.Join(w.dir, segName(w.first, idxSuffix))
	b := w.ix.encode(w.size)
	w.f = nil
	return writeIndexFile(path, b)
}

func (w *segWriter) finish() error {
	if w.f == nil {
		return nil
	}
	return w.seal()
}
