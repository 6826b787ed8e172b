package ledger

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/money"
)

var t0 = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

// stepClock returns a clock that starts at t0 and advances step per call.
func stepClock(step time.Duration) func() time.Time {
	var n atomic.Int64
	return func() time.Time { return t0.Add(time.Duration(n.Add(1)-1) * step) }
}

func openDB(t testing.TB, dir string, readOnly bool) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "db")).WithLogger(nil).WithReadOnly(readOnly))
	if err != nil {
		t.Fatalf("badger.Open: %v", err)
	}
	return db
}

// newLedger opens a ledger on a fresh data dir; cleanup closes both.
func newLedger(t testing.TB, opts Options) (*Ledger, *badger.DB, string) {
	t.Helper()
	dir := t.TempDir()
	db := openDB(t, dir, false)
	l, err := Open(db, dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		l.Close()
		db.Close()
	})
	return l, db, dir
}

func callRec(principal, tool, outcome string) *Record {
	return &Record{Type: TypeCall, Principal: principal, Tool: tool, Outcome: outcome,
		RateClass: "light", Status: 200, Cost: 10_000, SpendDay: "2026-11-26"}
}

func collect(t *testing.T, l *Ledger, q Query) []*Record {
	t.Helper()
	var out []*Record
	err := l.Query(q, func(r *Record) error {
		c := *r
		out = append(out, &c)
		return nil
	})
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	return out
}

func TestLedger_AppendWaitQuery(t *testing.T) {
	l, _, _ := newLedger(t, Options{Now: stepClock(time.Second)})
	bal := money.Micros(4_990_000)
	call := &Record{Type: TypeCall, RequestID: "req-1", Principal: "wallet:0xabc", Tier: "x402",
		Tool: "email/send", RateClass: "medium", Outcome: OutcomeAllowed, Status: 200, Cost: 10_000,
		SpendDay: "2026-11-26", LatencyUS: 1234, UpstreamStatus: 200, UpstreamLatencyUS: 1000,
		Reason:  "quote \" backslash \\ nl \n tab \t é",
		Payment: &Payment{Version: 2, Scheme: "exact", Network: "eip155:84532", Payer: "0xabc", Amount: 10_000, Nonce: "0x01"}}
	txn := &Record{Type: TypeTxn, Principal: "key:k1", Kind: KindDebit, Amount: 10_000, BalanceAfter: &bal,
		At: time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.FixedZone("x", 3600))}
	zeroBal := money.Micros(0)
	txn2 := &Record{Type: TypeTxn, Principal: "wallet:0xabc", Kind: KindX402Settlement, Amount: 10_000,
		Payer: "0xabc", Network: "eip155:84532", TxHash: "0xdead", BalanceAfter: &zeroBal}
	if err := l.Append(call, txn).Wait(); err != nil {
		t.Fatalf("Wait: got %v, want nil", err)
	}
	if err := l.Append(txn2).Wait(); err != nil {
		t.Fatalf("Wait: got %v, want nil", err)
	}
	if call.Seq != 1 || txn.Seq != 2 || txn2.Seq != 3 {
		t.Fatalf("seqs: got %d %d %d, want 1 2 3", call.Seq, txn.Seq, txn2.Seq)
	}
	if call.Prev != fmt.Sprintf("%064x", 0) || txn.Prev != call.Hash || txn2.Prev != txn.Hash {
		t.Fatalf("prev links broken: %q %q %q", call.Prev, txn.Prev, txn2.Prev)
	}
	if !txn.At.Equal(time.Date(2026, 11, 26, 9, 0, 0, 123456789, time.UTC)) || txn.At.Location() != time.UTC {
		t.Errorf("At: got %v, want UTC 09:00:00.123456789", txn.At)
	}
	if seq, hash := l.Head(); seq != 3 || hash != txn2.Hash {
		t.Errorf("Head: got %d %s, want 3 %s", seq, hash, txn2.Hash)
	}
	got := collect(t, l, Query{})
	want := []*Record{call, txn, txn2}
	// The query orders by At: txn's explicit At (09:00:00.12) is after
	// call's clock time (09:00:00) and txn2's (09:00:01) comes last.
	if len(got) != len(want) {
		t.Fatalf("Query: got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if r := l.Verify(); !r.OK || r.Records != 3 || r.Checkpoints != 1 {
		t.Errorf("Verify: got %+v, want ok with 3 records, 1 checkpoint", r)
	}
	b, _ := call.MarshalJSON()
	var back Record
	if err := back.UnmarshalJSON(b); err != nil || !reflect.DeepEqual(&back, call) {
		t.Errorf("JSON round trip: got %+v (%v), want %+v", back, err, call)
	}
}

