package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServe_DiskFull runs the gateway on a small tmpfs, fills it, and
// checks that billed calls and management writes get 503 (never a crash:
// badger's mmapped log would fault on a full disk), that free calls follow
// fail_mode open, and that the gateway recovers by itself when space
// returns, with its ledger intact.
func TestServe_DiskFull(t *testing.T) {
	dir := t.TempDir()
	fs := filepath.Join(dir, "fs")
	os.MkdirAll(fs, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", fs).CombinedOutput(); err != nil {
		// Only root (CAP_SYS_ADMIN) can mount; the test machines here run
		// as root, a developer's laptop may not.
		t.Skipf("SKIPPED: the disk-full test needs to mount a tmpfs (run as root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fs).Run() })

	up := writeConfig(t, dir)
	free := `{"tools":[
 {"id":"paid","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/p"},
 {"id":"free","rate_class":"light","upstream":"` + up + `/f"}]}`
	os.WriteFile(filepath.Join(dir, "tools.json"), []byte(free), 0o600)

	// The later --data wins over startGateway's own.
	p := startGateway(t, dir, "--data", filepath.Join(fs, "data"), "--min-free-mb", "150")
	waitStatus := func(path string, want int) []byte {
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body, err := tryReq(p.url + path)
			if err == nil && code == want {
				return body
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
				t.Fatalf("%s: got %d %s %v, want %d; log:\n%.3000s", path, code, body, err, want, log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus("/readyz", 200)
	secret, _ := p.createKey(`{}`)
	if code, _ := p.req("POST", "/tools/paid", `{}`, "X-API-Key", secret); code != 200 {
		t.Fatalf("paid call before: %d", code)
	}

	// Fill the filesystem to 100 MB free, below the 150 MB floor.
	var st syscall.Statfs_t
	syscall.Statfs(fs, &st)
	fill := int64(st.Bavail)*int64(st.Bsize) - 100<<20
	if out, err := exec.Command("fallocate", "-l", itoa(fill), filepath.Join(fs, "filler")).CombinedOutput(); err != nil {
		t.Fatalf("fallocate: %v %s", err, out)
	}
	body := waitStatus("/readyz", 503)
	if !strings.Contains(string(body), "low on space") {
		t.Fatalf("readyz: %s", body)
	}
	for i := 0; i < 50; i++ {
		code, body := p.req("POST", "/tools/paid", `{}`, "X-API-Key", secret)
		if code != 503 || !strings.Contains(string(body), "nothing was charged") {
			t.Fatalf("paid call on a full disk: got %d %s, want 503", code, body)
		}
		if code, _ := p.req("POST", "/tools/free", `{}`, "X-API-Key", secret); code != 200 {
			t.Fatalf("free call on a full disk (fail_mode open): got %d, want 200", code)
		}
	}
	if code, _ := p.admin("POST", "/credits/keys", `{}`); code != 503 {
		t.Fatalf("key creation on a full disk: got %d, want 503", code)
	}
	if p.cmd.ProcessState != nil {
		t.Fatal("gateway died on a full disk")
	}

	// Space returns: the gateway recovers by itself.
	os.Remove(filepath.Join(fs, "filler"))
	waitStatus("/readyz", 200)
	if code, b := p.req("POST", "/tools/paid", `{}`, "X-API-Key", secret); code != 200 {
		t.Fatalf("paid call after space returned: %d %s", code, b)
	}
	code, b := p.admin("GET", "/audit/verify", "")
	if code != 200 || jsonField(t, b, "ok") != true {
		t.Fatalf("verify: %d %s", code, b)
	}
	_, audit := p.admin("GET", "/audit?outcome=allowed&tool=paid", "")
	if n := strings.Count(string(audit), "\n"); n != 2 {
		t.Fatalf("paid calls recorded: got %d, want 2 (refused calls ran nothing and cost nothing)", n)
	}
	p.stop(syscall.SIGTERM)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
