package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/oauth/oauthtest"
)

// TestProcess_Auth: `toolgate serve --auth` trusts a real OIDC provider's
// tokens; `validate --auth` reports auth.json problems with their paths;
// SIGHUP reloads auth.json with policies.json, and a broken auth.json is
// refused while the old one keeps serving.
func TestProcess_Auth(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	prov := oauthtest.Start(t)
	authPath := filepath.Join(dir, "auth.json")
	write := func(claims string) {
		os.WriteFile(authPath, []byte(`{"version":1,"resource":"https://gw.example","issuers":[{"alias":"corp","issuer":"`+prov.Issuer()+`","claims":`+claims+`}]}`), 0o600)
	}
	write(`{}`)

	bad := filepath.Join(dir, "bad-auth.json")
	os.WriteFile(bad, []byte(`{"issuers":[{"alias":"corp","issuer":"`+prov.Issuer()+`","tier":"nope","algorithms":["HS256"]}]}`), 0o600)
	out, err := exec.Command(binPath, "validate", "--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json"), "--auth", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `$.issuers[0].algorithms[0]: "HS256" is never allowed`) {
		t.Fatalf("validate bad auth.json: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "validate", "--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json"), "--auth", authPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "(1 issuers)") {
		t.Fatalf("validate auth.json: %v\n%s", err, out)
	}

	p := startGateway(t, dir, "--auth", authPath)
	tok := prov.Sign(t, prov.Claims("alice", "https://gw.example", "tools:none", time.Now(), time.Hour))
	call := func() (int, []byte) {
		return p.req("POST", "/tools/extract/structured", `{}`, "Authorization", "Bearer "+tok)
	}
	if code, b := call(); code != 200 {
		t.Fatalf("token call: %d %s", code, b)
	}
	if code, b := p.req("GET", "/authorization/status", "", "Authorization", "Bearer "+tok); code != 200 || jsonField(t, b, "principal") != "oidc:corp:alice" {
		t.Fatalf("status: %d %s", code, b)
	}

	os.WriteFile(authPath, []byte(`{"issuers":[`), 0o600) // broken: refused, the old one serves
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitForLog(t, dir, "reload refused")
	if code, b := call(); code != 200 {
		t.Fatalf("after a refused reload: %d %s", code, b)
	}

	write(`{"scope":{"tools:none":{"allow_tools":[]}}}`) // the token's scope now allows nothing
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, b := call()
		if code == 403 {
			if jsonField(t, b, "reason") != "not_in_allow_tools" {
				t.Fatalf("after reload: %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("auth.json not reloaded: %d %s", code, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop(syscall.SIGTERM)
}

// waitForLog waits until the gateway's log in dir contains s.
func waitForLog(t *testing.T, dir, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(filepath.Join(dir, "gateway.log")); strings.Contains(string(b), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
	t.Fatalf("log never said %q:\n%s", s, b)
}
