package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServe_KeysSnapshot: a clean stop writes the keys snapshot and the
// seal names it; the next start takes its keys from it. A key revoked
// after it and then a crash (kill -9): the start still uses it, decodes
// the changed rows, and the revoked key is refused (401). The snapshot
// edited while the gateway is down: its SHA-256 is not the recorded one,
// every row is decoded (logged, with the reason) and the answers are
// the same. While serving, a key change is followed by a new snapshot
// (--keys-snapshot-every) that the mark names, so a crash start after it
// decodes nothing.
func TestServe_KeysSnapshot(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	data := filepath.Join(dir, "data")
	logText := func() string { return gatewayLog(dir) }
	// since returns the log written after mark.
	since := func(mark int) string { return logText()[mark:] }
	// started returns the log of a start from mark once its serving line
	// (which names keys_from) is written: /healthz can answer before it.
	started := func(mark int) string {
		waitFor(t, "the serving log line", func() bool { return strings.Contains(since(mark), "keys_from=") })
		return since(mark)
	}
	recorded := func(file string) string {
		var s struct {
			KeysSnapshot string `json:"keys_snapshot"`
		}
		b, err := os.ReadFile(filepath.Join(data, file))
		if err != nil || json.Unmarshal(b, &s) != nil {
			return ""
		}
		return s.KeysSnapshot
	}
	const fromSnapshot, fromRows = "keys: from the keys snapshot", "keys: every key row decoded"
	call := func(p *proc, secret string) int {
		code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret)
		return code
	}

	p := startGateway(t, dir)
	keep, _ := p.createKey(`{"name":"keep"}`)
	revoke, revokeID := p.createKey(`{"name":"revoke me"}`)
	p.stop(syscall.SIGTERM)
	sealed := recorded("state-seal")
	if sealed == "" || !strings.Contains(logText(), "keys snapshot written") {
		t.Fatalf("a clean stop wrote no snapshot, or the seal does not name it (%q):\n%s", sealed, logText())
	}
	if _, err := os.Stat(filepath.Join(data, "keys-snapshot-"+sealed[:16])); err != nil {
		t.Fatalf("the sealed snapshot: %v", err)
	}

	at := len(logText())
	p = startGateway(t, dir)
	if out := started(at); !strings.Contains(out, fromSnapshot) || !strings.Contains(out, "keys_from=snapshot ") {
		t.Fatalf("the start after a clean stop did not load from the snapshot:\n%s", out)
	}
	if code := call(p, keep); code != 200 {
		t.Fatalf("key after a snapshot start: got %d, want 200", code)
	}
	var before string
	waitFor(t, "the start's mark", func() bool {
		before = markDigest(data)
		return strings.Contains(markText(data), `"keys":2`) && recorded("state-mark") == sealed
	})
	if code, b := p.admin("DELETE", "/credits/keys/"+revokeID, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	waitFor(t, "the mark to follow the revocation", func() bool { return markDigest(data) != before })
	p.stop(syscall.SIGKILL)

	// The crash start: the snapshot is stale (the revocation came after
	// it); its changed group is decoded from the rows.
	at = len(logText())
	p = startGateway(t, dir)
	out := started(at)
	if !strings.Contains(out, fromSnapshot) || !strings.Contains(out, "groups_changed=1") || !strings.Contains(out, "keys_from=snapshot+rows") {
		t.Fatalf("the start after kill -9 did not use the stale snapshot for the unchanged rows only:\n%s", out)
	}
	if !strings.Contains(out, "as marked while the last run served") {
		t.Fatalf("the crash start did not use the mark:\n%s", out)
	}
	if code := call(p, revoke); code != 401 {
		t.Fatalf("key revoked after the snapshot: got %d, want 401", code)
	}
	if code := call(p, keep); code != 200 {
		t.Fatalf("unchanged key: got %d, want 200", code)
	}
	p.stop(syscall.SIGTERM)
	resealed := recorded("state-seal")
	if resealed == "" || resealed == sealed {
		t.Fatalf("the clean stop after a stale start did not write a new snapshot (seal names %q, before %q)", resealed, sealed)
	}

	// The snapshots edited while down (a byte in their records; the
	// one the mark names, the one before, is kept too): refused by their
	// SHA-256, every row decoded, the revoked key still refused.
	files, _ := filepath.Glob(filepath.Join(data, "keys-snapshot-*"))
	if len(files) != 2 {
		t.Fatalf("snapshot files %q, want the sealed one and the one before", files)
	}
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[40] ^= 1 // the first key's expiry
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	at = len(logText())
	p = startGateway(t, dir)
	out = started(at)
	if !strings.Contains(out, fromRows) || !strings.Contains(out, "SHA-256") || !strings.Contains(out, "keys_from=rows") {
		t.Fatalf("an edited snapshot was not refused, or the reason is not logged:\n%s", out)
	}
	if !strings.Contains(out, "as sealed at the last clean shutdown") {
		t.Fatalf("the seal did not match the rows after the snapshot was refused:\n%s", out)
	}
	if call(p, revoke) != 401 || call(p, keep) != 200 {
		t.Fatal("answers differ after a refused snapshot")
	}
	p.stop(syscall.SIGKILL)

	// While serving: a change, then a snapshot (written soon after with
	// --keys-snapshot-every 1s) that the mark names; a crash start after
	// it decodes nothing.
	at = len(logText())
	p = startGateway(t, dir, "--keys-snapshot-every", "1s")
	if !strings.Contains(started(at), fromRows) {
		t.Fatalf("a crash start after a refused snapshot (none written since) used one:\n%s", since(at))
	}
	fresh, _ := p.createKey(`{"name":"fresh"}`)
	waitFor(t, "a snapshot of the new key written while serving, named by the mark", func() bool {
		m := recorded("state-mark")
		return len(m) == 64 && snapshotKeys(filepath.Join(data, "keys-snapshot-"+m[:16])) == 3
	})
	p.stop(syscall.SIGKILL)
	at = len(logText())
	p = startGateway(t, dir)
	out = started(at)
	if !strings.Contains(out, "keys_from=snapshot ") || !strings.Contains(out, "groups_changed=0") {
		t.Fatalf("the crash start after a snapshot written while serving did not take every key from it:\n%s", out)
	}
	if call(p, fresh) != 200 || call(p, revoke) != 401 || call(p, keep) != 200 {
		t.Fatal("answers differ after a snapshot written while serving")
	}
	p.stop(syscall.SIGTERM)
}

func markText(data string) string {
	b, _ := os.ReadFile(filepath.Join(data, "state-mark"))
	return string(b)
}

func markDigest(data string) string {
	var m struct {
		Digest string `json:"keys_digest"`
	}
	json.Unmarshal([]byte(markText(data)), &m)
	return m.Digest
}

// snapshotKeys returns the number of keys a snapshot file holds (from
// its tail: keys, groups, table offset, sum, magic), -1 if unreadable.
func snapshotKeys(path string) int {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 68 {
		return -1
	}
	return int(binary.LittleEndian.Uint64(b[len(b)-68:]))
}

// waitFor polls cond until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
