package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestServe_StateSeal: a clean stop seals the management state; the next
// start uses the seal (and removes it) instead of re-reading the ledger's
// history; a key row edited back to active after its revocation was
// sealed is still refused by the full check, naming the key: the seal
// never lets a lost revocation through.
func TestServe_StateSeal(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	data := filepath.Join(dir, "data")
	seal := filepath.Join(data, "state-seal")
	logText := func() string { return gatewayLog(dir) }
	const used = "as sealed at the last clean shutdown"

	p := startGateway(t, dir)
	secret, id := p.createKey(`{"name":"revoke me"}`)
	p.stop(syscall.SIGTERM)
	if _, err := os.Stat(seal); err != nil {
		t.Fatalf("no seal after a clean stop: %v\n%s", err, logText())
	}
	if strings.Contains(logText(), used) {
		t.Fatal("the first start claims a seal")
	}
	p = startGateway(t, dir)
	if !strings.Contains(logText(), used) {
		t.Fatalf("second start did not use the seal:\n%s", logText())
	}
	if _, err := os.Stat(seal); !os.IsNotExist(err) {
		t.Fatalf("seal still there while serving: %v", err)
	}
	if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 200 {
		t.Fatalf("key after a sealed start: got %d, want 200", code)
	}
	if code, b := p.admin("DELETE", "/credits/keys/"+id, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	p.stop(syscall.SIGTERM)
	if _, err := os.Stat(seal); err != nil {
		t.Fatalf("no seal after the second clean stop: %v", err)
	}

	// The key's row edited back to active (its revocation dropped), the
	// ledger and the seal left as the clean stop wrote them.
	unrevokeRow(t, data, id)
	out := serveMustRefuse(t, dir)
	if !strings.Contains(out, "key "+id+": revoked in the ledger") {
		t.Fatalf("refusal does not name the revoked key:\n%s", out)
	}
	if strings.Contains(out, used) {
		t.Fatalf("the seal was used on a store that does not match it:\n%s", out)
	}
}

// TestServe_StateMark: after a crash (kill -9, no seal) the start uses the
// state mark written while serving instead of re-reading the ledger's
// history, and a revoked key stays refused; a key row edited back to
// active after the crash changes the keys' digest, so the full check
// runs and refuses the store, naming the key.
func TestServe_StateMark(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	data := filepath.Join(dir, "data")
	mark := filepath.Join(data, "state-mark")
	logText := func() string { return gatewayLog(dir) }
	const used = "as marked while the last run served"

	p := startGateway(t, dir)
	secret, id := p.createKey(`{"name":"revoke me"}`)
	if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 200 {
		t.Fatalf("new key: got %d, want 200", code)
	}
	// waitMark polls until the mark satisfies ok and returns its keys'
	// digest: each change's mark is written just after its answer.
	waitMark := func(what string, ok func(keys int, digest string) bool) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var m struct {
				Keys   int    `json:"keys"`
				Digest string `json:"keys_digest"`
			}
			b, err := os.ReadFile(mark)
			if err == nil && json.Unmarshal(b, &m) == nil && ok(m.Keys, m.Digest) {
				return m.Digest
			}
			if time.Now().After(deadline) {
				t.Fatalf("the state mark did not follow %s: %s (%v)\n%s", what, b, err, logText())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	active := waitMark("the creation", func(n int, _ string) bool { return n == 1 })
	if code, b := p.admin("DELETE", "/credits/keys/"+id, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	waitMark("the revocation", func(n int, d string) bool { return n == 1 && d != active })
	p.stop(syscall.SIGKILL)
	if _, err := os.Stat(filepath.Join(data, "state-seal")); !os.IsNotExist(err) {
		t.Fatalf("setup: a seal after kill -9: %v", err)
	}

	p = startGateway(t, dir)
	if !strings.Contains(logText(), used) {
		t.Fatalf("the start after a crash did not use the mark:\n%s", logText())
	}
	if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 401 {
		t.Fatalf("revoked key after a marked start: got %d, want 401", code)
	}
	p.stop(syscall.SIGKILL)

	// The key's row edited back to active, the ledger and the mark left
	// as the crash left them.
	unrevokeRow(t, data, id)
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("setup: no mark left by the crash: %v", err)
	}
	out := serveMustRefuse(t, dir)
	if !strings.Contains(out, "key "+id+": revoked in the ledger") {
		t.Fatalf("refusal does not name the revoked key:\n%s", out)
	}
	if strings.Contains(out, used) || !strings.Contains(out, "the keys differ from the marked ones") {
		t.Fatalf("the mark was used on a store that does not match it, or the reason is not given:\n%s", out)
	}
}

// unrevokeRow edits key id's row in the store of data dir back to active
// (its revocation dropped), leaving the ledger as it is: the tampering a
// start's state check must catch.
func unrevokeRow(t *testing.T, data, id string) {
	t.Helper()
	db, err := badger.Open(storeOptions(filepath.Join(data, "store"), false))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("k/" + id))
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		var row map[string]any
		if err := json.Unmarshal(v, &row); err != nil {
			return err
		}
		if _, ok := row["revoked_at"]; !ok {
			t.Fatalf("setup: the stored row has no revocation: %s", v)
		}
		delete(row, "revoked_at")
		v, _ = json.Marshal(row)
		return txn.Set([]byte("k/"+id), v)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}
