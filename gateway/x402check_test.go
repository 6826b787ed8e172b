package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/x402"
)

// failedChecks returns the failed checks as "name resource: detail".
func failedChecks(checks []x402.Check) []string {
	var out []string
	for _, c := range checks {
		if !c.OK {
			out = append(out, c.Name+" "+c.Resource+": "+c.Detail)
		}
	}
	return out
}

// TestCheckListing runs the listing self-check (toolgate x402 check)
// against a real gateway: a good catalog passes every check, its tools as
// HTTP endpoints and as MCP tools (an unpaid tools/call on /mcp); a broken
// one fails the checks that name what is wrong.
func TestCheckListing(t *testing.T) {
	hc := &http.Client{Timeout: 5 * time.Second}
	t.Run("Good", func(t *testing.T) {
		up := newUpstream(t)
		cat := `{"tools":[
 {"id":"extract/structured","rate_class":"light","price_usd":"0.01","upstream":"` + up.srv.URL + `/extract","description":"Extract JSON",
  "discovery":{"input":{"text":"hi"},"input_schema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}}},
 {"id":"time/now","rate_class":"light","upstream":"` + up.srv.URL + `/time"}]}`
		h := newHarnessWith(t, up, cat, withX402(t, &fakeSettler{}))
		checks := x402.CheckListing(context.Background(), hc, h.url)
		if f := failedChecks(checks); len(f) != 0 {
			t.Fatalf("failed checks %v, want none; all: %+v", f, checks)
		}
		names := map[string]bool{}
		for _, c := range checks {
			names[c.Name] = true
		}
		for _, n := range []string{"reachable", "resource_url", "returns_402", "payment_required", "description", "bazaar_extension",
			"mcp_payment_required", "bazaar_extension_mcp", "settle_path"} {
			if !names[n] {
				t.Errorf("check %s not run", n)
			}
		}
	})
	t.Run("Broken", func(t *testing.T) {
		up := newUpstream(t)
		// code_execute is denied to unknown wallets (seed policy): no 402.
		// bad/input's example does not match its schema.
		cat := `{"tools":[
 {"id":"code_execute","rate_class":"heavy","price_usd":"0.02","upstream":"` + up.srv.URL + `/code","description":"Run code"},
 {"id":"bad/input","rate_class":"light","price_usd":"0.01","upstream":"` + up.srv.URL + `/bad","description":"Bad example",
  "discovery":{"input":{"text":5},"input_schema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}}}]}`
		h := newHarnessWith(t, up, cat, withX402(t, &fakeSettler{}))
		f := strings.Join(failedChecks(x402.CheckListing(context.Background(), hc, h.url)), "\n")
		for _, want := range []string{"returns_402 code_execute: an unpaid POST with an empty body answered 403", "bazaar_extension bad/input: info does not validate",
			"mcp_payment_required mcp:code_execute: an unpaid tools/call answered 200", "bazaar_extension_mcp mcp:bad/input: info does not validate"} {
			if !strings.Contains(f, want) {
				t.Errorf("failed checks:\n%s\nwant one containing %q", f, want)
			}
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		checks := x402.CheckListing(context.Background(), hc, "http://127.0.0.1:1")
		if len(checks) != 1 || checks[0].OK || checks[0].Name != "reachable" || checks[0].Fix == "" {
			t.Fatalf("got %+v, want one failed reachable check with a fix", checks)
		}
	})
}