func TestLedger_Append(t *testing.T) {
	t.Run("ErrInvalidRecord", func(t *testing.T) {
		l, _, _ := newLedger(t, Options{})
		tests := []struct {
			name string
			rec  *Record
		}{
			{"unknown type", &Record{Type: "other"}},
			{"at out of range", &Record{Type: TypeCall, At: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}},
			{"nul in principal", &Record{Type: TypeCall, Principal: "a\x00b"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ok := callRec("key:a", "t", OutcomeAllowed)
				if err := l.Append(ok, tt.rec).Wait(); !errors.Is(err, ErrInvalidRecord) {
					t.Fatalf("Wait: got %v, want ErrInvalidRecord", err)
				}
				if ok.Seq != 0 {
					t.Errorf("valid record in a rejected Append got seq %d, want 0", ok.Seq)
				}
			})
		}
		if seq, _ := l.Head(); seq != 0 {
			t.Errorf("Head: got %d, want 0", seq)
		}
	})
	t.Run("ErrClosed", func(t *testing.T) {
		l, _, _ := newLedger(t, Options{})
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := l.Append(callRec("key:a", "t", OutcomeAllowed)).Wait(); !errors.Is(err, ErrClosed) {
			t.Errorf("Wait: got %v, want ErrClosed", err)
		}
	})
	t.Run("InvalidUTF8", func(t *testing.T) {
		l, _, _ := newLedger(t, Options{})
		r := callRec("key:a", "t\xff", OutcomeAllowed)
		if err := l.Append(r).Wait(); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if r.Tool != "t\uFFFD" {
			t.Errorf("Tool: got %q, want %q", r.Tool, "t\uFFFD")
		}
		if rep := l.Verify(); !rep.OK {
			t.Errorf("Verify: got %+v, want ok", rep)
		}
	})
}

func TestLedger_AppendConcurrent(t *testing.T) {
	for _, mode := range []struct {
		name string
		sync SyncMode
	}{{"SyncAlways", SyncAlways}, {"SyncInterval", SyncInterval}} {
		t.Run(mode.name, func(t *testing.T) {
			h := &hooks{}
			l, _, _ := newLedger(t, Options{Sync: mode.sync, SyncEvery: 10 * time.Millisecond, hooks: h})
			const workers, each = 50, 200
			var mu sync.Mutex // a caller's own lock held around Append
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < each; i++ {
						mu.Lock()
						tk := l.Append(callRec(fmt.Sprintf("key:%d", w), "t", OutcomeAllowed))
						mu.Unlock()
						if err := tk.Wait(); err != nil {
							errs <- err
							return
						}
					}
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("Wait: %v", err)
			}
			commits := h.commits.Load()
			if commits >= workers*each {
				t.Errorf("commits: got %d, want fewer than %d records (group commit)", commits, workers*each)
			}
			t.Logf("%d records in %d commits", workers*each, commits)
			// Wait answers once records are journaled; read the store
			// directly only after the applier has caught up.
			if err := l.waitApplied(); err != nil {
				t.Fatalf("waitApplied: %v", err)
			}
			if got := storedSeqs(t, l); got != workers*each {
				t.Errorf("stored records: got %d, want %d", got, workers*each)
			}
			if rep := l.Verify(); !rep.OK || rep.Records != workers*each {
				t.Errorf("Verify: got %+v, want ok with %d records", rep, workers*each)
			}
		})
	}
}

func seqFromKey(k []byte) uint64 {
	var s uint64
	for _, c := range k[len(k)-8:] {
		s = s<<8 | uint64(c)
	}
	return s
}

