package main

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestServe_ReloadUnderLoad: SIGHUP swaps policies.json and tools.json while
// clients call; no call fails, the new configuration applies whole, and an
// invalid file is refused while the old configuration keeps serving.
func TestServe_ReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir)
	secret, _ := p.createKey(`{"policy":{"rate_class_quota":{"light":1000000},"daily_spend_cap_usd":null}}`)

	var bad atomic.Int64
	var total atomic.Int64
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
				total.Add(1)
				if err != nil || resp.StatusCode != 200 {
					bad.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	waitLoad(t, 50, func() int { return int(total.Load()) })

	// 1. A new tool and a new enforced deny arrive together.
	tools, _ := os.ReadFile(filepath.Join(dir, "tools.json"))
	newTools := strings.Replace(string(tools), `]}`, `,
 {"id":"new/tool","rate_class":"light","upstream":"http://127.0.0.1:1/n"}]}`, 1)
	os.WriteFile(filepath.Join(dir, "tools.json"), []byte(newTools), 0o600)
	pol, _ := os.ReadFile(filepath.Join(dir, "policies.json"))
	newPol := strings.Replace(string(pol), `"enforced": { "deny_tools": [] }`, `"enforced": { "deny_tools": ["new/tool"] }`, 1)
	if newPol == string(pol) {
		t.Fatal("could not edit policies.json")
	}
	os.WriteFile(filepath.Join(dir, "policies.json"), []byte(newPol), 0o600)
	hash0, n0 := p.configState()
	p.cmd.Process.Signal(syscall.SIGHUP)
	hash1, n1 := p.waitReload(n0, func() {
		// Until the reload is seen, the old configuration serves whole.
		if code, body := p.req("POST", "/tools/new/tool", `{}`, "X-API-Key", secret); code != 404 &&
			(code != 403 || !strings.Contains(string(body), "enforced_deny")) {
			t.Fatalf("new tool during reload: got %d %s (a half-applied state?)", code, body)
		}
	})
	if hash1 == hash0 || n1 != n0+1 {
		t.Fatalf("after SIGHUP: config_hash %s reloads %d, want a new hash and %d", hash1, n1, n0+1)
	}
	// Both files applied: the tool exists and the new deny covers it.
	if code, body := p.req("POST", "/tools/new/tool", `{}`, "X-API-Key", secret); code != 403 || !strings.Contains(string(body), "enforced_deny") {
		t.Fatalf("new tool after the reload: got %d %s, want 403 enforced_deny", code, body)
	}

	// 2. An invalid file is refused; the running configuration stays.
	os.WriteFile(filepath.Join(dir, "policies.json"), []byte(`{"version":1,"defaults":{"deny_tools":["a*b"]}}`), 0o600)
	refused := p.logCount("reload refused")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog("reload refused", refused+1)
	if hash, n := p.configState(); hash != hash1 || n != n1 {
		t.Fatalf("after a refused reload: config_hash %s reloads %d, want %s and %d unchanged", hash, n, hash1, n1)
	}
	if code, body := p.req("POST", "/tools/new/tool", `{}`, "X-API-Key", secret); code != 403 {
		t.Fatalf("after a refused reload: got %d %s, want the old 403", code, body)
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d calls failed during reloads", bad.Load(), total.Load())
	}
	log, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
	if !strings.Contains(string(log), "reload refused") || !strings.Contains(string(log), "a*b") {
		t.Fatalf("refused reload not logged with its problem:\n%s", log)
	}
	p.stop(syscall.SIGTERM)
}

