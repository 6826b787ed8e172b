package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

func adminRec(principal, kind, state string) *Record {
	return &Record{Type: TypeAdmin, Principal: principal, Kind: kind, Actor: "admin@127.0.0.1", State: json.RawMessage(state)}
}

// TestLedger_AdminRecords: admin records chain, verify, export and read
// back through their index; call and txn records keep the version 1
// stored form; an admin index entry removed or edited is detected.
func TestLedger_AdminRecords(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		l, _, _ := newLedger(t, Options{})
		call := callRec("key:k1", "t", OutcomeAllowed)
		adm := adminRec("key:k1", KindKeyCreated, `{"key_id":"k1","name":"a \"b\""}`)
		rev := adminRec("key:k1", KindKeyRevoked, `{"key_id":"k1","revoked_at":"2026-11-26T09:00:00Z"}`)
		if err := l.Append(call, adm).Wait(); err != nil {
			t.Fatal(err)
		}
		if err := l.Append(rev).Wait(); err != nil {
			t.Fatal(err)
		}
		if rep := l.Verify(); !rep.OK || rep.Records != 3 {
			t.Fatalf("Verify: got %+v, want ok with 3 records", rep)
		}
		var got []*Record
		if err := l.AdminRecords(func(r *Record) error { got = append(got, r); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Seq != 2 || got[1].Seq != 3 {
			t.Fatalf("AdminRecords: got %d records, want seqs 2 and 3", len(got))
		}
		if string(got[0].AppendJSON(nil)) != string(adm.AppendJSON(nil)) {
			t.Errorf("AdminRecords: got %s, want %s", got[0].AppendJSON(nil), adm.AppendJSON(nil))
		}
		js := string(adm.AppendJSON(nil))
		if want := `"kind":"key_created","actor":"admin@127.0.0.1","state":{"key_id":"k1","name":"a \"b\""},"prev":`; !strings.Contains(js, want) {
			t.Errorf("JSON: got %s, want it to contain %s", js, want)
		}
		var back Record
		if err := json.Unmarshal([]byte(js), &back); err != nil || string(back.AppendJSON(nil)) != js {
			t.Errorf("JSON round trip: got %s (%v), want %s", back.AppendJSON(nil), err, js)
		}
		for seq, want := range map[uint64]byte{1: binaryVersion, 2: binaryVersion2} {
			if v := storedRecord(t, l, seq); v[0] != want {
				t.Errorf("record %d stored as version %d, want %d", seq, v[0], want)
			}
		}
		var buf bytes.Buffer
		if err := l.Export(&buf, time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if rep := VerifyExport(&buf, l.PublicKey()); !rep.OK || rep.Records != 3 {
			t.Errorf("VerifyExport: got %+v, want ok with 3 records", rep)
		}
	})
	t.Run("ErrInvalidRecord", func(t *testing.T) {
		l, _, _ := newLedger(t, Options{})
		for _, st := range []string{`{ "a":1}`, `[1]`, `{"a":}`, `"x"`, "{\"a\":\"\xff\"}"} {
			if err := l.Append(adminRec("key:k1", KindKeyCreated, st)).Wait(); !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("state %q: got %v, want ErrInvalidRecord", st, err)
			}
		}
	})
	t.Run("IndexTampered", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			edit func(l *Ledger, txn *badger.Txn) error
		}{
			{"deleted", func(l *Ledger, txn *badger.Txn) error { return txn.Delete(seqKey(prefixAdmin, 2)) }},
			{"extra", func(l *Ledger, txn *badger.Txn) error {
				return txn.Set(seqKey(prefixAdmin, 1), append([]byte(nil), storedRecord(t, l, 1)...))
			}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				l, db, _ := newLedger(t, Options{})
				if err := l.Append(callRec("key:k1", "t", OutcomeAllowed), adminRec("key:k1", KindKeyCreated, `{"key_id":"k1"}`)).Wait(); err != nil {
					t.Fatal(err)
				}
				if rep := l.Verify(); !rep.OK {
					t.Fatalf("Verify before: %+v", rep)
				}
				if err := db.Update(func(txn *badger.Txn) error { return tt.edit(l, txn) }); err != nil {
					t.Fatal(err)
				}
				rep := l.Verify()
				if rep.OK || !strings.Contains(rep.Reason, "admin index") {
					t.Errorf("Verify: got %+v, want the admin index named", rep)
				}
			})
		}
	})
}

// TestLedger_AdminRecordsAfter: only the admin records after a seq are
// read, in seq order; RecordHash gives a record's chain hash and says when
// there is no such record.
func TestLedger_AdminRecordsAfter(t *testing.T) {
	l, _, _ := newLedger(t, Options{})
	for i := range 3 {
		if err := l.Append(callRec("key:k1", "t", OutcomeAllowed), adminRec("key:k1", KindKeyRevoked, `{"key_id":"k1","n":`+string(rune('0'+i))+`}`)).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		after uint64
		want  []uint64
	}{{0, []uint64{2, 4, 6}}, {2, []uint64{4, 6}}, {3, []uint64{4, 6}}, {5, []uint64{6}}, {6, nil}, {1 << 63, nil}, {^uint64(0), nil}} {
		var got []uint64
		if err := l.AdminRecordsAfter(tt.after, func(r *Record) error { got = append(got, r.Seq); return nil }); err != nil {
			t.Fatal(err)
		}
		if !slicesEqual(got, tt.want) {
			t.Errorf("AdminRecordsAfter(%d): got %v, want %v", tt.after, got, tt.want)
		}
	}
	seq, head := l.Head()
	got, ok, err := l.RecordHash(seq)
	if err != nil || !ok || got != head {
		t.Errorf("RecordHash(%d): got %q %v %v, want %q", seq, got, ok, err, head)
	}
	if _, ok, err := l.RecordHash(seq + 1); ok || err != nil {
		t.Errorf("RecordHash(%d) past the head: got ok %v, %v; want no record", seq+1, ok, err)
	}
}

func slicesEqual(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