func TestLedger_Reopen(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, false)
	l, err := Open(db, dir, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	pub := l.PublicKey()
	var lastHash string
	for i := 0; i < 5; i++ {
		r := callRec("key:a", "t", OutcomeAllowed)
		if err := l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
		lastHash = r.Hash
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode: got %v, want 0600", fi.Mode().Perm())
	}

	l, err = Open(db, dir, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if !pub.Equal(l.PublicKey()) {
		t.Errorf("PublicKey after reopen: got %x, want %x", l.PublicKey(), pub)
	}
	if seq, hash := l.Head(); seq != 5 || hash != lastHash {
		t.Errorf("Head after reopen: got %d %s, want 5 %s", seq, hash, lastHash)
	}
	r := callRec("key:a", "t", OutcomeAllowed)
	if err := l.Append(r).Wait(); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 6 || r.Prev != lastHash {
		t.Errorf("continued record: got seq %d prev %s, want 6 %s", r.Seq, r.Prev, lastHash)
	}
	if rep := l.Verify(); !rep.OK || rep.Records != 6 || rep.Checkpoints != 2 {
		t.Errorf("Verify: got %+v, want ok, 6 records, 2 checkpoints", rep)
	}
	l.Close()
	db.Close()

	t.Run("ReadOnly", func(t *testing.T) {
		db := openDB(t, dir, true)
		defer db.Close()
		l, err := Open(db, dir, Options{})
		if err != nil {
			t.Fatalf("Open read-only: %v", err)
		}
		defer l.Close()
		if rep := l.Verify(); !rep.OK || rep.Records != 6 {
			t.Errorf("Verify: got %+v, want ok with 6 records", rep)
		}
		if err := l.Append(callRec("key:a", "t", OutcomeAllowed)).Wait(); !errors.Is(err, ErrReadOnly) {
			t.Errorf("Append: got %v, want ErrReadOnly", err)
		}
	})
	t.Run("ErrKeyPermissions", func(t *testing.T) {
		if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(filepath.Join(dir, KeyFile), 0o600)
		db := openDB(t, dir, false)
		defer db.Close()
		if _, err := Open(db, dir, Options{}); !errors.Is(err, ErrKeyPermissions) {
			t.Errorf("Open: got %v, want ErrKeyPermissions", err)
		}
	})
}

func TestLedger_Checkpoints(t *testing.T) {
	l, db, _ := newLedger(t, Options{CheckpointEvery: 10})
	for i := 0; i < 25; i++ {
		if err := l.Append(callRec("key:a", "t", OutcomeAllowed)).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixCheckpoint, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			cp, err := decodeCheckpoint(v)
			if err != nil || !cp.Valid(l.PublicKey()) {
				t.Errorf("checkpoint %s: invalid (%v)", v, err)
			}
			seqs = append(seqs, cp.Seq)
		}
		return nil
	})
	if want := []uint64{10, 20, 25}; !reflect.DeepEqual(seqs, want) {
		t.Errorf("checkpoint seqs: got %v, want %v", seqs, want)
	}
}

func TestLedger_CheckpointInterval(t *testing.T) {
	l, _, _ := newLedger(t, Options{CheckpointEvery: -1, CheckpointInterval: 5 * time.Millisecond})
	if err := l.Append(callRec("key:a", "t", OutcomeAllowed)).Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		cp := l.cp.last()
		if cp == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint seq: got %d, want 1 within 5s", cp)
		}
		time.Sleep(time.Millisecond)
	}
}

// storedSeqs asserts that the store's records (in its segments) are
// seqs 1..n, gap-free, and returns n.
func storedSeqs(t testing.TB, l *Ledger) uint64 {
	t.Helper()
	var n uint64
	for _, v := range l.st.snapshot(listSel{}) {
		for i := 0; i < v.n; i++ {
			b, err := v.record(i)
			if err != nil {
				t.Fatal(err)
			}
			var r Record
			if err := r.decodeBinary(b); err != nil {
				t.Fatal(err)
			}
			if r.Seq != n+1 || v.first+uint64(i) != n+1 {
				t.Fatalf("stored seq: got %d (position %d), want %d", r.Seq, v.first+uint64(i), n+1)
			}
			n++
		}
	}
	return n
}

// storedRecord returns the stored form of record seq, read from the
// ledger's segments.
func storedRecord(t testing.TB, l *Ledger, seq uint64) []byte {
	t.Helper()
	v, ok, err := l.st.lookup(seq)
	if err != nil || !ok {
		t.Fatalf("record %d: found %v, %v", seq, ok, err)
	}
	return v
}
