package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/money"
)

// buildLegacy writes a data dir in the layout of the code before
// segments were kept: 30 records (a top-up at 5, a debit at 25, an admin
// record at 12, checkpoints at 10, 20, 30) under l/r/ with their l/t/,
// l/p/, l/a/ and l/b/ entries, checkpoints under l/c/ and l/applied.
// With journalFrom > 0, badger holds only the records before it
// (l/applied = journalFrom-1, and no checkpoint after it) and a legacy
// journal segment DATA/ledger-<journalFrom-2>.wal holds the records from
// journalFrom-2 on (it overlaps, as an untrimmed one does). It returns
// the data dir and the records.
func buildLegacy(t *testing.T, journalFrom uint64) (string, []*Record) {
	t.Helper()
	// The records and checkpoints, made by the current code.
	src := t.TempDir()
	sdb := openDB(t, src, false)
	l, err := Open(sdb, src, Options{CheckpointEvery: 10, Now: stepClock(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*Record
	for i := 0; i < 30; i++ {
		r := callRec([]string{"key:a", "key:b", ""}[i%3], "tool-a", OutcomeAllowed)
		switch i {
		case 4, 24:
			bal := money.Micros(100 - 2*i)
			r = &Record{Type: TypeTxn, Principal: "key:a", Kind: KindTopup, Amount: 100, BalanceAfter: &bal}
		case 11:
			r = adminRec("key:a", KindKeyCreated, `{"key_id":"a"}`)
		}
		if err := l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var cps [][2][]byte
	sdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixCheckpoint, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			cps = append(cps, [2][]byte{it.Item().KeyCopy(nil), v})
		}
		return nil
	})
	sdb.Close()
	key, err := os.ReadFile(filepath.Join(src, KeyFile))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, dir, false)
	defer db.Close()
	inStore := uint64(30)
	if journalFrom > 0 {
		inStore = journalFrom - 1
	}
	err = db.Update(func(txn *badger.Txn) error {
		for _, r := range recs[:inStore] {
			v := storedForm(r)
			txn.Set(seqKey(prefixRecord, r.Seq), v)
			txn.Set(timeKey(r.At, r.Seq), indexValue(r))
			if r.Principal != "" {
				txn.Set(principalKey(r.Principal, r.At, r.Seq), v)
			}
			if r.Type == TypeAdmin {
				txn.Set(seqKey(prefixAdmin, r.Seq), v)
			}
			if r.Type == TypeTxn && r.BalanceAfter != nil {
				txn.Set(balanceKey(r.Principal), binary.BigEndian.AppendUint64(nil, r.Seq))
			}
		}
		for _, cp := range cps {
			if binary.BigEndian.Uint64(cp[0][len(prefixCheckpoint):]) <= inStore {
				txn.Set(cp[0], cp[1])
			}
		}
		return txn.Set(keyApplied, binary.BigEndian.AppendUint64(nil, inStore))
	})
	if err != nil {
		t.Fatal(err)
	}
	if journalFrom > 0 {
		var seg []byte
		for _, r := range recs[journalFrom-3:] {
			v := storedForm(r)
			body := append(binary.AppendUvarint(nil, uint64(len(v))), v...)
			seg = binary.LittleEndian.AppendUint32(seg, uint32(len(body)))
			seg = binary.LittleEndian.AppendUint32(seg, crc32Checksum(body))
			seg = append(seg, body...)
		}
		name := filepath.Join(dir, journalPrefix+segName(journalFrom-2, journalSuffix))
		if err := os.WriteFile(name, seg, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, recs
}

// exportRecords returns the record lines of an export.
func exportRecords(t *testing.T, l *Ledger) []string {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Export(&buf, time.Time{}, time.Time{}); err != nil {
		t.Fatalf("Export: %v", err)
	}
	if rep := VerifyExport(bytes.NewReader(buf.Bytes()), l.PublicKey()); !rep.OK {
		t.Fatalf("VerifyExport: %+v", rep)
	}
	var out []string
	for _, ln := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(ln, `{"seq"`) {
			out = append(out, ln)
		}
	}
	return out
}

// TestOpen_Legacy: a data dir of the old layout (records in badger, and
// after a crash a journal the store lacks) opens: read-only without a
// byte changed (a temporary migration), writable by migrating it into
// segments, with the chain, checkpoints, queries, balances and admin
// records as they were, byte for byte.
func TestOpen_Legacy(t *testing.T) {
	for _, tt := range []struct {
		name        string
		journalFrom uint64
	}{{"Clean", 0}, {"WithJournal", 21}} {
		t.Run(tt.name, func(t *testing.T) {
			dir, recs := buildLegacy(t, tt.journalFrom)
			var want []string
			for _, r := range recs {
				want = append(want, string(r.AppendJSON(nil)))
			}
			check := func(l *Ledger) {
				t.Helper()
				got := collect(t, l, Query{Principal: "key:a"})
				n := 0
				for _, r := range recs {
					if r.Principal == "key:a" {
						if n >= len(got) || string(got[n].AppendJSON(nil)) != string(r.AppendJSON(nil)) {
							t.Fatalf("principal query: record %d differs", r.Seq)
						}
						n++
					}
				}
				if n != len(got) {
					t.Fatalf("principal query: got %d records, want %d", len(got), n)
				}
				var bal []money.Micros
				if err := l.LatestBalances(func(p string, b money.Micros) error { bal = append(bal, b); return nil }); err != nil || len(bal) != 1 || bal[0] != 52 {
					t.Errorf("LatestBalances: got %v, %v, want [52]", bal, err)
				}
				var adm []uint64
				if err := l.AdminRecords(func(r *Record) error { adm = append(adm, r.Seq); return nil }); err != nil || len(adm) != 1 || adm[0] != 12 {
					t.Errorf("AdminRecords: got %v, %v, want [12]", adm, err)
				}
			}

			// Read-only: nothing written, the journal checked in memory.
			before := dirDigest(t, dir)
			ro := openDB(t, dir, true)
			l, err := Open(ro, dir, Options{})
			if err != nil {
				t.Fatalf("read-only Open: %v", err)
			}
			rep := l.Verify()
			wantJournal := 0
			if tt.journalFrom > 0 {
				wantJournal = 30 - int(tt.journalFrom) + 1
			}
			if !rep.OK || rep.Records != 30 || rep.JournalRecords != wantJournal {
				t.Errorf("Verify read-only: got %+v, want ok, 30 records, %d in the journal", rep, wantJournal)
			}
			if tt.journalFrom == 0 {
				if got := exportRecords(t, l); strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("export of the legacy store differs from the records")
				}
				check(l)
			} else if err := l.Export(&bytes.Buffer{}, time.Time{}, time.Time{}); !errors.Is(err, ErrJournalPending) {
				t.Errorf("Export read-only with a journal: got %v, want ErrJournalPending", err)
			}
			l.Close()
			ro.Close()
			if d := diffDigest(before, dirDigest(t, dir)); d != "" {
				t.Fatalf("read-only Open changed the data dir: %s", d)
			}

			// Writable: migrated.
			db := openDB(t, dir, false)
			defer db.Close()
			l, err = Open(db, dir, Options{CheckpointEvery: 10})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if seq, h := l.Head(); seq != 30 || h != recs[29].Hash {
				t.Fatalf("Head after migration: got %d %s, want 30 %s", seq, h, recs[29].Hash)
			}
			if rep := l.Verify(); !rep.OK || rep.Records != 30 {
				t.Fatalf("Verify after migration: %+v", rep)
			}
			if got := exportRecords(t, l); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("export after migration differs from the records")
			}
			check(l)
			if legacy, _ := hasPrefix(db, prefixRecord); legacy {
				t.Error("legacy record keys left in badger after the migration")
			}
			if segs, _ := listSegments(dir); len(segs) > 0 {
				t.Errorf("legacy journal left after the migration: %v", segs)
			}
			r := callRec("key:a", "t", OutcomeAllowed)
			if err := l.Append(r).Wait(); err != nil || r.Seq != 31 || r.Prev != recs[29].Hash {
				t.Fatalf("Append after migration: got %d %s %v", r.Seq, r.Prev, err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, err = Open(db, dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if rep := l.Verify(); !rep.OK || rep.Records != 31 {
				t.Fatalf("Verify after reopen: %+v", rep)
			}
		})
	}
	t.Run("JournalDamaged", func(t *testing.T) {
		dir, _ := buildLegacy(t, 21)
		segs, _ := listSegments(dir)
		b, _ := os.ReadFile(segs[0].path)
		b[frameHeader+3] ^= 0x40 // the first frame, not the last
		os.WriteFile(segs[0].path, b, 0o600)
		db := openDB(t, dir, false)
		defer db.Close()
		if _, err := Open(db, dir, Options{}); !errors.Is(err, ErrTampered) {
			t.Fatalf("Open of a legacy store with a damaged journal: got %v, want ErrTampered", err)
		}
		if _, err := os.Stat(filepath.Join(dir, segDir)); err == nil {
			t.Error("a refused migration left DATA/ledger behind")
		}
	})
}

// dirDigest maps each file under dir to its contents.
func dirDigest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			out[p] = string(b)
		}
		return nil
	})
	return out
}

func diffDigest(a, b map[string]string) string {
	for p, v := range a {
		if w, ok := b[p]; !ok || w != v {
			return "changed or removed: " + p
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			return "added: " + p
		}
	}
	return ""
}
