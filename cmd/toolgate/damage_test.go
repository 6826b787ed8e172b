package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// copyDir copies the regular files of a directory tree.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		return copyFile(path, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dst, "data", "checkpoint.key"), 0o600)
}

// serveMustRefuse runs `toolgate serve` on dir and returns its output;
// the test fails if it ever answers /healthz or exits 0.
func serveMustRefuse(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	addr := freePort(t)
	args := append([]string{"serve", "--listen", addr, "--data", filepath.Join(dir, "data"),
		"--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json"),
		"--admin-token", testAdmin}, extra...)
	cmd := exec.Command(binPath, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("serve exited 0 on a damaged store:\n%s", out.String())
			}
			return out.String()
		case <-deadline:
			cmd.Process.Kill()
			<-done
			t.Fatalf("serve neither refused nor exited:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
			if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
				resp.Body.Close()
				cmd.Process.Kill()
				<-done
				t.Fatalf("serve accepted a damaged store silently:\n%s", out.String())
			}
		}
	}
}

// TestServe_DamagedStore flips bytes in a stopped data dir and checks
// that the gateway refuses to start, naming the damage, never serving
// from it: in badger's write-ahead log after kill -9 right after a
// revocation (the revocation's own entry: the key would come back; the
// first entry: every key would vanish), and in a table file after a
// clean stop (a key_id would change). Letting badger drop the damaged
// writes (--accept-log-damage) is still refused, by the check of keys
// and policies against the ledger's admin records, naming the key, and
// `audit rebuild-state` then puts the revocation and the override back.
func TestServe_DamagedStore(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir)
	secret, keepID := p.createKey(`{"name":"keep"}`)
	revokedSecret, revokedID := p.createKey(`{"name":"revoke me"}`)
	if code, b := p.admin("PUT", "/credits/keys/"+keepID+"/policy", `{"deny_tools":["code_execute"]}`); code != 200 {
		t.Fatalf("put policy: %d %s", code, b)
	}
	if code, b := p.admin("DELETE", "/credits/keys/"+revokedID, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	p.cmd.Process.Kill() // kill -9 right after the revocation
	p.cmd.Wait()
	pristine := filepath.Join(t.TempDir(), "pristine")
	copyDir(t, dir, pristine)

	fresh := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "gw")
		copyDir(t, pristine, d)
		return d
	}
	memFile := func(t *testing.T, d string) (string, []byte) {
		files, _ := filepath.Glob(filepath.Join(d, "data", "store", "*.mem"))
		if len(files) != 1 {
			t.Fatalf("want one memtable log, got %v", files)
		}
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		return files[0], b
	}
	// flipRevocation flips a byte inside the value of the last write of
	// the revoked key's row: its revocation.
	flipRevocation := func(t *testing.T, d string) {
		path, b := memFile(t, d)
		i := bytes.LastIndex(b, []byte("k/"+revokedID))
		if i < 0 {
			t.Fatal("revocation not found in the memtable log")
		}
		b[i+len("k/"+revokedID)+8+4] ^= 0x20
		os.WriteFile(path, b, 0o600)
	}

	t.Run("LogRevocationFlipped", func(t *testing.T) {
		d := fresh(t)
		flipRevocation(t, d)
		out := serveMustRefuse(t, d)
		if !strings.Contains(out, "write-ahead log") || !strings.Contains(out, "damaged") {
			t.Fatalf("refusal does not name the damaged log:\n%s", out)
		}
	})
	t.Run("LogFirstEntryFlipped", func(t *testing.T) {
		d := fresh(t)
		path, b := memFile(t, d)
		b[walFileHeader+12] ^= 0x01
		os.WriteFile(path, b, 0o600)
		out := serveMustRefuse(t, d)
		if !strings.Contains(out, "write-ahead log") {
			t.Fatalf("refusal does not name the damaged log:\n%s", out)
		}
		vout, err := exec.Command(binPath, "audit", "verify", "--offline", "--data", filepath.Join(d, "data")).CombinedOutput()
		if err == nil || !strings.Contains(string(vout), "write-ahead log") {
			t.Fatalf("verify --offline on a damaged log: %v\n%s", err, vout)
		}
	})
	t.Run("LogDamageAccepted", func(t *testing.T) {
		d := fresh(t)
		flipRevocation(t, d)
		out := serveMustRefuse(t, d, "--accept-log-damage")
		for _, want := range []string{"key " + revokedID + ": revoked in the ledger", "rebuild-state"} {
			if !strings.Contains(out, want) {
				t.Fatalf("refusal does not say %q:\n%s", want, out)
			}
		}
		rb, err := exec.Command(binPath, "audit", "rebuild-state", "--data", filepath.Join(d, "data")).CombinedOutput()
		if err != nil || !strings.Contains(string(rb), revokedID) {
			t.Fatalf("rebuild-state: %v\n%s", err, rb)
		}
		p := startGateway(t, d)
		if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", revokedSecret); code != 401 {
			t.Fatalf("revoked key after rebuild: got %d, want 401", code)
		}
		if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 200 {
			t.Fatalf("kept key after rebuild: got %d, want 200", code)
		}
		if code, _ := p.req("POST", "/tools/code_execute", `{}`, "X-API-Key", secret); code != 403 {
			t.Fatalf("override after rebuild: got %d, want 403", code)
		}
		code, b := p.admin("GET", "/audit/verify", "")
		if code != 200 || jsonField(t, b, "ok") != true {
			t.Fatalf("verify after rebuild: %d %s", code, b)
		}
		p.stop(syscall.SIGTERM)
	})
	t.Run("TableFlipped", func(t *testing.T) {
		d := fresh(t)
		// A clean start and stop flushes everything into a table file.
		os.RemoveAll(filepath.Join(d, "gateway.log"))
		p := startGateway(t, d)
		p.stop(syscall.SIGTERM)
		tables, _ := filepath.Glob(filepath.Join(d, "data", "store", "*.sst"))
		if len(tables) == 0 {
			t.Fatal("no table file after a clean stop")
		}
		b, _ := os.ReadFile(tables[0])
		i := bytes.Index(b, []byte("k/"+keepID))
		if i < 0 {
			i = len(b) / 3 // compressed or prefix-encoded: any data byte will do
		}
		b[i+3] ^= 0x01
		os.WriteFile(tables[0], b, 0o600)
		out := serveMustRefuse(t, d)
		if low := strings.ToLower(out); !strings.Contains(low, "checksum") && !strings.Contains(low, "open store") {
			t.Fatalf("refusal does not name the damaged table:\n%s", out)
		}
	})
}
