package gateway_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
)

type markEnv struct {
	dir       string
	led       *ledger.Ledger
	keys      *identity.Store
	overrides gateway.OverrideStore
	log       *slog.Logger
}

func newMarkEnv(t *testing.T) *markEnv {
	t.Helper()
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "store")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	led, err := ledger.Open(db, dir, ledger.Options{Sync: ledger.SyncInterval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	keys, err := identity.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	return &markEnv{dir: dir, led: led, keys: keys, overrides: policy.NewOverrides(db),
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// TestCheckStateAtStart_Mark: without a seal, the state mark is used only
// when the ledger still holds its record with its hash, holds no
// management record after it, and the keys and overrides digest as
// marked; call records after it do not matter; keys expired since the
// marked check are recorded; anything else runs the full check.
func TestCheckStateAtStart_Mark(t *testing.T) {
	e := newMarkEnv(t)
	t0 := time.Now().UTC().Truncate(time.Second)
	if _, _, err := e.keys.Create("stays", time.Time{}, t0); err != nil {
		t.Fatal(err)
	}
	_, soon, err := e.keys.Create("expires", t0.Add(time.Hour), t0)
	if err != nil {
		t.Fatal(err)
	}
	seal, mark := filepath.Join(e.dir, gateway.SealFile), filepath.Join(e.dir, gateway.MarkFile)
	check := func(now time.Time) string {
		t.Helper()
		how, err := gateway.CheckStateAtStart(seal, mark, e.led, e.keys, e.overrides, now, e.log)
		if err != nil {
			t.Fatal(err)
		}
		return how
	}
	marked := func(checkedAt time.Time) {
		t.Helper()
		if err := gateway.NewStateMarker(mark, e.led, e.keys, e.overrides, checkedAt, e.log).Mark(); err != nil {
			t.Fatal(err)
		}
	}
	expiries := func() int {
		n := 0
		e.led.AdminRecords(func(r *ledger.Record) error {
			if r.Kind == ledger.KindKeyExpired && r.Principal == soon.Principal {
				n++
			}
			return nil
		})
		return n
	}
	call := func() {
		t.Helper()
		if err := e.led.Append(&ledger.Record{Type: ledger.TypeCall, Principal: soon.Principal, Tool: "t", Outcome: "allowed"}).Wait(); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("NoMark", func(t *testing.T) {
		if got := check(t0); got != gateway.CheckedInFull { // adopts the keys
			t.Fatalf("got %q, want %q", got, gateway.CheckedInFull)
		}
	})
	t.Run("OK", func(t *testing.T) {
		marked(t0)
		call() // calls after the mark change no management state
		if got := check(t0.Add(time.Minute)); got != gateway.CheckedByMark {
			t.Fatalf("got %q, want %q", got, gateway.CheckedByMark)
		}
		// The mark stays (a crash before the next one is written uses it
		// again).
		if got := check(t0.Add(time.Minute)); got != gateway.CheckedByMark {
			t.Fatalf("second start: got %q, want %q", got, gateway.CheckedByMark)
		}
	})
	t.Run("SealFirst", func(t *testing.T) {
		if err := gateway.SealState(seal, e.led, e.keys, e.overrides, t0, ""); err != nil {
			t.Fatal(err)
		}
		if got := check(t0.Add(time.Minute)); got != gateway.CheckedBySeal {
			t.Fatalf("got %q, want %q", got, gateway.CheckedBySeal)
		}
	})
	t.Run("ExpiredSince", func(t *testing.T) {
		marked(t0.Add(time.Minute))
		if got := check(t0.Add(2 * time.Hour)); got != gateway.CheckedByMark {
			t.Fatalf("got %q, want %q", got, gateway.CheckedByMark)
		}
		if got := expiries(); got != 1 {
			t.Fatalf("expiry records: got %d, want 1", got)
		}
		// The expiry record is newer than the mark: the next start checks
		// in full (and records nothing more).
		if got := check(t0.Add(2 * time.Hour)); got != gateway.CheckedInFull {
			t.Fatalf("after the expiry record: got %q, want %q", got, gateway.CheckedInFull)
		}
		if got := expiries(); got != 1 {
			t.Fatalf("expiry records after the full check: got %d, want 1", got)
		}
	})
	t.Run("AdminRecordAfter", func(t *testing.T) {
		marked(t0.Add(3 * time.Hour))
		if err := e.led.Append(&ledger.Record{Type: ledger.TypeAdmin, Principal: "key:k_x", Kind: ledger.KindPolicyDeleted, Actor: "test", State: []byte(`{"policy":null}`)}).Wait(); err != nil {
			t.Fatal(err)
		}
		if got := check(t0.Add(3 * time.Hour)); got != gateway.CheckedInFull {
			t.Fatalf("got %q, want %q", got, gateway.CheckedInFull)
		}
	})
	t.Run("KeyChanged", func(t *testing.T) {
		marked(t0.Add(3 * time.Hour))
		if _, err := e.keys.Revoke(soon.ID, t0.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got := check(t0.Add(3 * time.Hour)); got != gateway.CheckedInFull {
			t.Fatalf("got %q, want %q", got, gateway.CheckedInFull)
		}
	})
	t.Run("OverrideChanged", func(t *testing.T) {
		marked(t0.Add(3 * time.Hour))
		if err := e.overrides.Put(soon.Principal, &policy.Policy{}); err != nil {
			t.Fatal(err)
		}
		if _, err := gateway.CheckStateAtStart(seal, mark, e.led, e.keys, e.overrides, t0.Add(3*time.Hour), e.log); err == nil {
			t.Fatal("an override the ledger never recorded passed")
		}
		if err := e.overrides.Delete(soon.Principal); err != nil {
			t.Fatal(err)
		}
	})
	edit := func(t *testing.T, field string, change func(string) string) {
		t.Helper()
		marked(t0.Add(3 * time.Hour))
		b, _ := os.ReadFile(mark)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m[field] = change(m[field].(string))
		b, _ = json.Marshal(m)
		os.WriteFile(mark, b, 0o600)
		if got := check(t0.Add(3 * time.Hour)); got != gateway.CheckedInFull {
			t.Fatalf("got %q, want %q", got, gateway.CheckedInFull)
		}
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[5] == '0' {
			b[5] = '1'
		} else {
			b[5] = '0'
		}
		return string(b)
	}
	t.Run("DamagedDigest", func(t *testing.T) { edit(t, "keys_digest", flip) })
	t.Run("OtherChain", func(t *testing.T) { edit(t, "ledger_hash", flip) })
	t.Run("ClockBehind", func(t *testing.T) {
		edit(t, "checked_at", func(string) string { return t0.Add(24 * time.Hour).Format(time.RFC3339) })
	})
	t.Run("Broken", func(t *testing.T) {
		m := gateway.NewStateMarker(mark, e.led, e.keys, e.overrides, t0.Add(3*time.Hour), e.log)
		if err := m.Mark(); err != nil {
			t.Fatal(err)
		}
		m.Broken()
		if _, err := os.Stat(mark); !os.IsNotExist(err) {
			t.Fatalf("mark left after Broken: %v", err)
		}
		if err := m.Mark(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(mark); !os.IsNotExist(err) {
			t.Fatalf("mark written after Broken: %v", err)
		}
	})
}

// TestStateMarker_Concurrent: marks taken while changes run never see a
// change half done: every mark counts exactly the keys whose creation
// records its ledger seq covers.
func TestStateMarker_Concurrent(t *testing.T) {
	e := newMarkEnv(t)
	path := filepath.Join(e.dir, gateway.MarkFile)
	m := gateway.NewStateMarker(path, e.led, e.keys, e.overrides, time.Now(), e.log)
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				m.Change(func() {
					_, k, err := e.keys.Create("c", time.Time{}, time.Now())
					if err != nil {
						t.Error(err)
						return
					}
					// The store changed; its record follows, as in the
					// management API.
					if err := gateway.RecordKeyChange(e.led, time.Now(), "test", ledger.KindKeyCreated, k); err != nil {
						t.Error(err)
					}
				})
				m.Changed(false)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	checked := 0
	for stop := false; !stop; {
		select {
		case <-done:
			stop = true
		default:
		}
		if err := m.Mark(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Seq  uint64 `json:"ledger_seq"`
			Keys int    `json:"keys"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		created := 0
		e.led.AdminRecords(func(r *ledger.Record) error {
			if r.Seq <= s.Seq && r.Kind == ledger.KindKeyCreated {
				created++
			}
			return nil
		})
		if created != s.Keys {
			t.Fatalf("mark at seq %d counts %d keys; the ledger created %d up to it", s.Seq, s.Keys, created)
		}
		checked++
	}
	if e.keys.Len() != writers*each {
		t.Fatalf("keys: got %d, want %d", e.keys.Len(), writers*each)
	}
	t.Logf("%d marks checked", checked)
}
