package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/money"
)

// atOf returns the At of stored record seq.
func atOf(t *testing.T, txn *badger.Txn, seq uint64) time.Time {
	t.Helper()
	return getStored(t, txn, seqKey(prefixRecord, seq)).At
}

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

func loadRecords(t *testing.T, txn *badger.Txn) []*Record {
	t.Helper()
	var out []*Record
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var r Record
		if err := it.Item().Value(r.decodeBinary); err != nil {
			t.Fatal(err)
		}
		out = append(out, &r)
	}
	return out
}

// getStored reads the value under key k as a stored record.
func getStored(t *testing.T, txn *badger.Txn, k []byte) *Record {
	t.Helper()
	item, err := txn.Get(k)
	if err != nil {
		t.Fatalf("get %q: %v", k, err)
	}
	var r Record
	if err := item.Value(r.decodeBinary); err != nil {
		t.Fatalf("decode %q: %v", k, err)
	}
	return &r
}

// storedForm encodes r as the ledger stores it, with r.Prev and r.Hash.
func storedForm(r *Record) []byte {
	prev, _ := parseHash(r.Prev)
	hash, _ := parseHash(r.Hash)
	return r.appendBinary(nil, &prev, &hash)
}

// editRecord rewrites record seq in l/r/ (only) after applying edit.
func editRecord(t *testing.T, txn *badger.Txn, seq uint64, edit func(*Record)) {
	t.Helper()
	r := getStored(t, txn, seqKey(prefixRecord, seq))
	edit(r)
	if err := txn.Set(seqKey(prefixRecord, seq), storedForm(r)); err != nil {
		t.Fatal(err)
	}
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

func TestLedger_Verify(t *testing.T) {
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forge := func(resign bool, dropCPs bool) func(t *testing.T, txn *badger.Txn) {
		return func(t *testing.T, txn *badger.Txn) {
			recs := loadRecords(t, txn)
			for _, r := range recs {
				r.Tool = "forged"
			}
			rehash(recs)
			for _, r := range recs {
				txn.Set(seqKey(prefixRecord, r.Seq), storedForm(r))
				txn.Set(principalKey(r.Principal, r.At, r.Seq), storedForm(r))
			}
			for _, s := range []uint64{10, 20, 30} {
				switch {
				case dropCPs:
					txn.Delete(seqKey(prefixCheckpoint, s))
				case resign:
					h, _ := parseHash(recs[s-1].Hash)
					cp := signCheckpoint(otherPriv, s, h, t0)
					txn.Set(seqKey(prefixCheckpoint, s), cp.appendJSON(nil))
				}
			}
		}
	}
	tests := []struct {
		name       string
		tamper     func(t *testing.T, txn *badger.Txn)
		wantOK     bool
		wantBad    uint64
		wantReason string
	}{
		{"Untouched", func(t *testing.T, txn *badger.Txn) {}, true, 0, ""},
		{"ChangeField", func(t *testing.T, txn *badger.Txn) {
			editRecord(t, txn, 15, func(r *Record) { r.Tool = "tool-b" })
		}, false, 15, "hash does not match"},
		{"ChangeFieldNonCanonical", func(t *testing.T, txn *badger.Txn) {
			// Seq 15 as a two-byte varint: decodes to the same record, but
			// is not the one stored form.
			v := storedForm(getStored(t, txn, seqKey(prefixRecord, 15)))
			at := 1 + 1 + len(TypeCall) + 1 + len(OutcomeAllowed) + 1 + len("tool-a")
			if v[at] != 15 {
				t.Fatalf("seq byte: got %d, want 15", v[at])
			}
			v = append(v[:at:at], append([]byte{0x8f, 0x00}, v[at+1:]...)...)
			txn.Set(seqKey(prefixRecord, 15), v)
		}, false, 15, "undecodable"},
		{"TrailingBytes", func(t *testing.T, txn *badger.Txn) {
			v := storedForm(getStored(t, txn, seqKey(prefixRecord, 15)))
			txn.Set(seqKey(prefixRecord, 15), append(v, 0))
		}, false, 15, "undecodable"},
		{"DeleteRecord", func(t *testing.T, txn *badger.Txn) {
			txn.Delete(seqKey(prefixRecord, 15))
		}, false, 15, "missing"},
		{"SwapRecords", func(t *testing.T, txn *badger.Txn) {
			a, _ := txn.Get(seqKey(prefixRecord, 14))
			av, _ := a.ValueCopy(nil)
			b, _ := txn.Get(seqKey(prefixRecord, 15))
			bv, _ := b.ValueCopy(nil)
			txn.Set(seqKey(prefixRecord, 14), bv)
			txn.Set(seqKey(prefixRecord, 15), av)
		}, false, 14, "seq field says 15"},
		{"TruncateTail", func(t *testing.T, txn *badger.Txn) {
			for s := uint64(26); s <= 30; s++ {
				txn.Delete(seqKey(prefixRecord, s))
			}
		}, false, 26, "truncated"},
		{"ForgeryKeepingCheckpoints", forge(false, false), false, 1, "does not match the chain"},
		{"ForgeryResigned", forge(true, false), false, 1, "signature does not verify"},
		{"ForgeryWithoutCheckpoints", forge(false, true), false, 1, "no signed checkpoint"},
		// The principal index holds copies of the records that replays
		// read; each must equal its chained record.
		{"PrincipalIndexCopyEdited", func(t *testing.T, txn *badger.Txn) {
			k := principalKey("key:a", atOf(t, txn, 15), 15)
			r := getStored(t, txn, k)
			r.Outcome = OutcomeDenied
			rehash([]*Record{r}) // even a self-consistent copy must fail
			txn.Set(k, storedForm(r))
		}, false, 15, "principal index: entry for record 15 does not match the record"},
		{"PrincipalIndexEntryDeleted", func(t *testing.T, txn *badger.Txn) {
			txn.Delete(principalKey("key:a", atOf(t, txn, 15), 15))
		}, false, 15, "principal index: entry for record 15 missing"},
		{"PrincipalIndexEntryMoved", func(t *testing.T, txn *badger.Txn) {
			k := principalKey("key:a", atOf(t, txn, 15), 15)
			item, _ := txn.Get(k)
			v, _ := item.ValueCopy(nil)
			txn.Delete(k)
			txn.Set(principalKey("key:b", atOf(t, txn, 15), 15), v)
		}, false, 15, "principal index: entry for record 15 under the wrong key"},
		{"PrincipalIndexEntryForged", func(t *testing.T, txn *badger.Txn) {
			r := getStored(t, txn, seqKey(prefixRecord, 15))
			r.Seq = 31
			txn.Set(principalKey("key:a", atOf(t, txn, 15).Add(time.Hour), 31), storedForm(r))
		}, false, 31, "principal index: entry for record 31, which does not exist"},
		{"TimeIndexEntryDeleted", func(t *testing.T, txn *badger.Txn) {
			txn.Delete(timeKey(atOf(t, txn, 12), 12))
		}, false, 12, "time index: entry for record 12 missing"},
		{"TimeIndexFilterEdited", func(t *testing.T, txn *badger.Txn) {
			txn.Set(timeKey(atOf(t, txn, 12), 12), []byte("call\x00denied\x00tool-a"))
		}, false, 12, "time index: entry for record 12 does not match"},
		{"BalanceIndexStale", func(t *testing.T, txn *badger.Txn) {
			txn.Set(balanceKey("key:a"), binary.BigEndian.AppendUint64(nil, 5))
		}, false, 25, "balance index"},
		{"BalanceIndexDeleted", func(t *testing.T, txn *badger.Txn) {
			txn.Delete(balanceKey("key:a"))
		}, false, 25, "balance index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, pub := buildStopped(t)
			db := openDB(t, dir, false)
			if err := db.Update(func(txn *badger.Txn) error { tt.tamper(t, txn); return nil }); err != nil {
				t.Fatal(err)
			}
			db.Close()
			// Offline, as `toolgate audit verify` on a stopped data dir.
			db = openDB(t, dir, true)
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
	l, _, _ := newLedger(t, Options{CheckpointEvery: 10, Now: stepClock(time.Minute)})
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
		l.db.Update(func(txn *badger.Txn) error {
			editRecord(t, txn, 3, func(r *Record) { r.Tool = "u" })
			return nil
		})
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
