package gateway_test

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
)

// TestCheckStateSealed: the seal is used only when the ledger's head, the
// keys and the overrides are exactly as sealed, at most once, and keys
// that expired since the sealed check are recorded as the full check
// records them.
func TestCheckStateSealed(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "store")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	led, err := ledger.Open(db, dir, ledger.Options{Sync: ledger.SyncInterval})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	keys, err := identity.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	overrides := policy.NewOverrides(db)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t0 := time.Now().UTC().Truncate(time.Second)
	if _, _, err := keys.Create("stays", time.Time{}, t0); err != nil {
		t.Fatal(err)
	}
	_, soon, err := keys.Create("expires", t0.Add(time.Hour), t0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, gateway.SealFile)
	check := func(now time.Time) bool {
		t.Helper()
		sealed, err := gateway.CheckStateSealed(path, led, keys, overrides, now, log)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("seal left in place after a start check (%v)", err)
		}
		return sealed
	}
	seal := func(checkedAt time.Time) {
		t.Helper()
		if err := gateway.SealState(path, led, keys, overrides, checkedAt, ""); err != nil {
			t.Fatal(err)
		}
	}
	expiries := func() int {
		n := 0
		led.AdminRecords(func(r *ledger.Record) error {
			if r.Kind == ledger.KindKeyExpired && r.Principal == soon.Principal {
				n++
			}
			return nil
		})
		return n
	}

	t.Run("NoSeal", func(t *testing.T) {
		if check(t0) { // adopts the keys into the ledger
			t.Fatal("sealed without a seal")
		}
	})
	t.Run("OK", func(t *testing.T) {
		seal(t0)
		if !check(t0.Add(time.Minute)) {
			t.Fatal("a matching seal was not used")
		}
		if check(t0.Add(time.Minute)) {
			t.Fatal("the seal was used twice")
		}
	})
	t.Run("ExpiredSince", func(t *testing.T) {
		seal(t0.Add(time.Minute))
		if !check(t0.Add(2 * time.Hour)) {
			t.Fatal("a matching seal was not used")
		}
		if got := expiries(); got != 1 {
			t.Fatalf("expiry records: got %d, want 1", got)
		}
		// The next sealed start (checked after the expiry) records none.
		seal(t0.Add(2 * time.Hour))
		if !check(t0.Add(3 * time.Hour)) {
			t.Fatal("a matching seal was not used")
		}
		if got := expiries(); got != 1 {
			t.Fatalf("expiry records after a second sealed start: got %d, want 1", got)
		}
	})
	t.Run("KeyChanged", func(t *testing.T) {
		seal(t0.Add(3 * time.Hour))
		// Changed behind the ledger's back: the full check runs (and
		// records the revocation, which always wins).
		if _, err := keys.Revoke(soon.ID, t0.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if check(t0.Add(3 * time.Hour)) {
			t.Fatal("seal used after a key changed")
		}
	})
	t.Run("OverrideChanged", func(t *testing.T) {
		seal(t0.Add(3 * time.Hour))
		if err := overrides.Put(soon.Principal, &policy.Policy{}); err != nil {
			t.Fatal(err)
		}
		if _, err := gateway.CheckStateSealed(path, led, keys, overrides, t0.Add(3*time.Hour), log); err == nil {
			t.Fatal("an override the ledger never recorded passed")
		}
		if err := overrides.Delete(soon.Principal); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("LedgerMoved", func(t *testing.T) {
		seal(t0.Add(3 * time.Hour))
		if err := led.Append(&ledger.Record{Type: ledger.TypeAdmin, Principal: "key:k_x", Kind: ledger.KindPolicyDeleted, Actor: "test", State: []byte(`{"policy":null}`)}).Wait(); err != nil {
			t.Fatal(err)
		}
		if check(t0.Add(3 * time.Hour)) {
			t.Fatal("seal used after the ledger moved")
		}
	})
	t.Run("Damaged", func(t *testing.T) {
		seal(t0.Add(3 * time.Hour))
		b, _ := os.ReadFile(path)
		i := bytes.Index(b, []byte(`"keys_digest":"`))
		if i < 0 {
			t.Fatalf("setup: no keys_digest in %s", b)
		}
		b[i+20] ^= 0x01 // a hex digit of the digest
		os.WriteFile(path, b, 0o600)
		if check(t0.Add(3 * time.Hour)) {
			t.Fatal("a damaged seal was used")
		}
	})
}
