package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs with opts at a new directory, or skips the
// test saying why (only root can mount).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	fs := filepath.Join(t.TempDir(), "fs")
	os.MkdirAll(fs, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", fs).CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: this test needs to mount a tmpfs (run as root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fs).Run() })
	return fs
}

// fillInodes creates empty files under dir until the filesystem has no
// inode left, so that creating any file fails with ENOSPC (the same
// error a full disk gives, without badger's mmapped writes faulting).
func fillInodes(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if errors.Is(err, syscall.ENOSPC) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if i > 1<<20 {
			t.Fatal("the filesystem never ran out of inodes")
		}
	}
}

// waitExit waits up to limit for p to exit and returns its exit code.
func waitExit(t *testing.T, p *proc, limit time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		p.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the log
		time.Sleep(time.Second)
		p.cmd.Process.Kill()
		<-done
		return -1
	}
}

// waitLog polls the gateway log until its part after offset from
// contains want.
func waitLog(t *testing.T, dir string, from int, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
		if len(b) >= from && strings.Contains(string(b[from:]), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServe_ShutdownStoreCannotWrite: the data dir's filesystem fills
// (no inode left, so badger's final memtable flush cannot create its
// table file and retries forever) before SIGTERM. Shutdown is bounded by
// --shutdown-timeout, a second signal forces the exit while the store
// hangs, both exit non-zero naming what was not flushed, and the next
// start recovers every answered call and the revocation.
func TestServe_ShutdownStoreCannotWrite(t *testing.T) {
	fs := mountTmpfs(t, "size=400m,nr_inodes=4000")
	dir := t.TempDir()
	writeConfig(t, dir)
	data := []string{"--data", filepath.Join(fs, "data"), "--min-free-mb", "16"}
	call := func(p *proc, secret string) {
		t.Helper()
		for i := 0; i < 20; i++ {
			code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret)
			if code != 200 {
				t.Fatalf("call: got %d, want 200", code)
			}
		}
	}
	log := func() string { b, _ := os.ReadFile(filepath.Join(dir, "gateway.log")); return string(b) }

	p := startGateway(t, dir, append(data, "--shutdown-timeout", "3s")...)
	secret, _ := p.createKey(`{}`)
	_, revokedID := p.createKey(`{}`)
	call(p, secret)
	if code, b := p.admin("DELETE", "/credits/keys/"+revokedID, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	fillInodes(t, filepath.Join(fs, "filler"))
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	code := waitExit(t, p, 30*time.Second)
	if code == -1 {
		t.Fatalf("SIGTERM with a full data dir: still running after 30 s (--shutdown-timeout 3s); log:\n%s", log())
	}
	took := time.Since(start)
	if code == 0 {
		t.Fatalf("exit status 0 although the store could not be flushed; log:\n%s", log())
	}
	if want := "closing the store did not finish within --shutdown-timeout 3s"; !strings.Contains(log(), want) {
		t.Fatalf("exit message does not say %q; log:\n%s", want, log())
	}
	if !strings.Contains(log(), "0 inodes free") {
		t.Errorf("exit message does not show the full data dir; log:\n%s", log())
	}
	t.Logf("exited %d after %s", code, took.Round(time.Millisecond))

	// Again, with a long timeout: a second SIGTERM ends the hanging close.
	os.RemoveAll(filepath.Join(fs, "filler"))
	from := len(log())
	p = startGateway(t, dir, append(data, "--shutdown-timeout", "10m")...)
	call(p, secret)
	fillInodes(t, filepath.Join(fs, "filler"))
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitLog(t, dir, from, `step="closing the store"`, 30*time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, p, 30*time.Second); code == -1 || code == 0 {
		t.Fatalf("second SIGTERM while the store hangs: exit %d, want a prompt non-zero exit; log:\n%s", code, log())
	}
	if want := "forced exit (terminated) while closing the store"; !strings.Contains(log(), want) {
		t.Fatalf("exit message does not say %q; log:\n%s", want, log())
	}

	// Space returns: everything answered is there, the revocation too.
	os.RemoveAll(filepath.Join(fs, "filler"))
	p = startGateway(t, dir, data...)
	if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 200 {
		t.Fatalf("key after restart: got %d, want 200", code)
	}
	_, b := p.admin("GET", "/credits/keys/"+revokedID, "")
	if got := jsonField(t, b, "status"); got != "revoked" {
		t.Fatalf("revoked key after restart: status %v, want revoked", got)
	}
	_, audit := p.admin("GET", "/audit?since=1h&outcome=allowed", "")
	if n := strings.Count(string(audit), "\n"); n != 41 {
		t.Fatalf("allowed calls in the ledger after restart: got %d, want 41 (20 + 20 answered before, 1 after)", n)
	}
	code, b = p.admin("GET", "/audit/verify", "")
	if code != 200 || jsonField(t, b, "ok") != true {
		t.Fatalf("verify after restart: %d %s", code, b)
	}
	p.stop(syscall.SIGTERM)
	if p.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("clean stop with space: exit %d; log:\n%s", p.cmd.ProcessState.ExitCode(), log())
	}
}
