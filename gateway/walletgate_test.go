package gateway_test

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policy"
)

// paymentRequiredError decodes the error of a PAYMENT-REQUIRED header.
func paymentRequiredError(t *testing.T, hdr string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(hdr)
	if err != nil {
		t.Fatalf("PAYMENT-REQUIRED %q: %v", hdr, err)
	}
	var pr struct{ Error string }
	if err := json.Unmarshal(raw, &pr); err != nil {
		t.Fatalf("PAYMENT-REQUIRED %s: %v", raw, err)
	}
	return pr.Error
}

// TestUnpaid_NoChallengeWhenNoWalletMay: an unpaid call of a tool that
// unknown_wallet denies and no wallet override allows gets the 403 a
// paying unknown wallet would get, with no PAYMENT-REQUIRED; once an
// override lets some wallet call it, the 402 comes back and says a policy
// applies; removing the override takes it away again.
func TestUnpaid_NoChallengeWhenNoWalletMay(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), withX402(t, &fakeSettler{}))

	want403 := func(step string) {
		t.Helper()
		resp, b := h.do("POST", "/tools/code_execute", "")
		if resp.StatusCode != 403 || string(b) != `{"error":"Tool access denied by policy","tool":"code_execute","reason":"deny_tools"}` {
			t.Fatalf("%s: got %d %s, want 403 with the seed's deny body", step, resp.StatusCode, b)
		}
		if resp.Header.Get("PAYMENT-REQUIRED") != "" {
			t.Fatalf("%s: a challenge for a call no wallet may make", step)
		}
	}
	want403("no override")

	if resp, b := h.do("POST", "/tools/extract/structured", ""); resp.StatusCode != 402 ||
		paymentRequiredError(t, resp.Header.Get("PAYMENT-REQUIRED")) != "Payment required" {
		t.Fatalf("allowed tool: got %d %s, want the plain 402", resp.StatusCode, b)
	}

	w := chain.Accounts[5].Address.Hex()
	if resp, b := h.admin("PUT", "/wallets/"+w+"/policy", `{}`); resp.StatusCode/100 != 2 {
		t.Fatalf("PUT wallet policy: got %d %s", resp.StatusCode, b)
	}
	resp, b := h.do("POST", "/tools/code_execute", "")
	if resp.StatusCode != 402 {
		t.Fatalf("with a wallet override: got %d %s, want 402", resp.StatusCode, b)
	}
	if got := paymentRequiredError(t, resp.Header.Get("PAYMENT-REQUIRED")); got != gateway.PolicyApplies {
		t.Fatalf("PAYMENT-REQUIRED error: got %q, want %q", got, gateway.PolicyApplies)
	}

	// An override that denies the tool does not count.
	if resp, b := h.admin("PUT", "/wallets/"+w+"/policy", `{"deny_tools":["code_execute"]}`); resp.StatusCode/100 != 2 {
		t.Fatalf("PUT wallet policy: got %d %s", resp.StatusCode, b)
	}
	want403("override denying the tool")
	if resp, b := h.admin("PUT", "/wallets/"+w+"/policy", `{}`); resp.StatusCode/100 != 2 {
		t.Fatalf("PUT wallet policy: got %d %s", resp.StatusCode, b)
	}
	if resp, b := h.admin("DELETE", "/wallets/"+w+"/policy", ""); resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE wallet policy: got %d %s", resp.StatusCode, b)
	}
	want403("override deleted")
}

// TestUnpaid_BlockedRateClass: a rate class of quota 0 for unknown wallets
// (and no override) refuses unpaid calls with rate_class_blocked, no 402.
func TestUnpaid_BlockedRateClass(t *testing.T) {
	up := newUpstream(t)
	x := withX402(t, &fakeSettler{})
	doc, err := policy.DecodeDocument([]byte(`{"version":1,"tiers":{"unknown_wallet":{"rate_class_quota":{"heavy":0}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { x(o); o.Policies = doc })
	resp, b := h.do("POST", "/tools/image/generate", "")
	want := `{"error":"Policy rate class quota exceeded","rate_class":"heavy","limit":0,"calls_this_minute":0,"reset_in_seconds":0}`
	if resp.StatusCode != 403 || string(b) != want || resp.Header.Get("PAYMENT-REQUIRED") != "" {
		t.Fatalf("got %d %s (PAYMENT-REQUIRED %q), want 403 %s without a challenge", resp.StatusCode, b, resp.Header.Get("PAYMENT-REQUIRED"), want)
	}
	if resp, _ := h.do("POST", "/tools/extract/structured", ""); resp.StatusCode != 402 {
		t.Fatalf("light tool: got %d, want 402", resp.StatusCode)
	}
}