// TestServe_GracefulShutdown: SIGTERM under load lets in-flight calls
// finish; every call a client got an answer for is in the ledger after a
// restart, and the process exits 0.
func TestServe_GracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir)
	secret, _ := p.createKey(`{}`)

	var mu sync.Mutex
	answered := map[string]bool{}
	var broken []error // errors other than a refused connection
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One connection per call: an error is then either a refused
			// connection (not accepted) or a call cut off after it was.
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
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
					if !errors.Is(err, syscall.ECONNREFUSED) {
						mu.Lock()
						broken = append(broken, err)
						mu.Unlock()
					}
					return
				}
				resp.Body.Close()
				mu.Lock()
				answered[resp.Header.Get("X-Request-Id")] = true
				mu.Unlock()
			}
		}()
	}
	waitLoad(t, 50, func() int { mu.Lock(); defer mu.Unlock(); return len(answered) })
	p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.cmd.Wait()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	p = startGateway(t, dir)
	code, body := p.admin("GET", "/audit?since=1h&type=call", "")
	if code != 200 {
		t.Fatal(code)
	}
	for id := range answered {
		if !strings.Contains(string(body), `"request_id":"`+id+`"`) {
			t.Fatalf("answered call %s missing from the ledger after graceful shutdown", id)
		}
	}
	if len(answered) < 20 {
		t.Fatalf("only %d calls answered; no load", len(answered))
	}
	// The other way round: every call the gateway took in was answered. A
	// client error is allowed only for a connection the gateway never read
	// from (refused, or reset in the kernel's accept queue when the
	// listener closed): such a call has no record.
	recorded := strings.Count(string(body), `"type":"call"`)
	if recorded != len(answered) {
		t.Fatalf("%d calls recorded but %d answered: %d accepted calls were cut off (client errors: %v)",
			recorded, len(answered), recorded-len(answered), broken)
	}
	p.stop(syscall.SIGTERM)
}

// TestServe_AccessLog: one structured line per call, and no secret in the
// log (API key, admin token).
func TestServe_AccessLog(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir, "--log-format", "json")
	secret, _ := p.createKey(`{}`)
	p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret)
	p.req("POST", "/tools/code_execute", `{}`, "Authorization", "Bearer "+secret)
	p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", "it-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA")
	p.stop(syscall.SIGTERM)
	log, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
	calls := strings.Count(string(log), `"msg":"call"`)
	if calls != 3 {
		t.Fatalf("got %d call lines, want 3:\n%s", calls, log)
	}
	for _, want := range []string{`"outcome":"allowed"`, `"outcome":"unauthenticated"`, `"request_id":"`, `"cost_usd":"0.010"`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	for _, secretText := range []string{secret, secret[3:], testAdmin, "AAAA-AAAA"} {
		if strings.Contains(string(log), secretText) {
			t.Fatalf("log contains a secret (%q)", secretText)
		}
	}
}

// TestServe_WatchConfig: with --watch-config a changed policies.json is
// applied without a signal.
func TestServe_WatchConfig(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir, "--watch-config")
	secret, _ := p.createKey(`{}`)
	if code, _ := p.req("POST", "/tools/code_execute", `{}`, "X-API-Key", secret); code != 200 {
		t.Fatalf("before: got %d", code)
	}
	pol, _ := os.ReadFile(filepath.Join(dir, "policies.json"))
	newPol := strings.Replace(string(pol), `"enforced": { "deny_tools": [] }`, `"enforced": { "deny_tools": ["code_execute"] }`, 1)
	hash0, n0 := p.configState()
	os.WriteFile(filepath.Join(dir, "policies.json"), []byte(newPol), 0o600)
	hash1, n1 := p.waitReload(n0, nil)
	if hash1 == hash0 || n1 != n0+1 {
		t.Fatalf("after the change: config_hash %s reloads %d, want a new hash and %d", hash1, n1, n0+1)
	}
	if code, body := p.req("POST", "/tools/code_execute", `{}`, "X-API-Key", secret); code != 403 || !strings.Contains(string(body), "enforced_deny") {
		t.Fatalf("after the reload: got %d %s, want 403 enforced_deny", code, body)
	}

	// An invalid change is refused; the applied configuration stays.
	refused := p.logCount("reload refused")
	os.WriteFile(filepath.Join(dir, "policies.json"), []byte(`{"version":1,"defaults":{"deny_tools":["a*b"]}}`), 0o600)
	p.waitLog("reload refused", refused+1)
	if hash, n := p.configState(); hash != hash1 || n != n1 {
		t.Fatalf("after a refused reload: config_hash %s reloads %d, want %s and %d unchanged", hash, n, hash1, n1)
	}
	if code, body := p.req("POST", "/tools/code_execute", `{}`, "X-API-Key", secret); code != 403 {
		t.Fatalf("after a refused reload: got %d %s, want the applied 403", code, body)
	}
	p.stop(syscall.SIGTERM)
}

