package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// dirDigest maps every file under dir to its size, mode and SHA-256.
func dirDigest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			out[rel+"/"] = info.Mode().String()
			return nil
		}
		// Streamed: after kill -9 badger's value log is a sparse 2 GiB
		// file, and reading it whole (under -race) ran the test out of memory.
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%d %s %x", n, info.Mode(), h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffDigests(before, after map[string]string) []string {
	var diffs []string
	for k, v := range before {
		if after[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: %q -> %q", k, v, after[k]))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, k+": created")
		}
	}
	sort.Strings(diffs)
	return diffs
}

// loadAndKill runs callers against p until at least n calls were
// answered, then kills the process with SIGKILL while they still call.
func loadAndKill(t *testing.T, p *proc, secret string, n int64) {
	t.Helper()
	var answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", p.url+"/tools/extract/structured", strings.NewReader(`{}`))
				req.Header.Set("X-API-Key", secret)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				answered.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for answered.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d calls answered in 30 s", answered.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	close(stop)
	wg.Wait()
}

// TestAuditVerify_OfflineAfterCrash: after kill -9 under load, `audit
// verify --offline` verifies the data dir (store copied, journal checked
// in memory) without changing one byte of it; a damaged journal is still
// reported.
func TestAuditVerify_OfflineAfterCrash(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir)
	secret, _ := p.createKey(`{"policy":{"rate_class_quota":{"light":1000000},"daily_spend_cap_usd":null}}`)
	loadAndKill(t, p, secret, 300)
	data := filepath.Join(dir, "data")
	verify := func() ([]byte, error) {
		return exec.Command(binPath, "audit", "verify", "--offline", "--data", data).CombinedOutput()
	}

	before := dirDigest(t, data)
	out, err := verify()
	if err != nil {
		t.Fatalf("verify --offline after kill -9: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(`"ok":true`)) {
		t.Fatalf("verify --offline: got %s, want ok", out)
	}
	if d := diffDigests(before, dirDigest(t, data)); len(d) > 0 {
		t.Fatalf("verify --offline changed the data dir:\n%s", strings.Join(d, "\n"))
	}
	t.Logf("verify --offline: %s", bytes.TrimSpace(out))

	// Damage: one flipped byte in the journal's first frame (the last
	// frame may be torn by a crash; the first may not).
	segs, _ := filepath.Glob(filepath.Join(data, "ledger", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no journal after kill -9 (the test needs unapplied records)")
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8 || int(binary.LittleEndian.Uint32(b))+8 >= len(b) {
		t.Fatalf("journal %s holds fewer than two frames", segs[0])
	}
	b[8+2] ^= 0x01
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	before = dirDigest(t, data)
	out, err = verify()
	if err == nil || !strings.Contains(string(out), "does not verify") {
		t.Fatalf("verify --offline of a damaged journal: got %v\n%s\nwant a non-zero exit naming the damage", err, out)
	}
	if d := diffDigests(before, dirDigest(t, data)); len(d) > 0 {
		t.Fatalf("verify --offline changed the damaged data dir:\n%s", strings.Join(d, "\n"))
	}
}
