package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/money"
)

// buildStopped writes 30 records (checkpoints at 10, 20, 30), stops the
// ledger and returns the data dir and the public key.
func buildStopped(t *testing.T) (string, ed25519.PublicKey) {
	t.Helper()
	dir := t.TempDir()
	db := openDB(t, dir, false)
	l, err := Open(db, dir, Options{CheckpointEvery: 10, Now: stepClock(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		r := callRec("key:a", "tool-a", OutcomeAllowed)
		if i == 4 || i == 24 { // seq 5 and 25: prepaid top-up and debit
			bal := money.Micros(100 - 2*i)
			r = &Record{Type: TypeTxn, Principal: "key:a", Kind: KindTopup, Amount: 100, BalanceAfter: &bal}
		}
		if err := l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	return dir, l.PublicKey()
}

// stoppedStore is a stopped data dir's record store taken apart, for a
// test to tamper with as someone who knows the formats would, and write
// back with consistent frame checksums and index files.
type stoppedStore struct {
	dir  string
	recs []*Record // decoded, in position order; what is written back unless vs says otherwise
	vs   map[int][]byte
	// index, when set, edits what the index file is built from.
	index func(offs []uint32, ats []int64, prin map[string][]uint32)
	// badger, when set, edits badger (checkpoints, balance index).
	badger func(txn *badger.Txn)
}

func loadStopped(t *testing.T, dir string) *stoppedStore {
	t.Helper()
	s := &stoppedStore{dir: dir, vs: map[int][]byte{}}
	segs := journalFiles(t, dir)
	if len(segs) != 1 {
		t.Fatalf("segments: got %d, want 1", len(segs))
	}
	b, err := os.ReadFile(segs[0].path)
	if err != nil {
		t.Fatal(err)
	}
	if _, torn, err := scanRecords(b, func(_ int, v []byte) error {
		var r Record
		if err := r.decodeBinary(v); err != nil {
			return err
		}
		s.recs = append(s.recs, &r)
		return nil
	}); err != nil || torn {
		t.Fatalf("read segment: %v (torn %v)", err, torn)
	}
	return s
}

// at returns record seq (position seq-1 as stored).
func (s *stoppedStore) at(seq uint64) *Record { return s.recs[seq-1] }

// write replaces the segments with one segment holding the records, one
// per frame, and its index, and applies the badger edit.
func (s *stoppedStore) write(t *testing.T) {
	t.Helper()
	sdir := filepath.Join(s.dir, segDir)
	for _, seg := range journalFiles(t, s.dir) {
		os.Remove(seg.path)
		os.Remove(strings.TrimSuffix(seg.path, segSuffix) + idxSuffix)
	}
	var seg []byte
	var offs []uint32
	var ats []int64
	prin := map[string][]uint32{}
	for i, r := range s.recs {
		v, ok := s.vs[i]
		if !ok {
			v = storedForm(r)
		}
		body := binary.AppendUvarint(nil, uint64(len(v)))
		body = append(body, v...)
		offs = append(offs, uint32(len(seg)+frameHeader))
		ats = append(ats, r.At.UnixNano())
		if r.Principal != "" {
			prin[r.Principal] = append(prin[r.Principal], uint32(i))
		}
		seg = binary.LittleEndian.AppendUint32(seg, uint32(len(body)))
		seg = binary.LittleEndian.AppendUint32(seg, crc32Checksum(body))
		seg = append(seg, body...)
	}
	if s.index != nil {
		s.index(offs, ats, prin)
	}
	if err := os.WriteFile(filepath.Join(sdir, segName(1, segSuffix)), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sdir, segName(1, idxSuffix)), encodeIndex(1, int64(len(seg)), offs, ats, prin), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.badger != nil {
		db := openDB(t, s.dir, false)
		defer db.Close()
		if err := db.Update(func(txn *badger.Txn) error { s.badger(txn); return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

// storedForm encodes r as the ledger stores it, with r.Prev and r.Hash.
func storedForm(r *Record) []byte {
	prev, _ := parseHash(r.Prev)
	hash, _ := parseHash(r.Hash)
	return r.appendBinary(nil, &prev, &hash)
}

// rehash recomputes prev and hash of recs as a forger would.
func rehash(recs []*Record) {
	var prev [32]byte
	for _, r := range recs {
		r.Prev = hex.EncodeToString(prev[:])
		prev = chainHash(prev, r.appendCanonical(nil))
		r.Hash = hex.EncodeToString(prev[:])
	}
}

// move returns list without record number i, or with it (sorted by
// (At, number)) when add.
func move(list []uint32, i uint32, add bool, ats []int64) []uint32 {
	out := []uint32{}
	for _, x := range list {
		if x != i {
			out = append(out, x)
		}
	}
	if add {
		out = append(out, i)
		sortByAt(out, ats)
	}
	return out
}

func TestLedger_Verify(t *testing.T) {
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forge := func(resign bool, dropCPs bool) func(s *stoppedStore) {
		return func(s *stoppedStore) {
			for _, r := range s.recs {
				r.Tool = "forged"
			}
			rehash(s.recs)
			s.badger = func(txn *badger.Txn) {
				for _, seq := range []uint64{10, 20, 30} {
					switch {
					case dropCPs:
						txn.Delete(seqKey(prefixCheckpoint, seq))
					case resign:
						h, _ := parseHash(s.at(seq).Hash)
						cp := signCheckpoint(otherPriv, seq, h, t0)
						txn.Set(seqKey(prefixCheckpoint, seq), cp.appendJSON(nil))
					}
				}
			}
		}
	}
	del := func(from, to uint64) func(s *stoppedStore) {
		return func(s *stoppedStore) { s.recs = append(s.recs[:from-1:from-1], s.recs[to:]...) }
	}
	tests := []struct {
		name       string
		tamper     func(s *stoppedStore)
		wantOK     bool
		wantBad    uint64
		wantReason string
	}{
		{"Untouched", func(s *stoppedStore) {}, true, 0, ""},
		{"ChangeField", func(s *stoppedStore) { s.at(15).Tool = "tool-b" }, false, 15, "hash does not match"},
		{"ChangeFieldNonCanonical", func(s *stoppedStore) {
			// Seq 15 as a two-byte varint: decodes to the same record, but
			// is not the one stored form.
			v := storedForm(s.at(15))
			at := 1 + 1 + len(TypeCall) + 1 + len(OutcomeAllowed) + 1 + len("tool-a")
			if v[at] != 15 {
				t.Fatalf("seq byte: got %d, want 15", v[at])
			}
			s.vs[14] = append(v[:at:at], append([]byte{0x8f, 0x00}, v[at+1:]...)...)
		}, false, 15, "undecodable"},
		{"TrailingBytes", func(s *stoppedStore) { s.vs[14] = append(storedForm(s.at(15)), 0) }, false, 15, "undecodable"},
		{"DeleteRecord", del(15, 15), false, 15, "missing"},
		{"SwapRecords", func(s *stoppedStore) { s.recs[13], s.recs[14] = s.recs[14], s.recs[13] }, false, 14, "seq field says 15"},
		{"TruncateTail", del(26, 30), false, 26, "truncated"},
		{"ForgeryKeepingCheckpoints", forge(false, false), false, 1, "does not match the chain"},
		{"ForgeryResigned", forge(true, false), false, 1, "signature does not verify"},
		{"ForgeryWithoutCheckpoints", forge(false, true), false, 1, "no signed checkpoint"},
		// The segment index locates the records replays read; it must be
		// the one the chain implies.
		{"SegmentIndexPrincipalMoved", func(s *stoppedStore) {
			s.index = func(offs []uint32, ats []int64, prin map[string][]uint32) {
				prin["key:a"] = move(prin["key:a"], 14, false, ats)
				prin["key:b"] = move(prin["key:b"], 14, true, ats)
			}
		}, false, 15, "segment index"},
		{"SegmentIndexEntryDeleted", func(s *stoppedStore) {
			s.index = func(offs []uint32, ats []int64, prin map[string][]uint32) {
				prin["key:a"] = move(prin["key:a"], 14, false, ats)
			}
		}, false, 15, "segment index"},
		{"SegmentIndexEntryForged", func(s *stoppedStore) {
			// Record 12 listed for key:b too.
			s.index = func(offs []uint32, ats []int64, prin map[string][]uint32) {
				prin["key:b"] = move(prin["key:b"], 11, true, ats)
			}
		}, false, 12, "segment index"},
		{"SegmentIndexTimeEdited", func(s *stoppedStore) {
			s.index = func(offs []uint32, ats []int64, prin map[string][]uint32) { ats[11] += int64(time.Hour) }
		}, false, 12, "segment index"},
		{"SegmentIndexOffsetEdited", func(s *stoppedStore) {
			// Record 12's entry points into the middle of record 11.
			s.index = func(offs []uint32, ats []int64, prin map[string][]uint32) { offs[11] -= 3 }
		}, false, 12, "segment index"},
		{"BalanceIndexStale", func(s *stoppedStore) {
			s.badger = func(txn *badger.Txn) { txn.Set(balanceKey("key:a"), binary.BigEndian.AppendUint64(nil, 5)) }
		}, false, 25, "balance index"},
		{"BalanceIndexDeleted", func(s *stoppedStore) {
			s.badger = func(txn *badger.Txn) { txn.Delete(balanceKey("key:a")) }
		}, false, 25, "balance index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, pub := buildStopped(t)
			seg := filepath.Join(dir, segDir, segName(1, segSuffix))
			before, _ := os.ReadFile(seg)
			beforeIdx, _ := os.ReadFile(strings.TrimSuffix(seg, segSuffix) + idxSuffix)
			s := loadStopped(t, dir)
			tt.tamper(s)
			s.write(t)
			if tt.name == "Untouched" {
				// The test's writer writes what the ledger wrote.
				after, _ := os.ReadFile(seg)
				afterIdx, _ := os.ReadFile(strings.TrimSuffix(seg, segSuffix) + idxSuffix)
				if !bytes.Equal(before, after) || !bytes.Equal(beforeIdx, afterIdx) {
					t.Fatal("rewriting the untouched store changed its bytes")
				}
			}
			// Offline, as `toolgate audit verify` on a stopped data dir.
			db := openDB(t, dir, true)
			defer db.Close()
			l, err := Open(db, dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Equal(l.PublicKey()) {
				t.Fatal("public key changed")
			}
			rep := l.Verify()
			if rep.OK != tt.wantOK || rep.FirstBadSeq != tt.wantBad || !strings.Contains(rep.Reason, tt.wantReason) {
				t.Errorf("Verify: got %+v, want ok=%v first_bad_seq=%d reason containing %q", rep, tt.wantOK, tt.wantBad, tt.wantReason)
			}
			if tt.wantOK && (rep.Records != 30 || rep.Checkpoints != 3) {
				t.Errorf("Verify: got %d records %d checkpoints, want 30 3", rep.Records, rep.Checkpoints)
			}
		})
	}
	// Damage that breaks a frame checksum or an index file's own checksum
	// is refused at Open (a writable one would build on it).
	for _, tt := range []struct {
		name   string
		suffix string
	}{{"SegmentByteFlipped", segSuffix}, {"IndexByteFlipped", idxSuffix}} {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := buildStopped(t)
			path := filepath.Join(dir, segDir, segName(1, tt.suffix))
			b, _ := os.ReadFile(path)
			b[len(b)/2] ^= 0x10
			os.WriteFile(path, b, 0o600)
			db := openDB(t, dir, true)
			defer db.Close()
			l, err := Open(db, dir, Options{})
			if err == nil {
				rep := l.Verify()
				if rep.OK {
					t.Fatalf("Verify of a flipped byte in %s: got %+v, want a failure", tt.suffix, rep)
				}
				return
			}
			if !errors.Is(err, ErrTampered) {
				t.Errorf("Open: got %v, want ErrTampered", err)
			}
		})
	}
}

func TestVerifyExport(t *testing.T) {
	dir, pub := buildStopped(t)
	db := openDB(t, dir, false)
	l, err := Open(db, dir, Options{CheckpointEvery: 10, Now: stepClock(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.Export(&buf, time.Time{}, time.Time{}); err != nil {
		t.Fatalf("Export: %v", err)
	}
	l.Close()
	db.Close()
	lines := strings.SplitAfter(strings.TrimSuffix(buf.String(), "\n"), "\n")
	// 30 records, checkpoints after 10, 20, 30, fresh checkpoint at the end.
	if len(lines) != 34 {
		t.Fatalf("export lines: got %d, want 34:\n%s", len(lines), buf.String())
	}
	recLine := func(seq int) int { return seq - 1 + (seq-1)/10 } // index of record seq
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forged := func(sign bool) []string {
		var recs []*Record
		for _, ln := range lines {
			if strings.HasPrefix(ln, `{"seq"`) {
				var r Record
				r.UnmarshalJSON([]byte(ln))
				r.Tool = "forged"
				recs = append(recs, &r)
			}
		}
		rehash(recs)
		var out []string
		for _, r := range recs {
			out = append(out, string(r.AppendJSON(nil))+"\n")
			if sign && r.Seq%10 == 0 {
				h, _ := parseHash(r.Hash)
				cp := signCheckpoint(otherPriv, r.Seq, h, t0)
				out = append(out, string(cp.appendJSON(nil))+"\n")
			}
		}
		return out
	}
	del := func(i int) []string { return append(append([]string{}, lines[:i]...), lines[i+1:]...) }
	tests := []struct {
		name       string
		lines      []string
		wantOK     bool
		wantBad    uint64
		wantReason string
	}{
		{"Untouched", lines, true, 0, ""},
		{"ChangeField", func() []string {
			out := append([]string{}, lines...)
			out[recLine(15)] = strings.Replace(out[recLine(15)], "tool-a", "tool-b", 1)
			return out
		}(), false, 15, "hash does not match"},
		{"DeleteRecord", del(recLine(15)), false, 15, "seq field says 16"},
		{"SwapRecords", func() []string {
			out := append([]string{}, lines...)
			out[recLine(14)], out[recLine(15)] = out[recLine(15)], out[recLine(14)]
			return out
		}(), false, 14, "seq field says 15"},
		{"TruncateTail", lines[:recLine(26)], false, 21, "truncated"},
		{"TruncateFinalCheckpointOnly", lines[:len(lines)-1], true, 0, ""}, // the stored checkpoint at 30 still covers the end
		{"ForgeryResigned", forged(true), false, 1, "signature does not verify"},
		{"ForgeryWithoutCheckpoints", forged(false), false, 1, "truncated"},
		{"Empty", nil, false, 0, "no records"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := VerifyExport(strings.NewReader(strings.Join(tt.lines, "")), pub)
			if rep.OK != tt.wantOK || rep.FirstBadSeq != tt.wantBad || !strings.Contains(rep.Reason, tt.wantReason) {
				t.Errorf("VerifyExport: got %+v, want ok=%v first_bad_seq=%d reason containing %q", rep, tt.wantOK, tt.wantBad, tt.wantReason)
			}
		})
	}
}

func TestLedger_Export(t *testing.T) {
	l, _, dir := newLedger(t, Options{CheckpointEvery: 10, Now: stepClock(time.Minute)})
	for i := 0; i < 35; i++ {
		r := callRec("key:a", "t", OutcomeAllowed)
		r.At = t0.Add(time.Duration(i) * time.Minute)
		if err := l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name         string
		since, until time.Time
		wantFirst    uint64
		wantLast     uint64
	}{
		{"All", time.Time{}, time.Time{}, 1, 35},
		{"Middle", t0.Add(12 * time.Minute), t0.Add(23 * time.Minute), 13, 23},
		{"Since", t0.Add(30 * time.Minute), time.Time{}, 31, 35},
		{"Until", time.Time{}, t0.Add(5 * time.Minute), 1, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := l.Export(&buf, tt.since, tt.until); err != nil {
				t.Fatalf("Export: %v", err)
			}
			var seqs []uint64
			for _, ln := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if strings.HasPrefix(ln, `{"seq"`) {
					var r Record
					if err := r.UnmarshalJSON([]byte(ln)); err != nil {
						t.Fatal(err)
					}
					seqs = append(seqs, r.Seq)
				}
			}
			if len(seqs) == 0 || seqs[0] != tt.wantFirst || seqs[len(seqs)-1] != tt.wantLast || len(seqs) != int(tt.wantLast-tt.wantFirst+1) {
				t.Errorf("exported seqs: got %v, want %d..%d", seqs, tt.wantFirst, tt.wantLast)
			}
			if rep := VerifyExport(&buf, l.PublicKey()); !rep.OK || rep.Records != len(seqs) {
				t.Errorf("VerifyExport: got %+v, want ok with %d records", rep, len(seqs))
			}
		})
	}
	t.Run("Empty", func(t *testing.T) {
		var buf bytes.Buffer
		if err := l.Export(&buf, t0.Add(-time.Hour), t0); err != nil || buf.Len() != 0 {
			t.Errorf("Export: got %q, %v, want empty, nil", buf.String(), err)
		}
	})
	t.Run("ErrTampered", func(t *testing.T) {
		// Record 3's tool edited in place in the segment being written.
		v := storedRecord(t, l, 3)
		i := bytes.Index(v, []byte("\x01t"))
		seg := journalFiles(t, dir)[0].path
		b, _ := os.ReadFile(seg)
		p := bytes.Index(b, v)
		if i < 0 || p < 0 {
			t.Fatal("record 3 not found")
		}
		f, _ := os.OpenFile(seg, os.O_WRONLY, 0)
		f.WriteAt([]byte("u"), int64(p+i+1))
		f.Close()
		var buf bytes.Buffer
		if err := l.Export(&buf, time.Time{}, time.Time{}); err == nil || !strings.Contains(err.Error(), ErrTampered.Error()) {
			t.Errorf("Export: got %v, want ErrTampered", err)
		}
	})
}

func TestLedger_VerifyConcurrent(t *testing.T) {
	l, _, _ := newLedger(t, Options{CheckpointEvery: 7})
	// One record first: an Export of an empty ledger is empty and
	// VerifyExport rightly rejects it, whatever the appender's timing.
	if err := l.Append(callRec("key:a", "t", OutcomeAllowed)).Wait(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		for i := 0; i < 1500; i++ { // bounded: each Verify and Export reads the whole chain
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := l.Append(callRec("key:a", "t", OutcomeAllowed), callRec("key:b", "t", OutcomeDenied)).Wait(); err != nil {
				done <- err
				return
			}
		}
		<-stop
		done <- nil
	}()
	for i := 0; i < 10; i++ {
		if rep := l.Verify(); !rep.OK {
			t.Errorf("Verify during Append: got %+v, want ok", rep)
		}
		var buf bytes.Buffer
		if err := l.Export(&buf, time.Time{}, time.Time{}); err != nil {
			t.Fatalf("Export during Append: %v", err)
		}
		if rep := VerifyExport(&buf, l.PublicKey()); !rep.OK {
			t.Errorf("VerifyExport: got %+v, want ok", rep)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
