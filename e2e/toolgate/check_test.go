package toolgate_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
)

// TestX402Check runs `toolgate x402 check --url` against a running gateway
// with the reference facilitator: every check passes (warnings allowed:
// the test URL is not https) and the exit code is 0; against a port
// nobody listens on it fails with exit code 1 and says how to fix it.
func TestX402Check(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaFacilitator)
	// code_execute: no wallet may call it (unknown_wallet denies it), so
	// its unpaid probes (REST and MCP) are refused and it cannot be
	// listed: the only failures.
	out, err := exec.Command(binary, "x402", "check", "--url", e.gw.url).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || strings.Count(string(out), "FAIL") != 2 ||
		!strings.Contains(string(out), "FAIL  returns_402  code_execute: an unpaid POST with an empty body answered 403") ||
		!strings.Contains(string(out), "FAIL  mcp_payment_required  mcp:code_execute") {
		t.Fatalf("x402 check: err %v, output:\n%s\nwant exit 1 and code_execute's returns_402 and mcp_payment_required the only failures", err, out)
	}
	// Once some wallet may call it, every check passes.
	w := chain.NewAccount(t)
	if r := e.gw.admin(t, "PUT", "/wallets/"+w.Address.Hex()+"/policy", map[string]any{}); r.Status/100 != 2 {
		t.Fatalf("PUT wallet policy: got %d: %s", r.Status, r.Body)
	}
	out, err = exec.Command(binary, "x402", "check", "--url", e.gw.url).CombinedOutput()
	if err != nil {
		t.Fatalf("x402 check: %v\n%s", err, out)
	}
	for _, want := range []string{"pass  reachable", "pass  returns_402  extract/structured", "pass  returns_402  code_execute",
		"pass  bazaar_extension  extract/structured", "pass  payment_required  email/send", "pass  settle_path",
		"pass  mcp_payment_required  mcp:code_execute", "pass  bazaar_extension_mcp  mcp:extract/structured"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, err = exec.Command(binary, "x402", "check", "--url", "http://127.0.0.1:1").CombinedOutput()
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "FAIL  reachable") || !strings.Contains(string(out), "fix: ") {
		t.Fatalf("against nothing: err %v, output:\n%s\nwant exit 1, a failed reachable check and its fix", err, out)
	}
}