// configState returns the configuration serving, as /readyz reports it:
// its hash and the reloads applied since start.
func (p *proc) configState() (hash string, reloads int) {
	p.t.Helper()
	code, body := p.req("GET", "/readyz", "")
	if code != 200 {
		p.t.Fatalf("readyz: got %d %s", code, body)
	}
	hash, _ = jsonField(p.t, body, "config_hash").(string)
	n, _ := jsonField(p.t, body, "reloads").(float64)
	if len(hash) != 64 {
		p.t.Fatalf("readyz config_hash %q, want 64 hex digits (%s)", hash, body)
	}
	return hash, int(n)
}

// waitReload waits until /readyz reports more than after reloads applied
// and returns the new state. each, if not nil, runs on every poll.
func (p *proc) waitReload(after int, each func()) (hash string, reloads int) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if hash, reloads = p.configState(); reloads > after {
			return hash, reloads
		}
		if each != nil {
			each()
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.log.Name())
			p.t.Fatalf("no reload observed within 10 s (reloads %d); log:\n%s", reloads, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logCount counts the gateway log's lines containing s.
func (p *proc) logCount(s string) int {
	p.t.Helper()
	b, err := os.ReadFile(p.log.Name())
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// waitLog waits until the gateway log has n lines containing s.
func (p *proc) waitLog(s string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.logCount(s) < n {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.log.Name())
			p.t.Fatalf("log has %d lines with %q within 10 s, want %d:\n%s", p.logCount(s), s, n, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServe_DrainDelay: after SIGTERM with --drain-delay, /readyz answers
// 503 while calls are still served with Connection: close; then the
// process exits 0.
func TestServe_DrainDelay(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir, "--drain-delay", "1500ms")
	secret, _ := p.createKey(`{}`)
	p.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(time.Second)
	for {
		code, body, err := tryReq(p.url + "/readyz")
		if err == nil && code == 503 && strings.Contains(string(body), "draining") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz while draining: got %d %s %v, want 503 draining", code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	req, _ := http.NewRequest("POST", p.url+"/tools/extract/structured", strings.NewReader(`{}`))
	req.Header.Set("X-API-Key", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("call while draining: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("call while draining: got %d, Connection close %v; want 200 and close", resp.StatusCode, resp.Close)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// TestKeys_CLI: the keys subcommand against a running gateway and, with
// --offline, against its stopped data dir.
func TestKeys_CLI(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	p := startGateway(t, dir)
	data := filepath.Join(dir, "data")
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(binPath, append(args, "--url", p.url, "--admin-token", testAdmin, "--data", data)...).CombinedOutput()
		if err != nil {
			t.Fatalf("toolgate %v: %v\n%s", args, err, out)
		}
		return out
	}
	online := run("keys", "create", "--name", "cli")
	secret := jsonField(t, online, "secret").(string)
	if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 200 {
		t.Fatalf("CLI-created key: got %d", code)
	}
	p.stop(syscall.SIGTERM)

	off := run("keys", "create", "--offline", "--name", "offline")
	offSecret := jsonField(t, off, "secret").(string)
	offID := jsonField(t, off, "key_id").(string)
	run("keys", "revoke", "--offline", jsonField(t, online, "key_id").(string))
	list := run("keys", "list", "--offline")
	if !strings.Contains(string(list), offID) || strings.Contains(string(list), secret) {
		t.Fatalf("offline list: %s", list)
	}

	p = startGateway(t, dir)
	if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", offSecret); code != 200 {
		t.Fatalf("offline-created key after start: got %d, want 200", code)
	}
	if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 401 {
		t.Fatalf("offline-revoked key after start: got %d, want 401", code)
	}
	p.stop(syscall.SIGTERM)
}
