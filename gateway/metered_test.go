package gateway_test

import (
	"testing"

	"github.com/toolgate/toolgate/ledger"
)

// meteredCatalog has one metered tool (max $0.10) and one fixed-price tool.
func meteredCatalog(up string) string {
	return `{"tools":[
 {"id":"llm","rate_class":"light","price":{"max_usd":"0.10","metered":true},"upstream":"` + up + `/llm"},
 {"id":"fixed","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/fixed"}]}`
}

// TestMetered_APIKey: a metered tool's API-key call reserves the maximum
// and is billed the cost its upstream reports (capped at the maximum; the
// maximum when the report is missing or malformed); the report never
// reaches the caller.
func TestMetered_APIKey(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, meteredCatalog(up.srv.URL), nil)
	k := h.createKey(`{"name":"metered"}`)
	for _, tc := range []struct {
		name, query, wantCost string
		want                  int64
	}{
		{"Reported", "?cost=0.042", "0.042", 42000},
		{"Tiny", "?cost=0.000001", "0.000001", 1},
		{"Zero", "?cost=0", "0.000", 0},
		{"AboveMax", "?cost=0.5", "0.100", 100000},
		{"Missing", "", "0.100", 100000},
		{"Malformed", "?cost=abc", "0.100", 100000},
		{"Negative", "?cost=-0.01", "0.100", 100000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := h.do("POST", "/tools/llm"+tc.query, `{}`, "X-API-Key", k.Secret)
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s", resp.StatusCode, b)
			}
			if got := resp.Header.Get("X-Cost-Usd"); got != tc.wantCost {
				t.Fatalf("X-Cost-Usd %q, want %q", got, tc.wantCost)
			}
			if v := resp.Header.Get("X-Toolgate-Cost-Usd"); v != "" {
				t.Fatalf("the upstream's cost report reached the caller: %q", v)
			}
			calls := ledgerOf(h.records("key:" + k.KeyID))[ledger.TypeCall]
			if c := calls[len(calls)-1]; int64(c.Cost) != tc.want {
				t.Fatalf("ledger cost %d, want %d", c.Cost, tc.want)
			}
		})
	}
	if st := h.status("key_id=" + k.KeyID); st["spend_today_usd"] != 0.442001 {
		t.Fatalf("spend_today_usd %v, want 0.442001 (the sum of the billed costs)", st["spend_today_usd"])
	}
	if st := h.status("key_id=" + k.KeyID); st["reserved_usd"] != nil && st["reserved_usd"] != 0.0 {
		t.Fatalf("reserved_usd %v after all calls ended, want 0", st["reserved_usd"])
	}
}

// TestMetered_ReservesMax: a call reserves the maximum, so a cap or a
// balance below the maximum refuses it even when the actual cost would fit.
// Credits are debited the actual cost.
func TestMetered_ReservesMax(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, meteredCatalog(up.srv.URL), nil)
	k := h.createKey(`{"credits_usd":"0.05"}`)
	resp, b := h.do("POST", "/tools/llm?cost=0.01", `{}`, "X-API-Key", k.Secret)
	if resp.StatusCode != 402 {
		t.Fatalf("balance 0.05 below the max 0.10: got %d %s, want 402 insufficient credits", resp.StatusCode, b)
	}
	wantJSON(t, b, `{"error":"Insufficient credits","balance_usd":0.05,"cost_usd":0.1}`)
	if resp, b := h.admin("POST", "/credits/keys/"+k.KeyID+"/credits", `{"amount_usd":"0.10"}`); resp.StatusCode != 200 {
		t.Fatalf("top up: %d %s", resp.StatusCode, b)
	}
	if resp, b := h.do("POST", "/tools/llm?cost=0.042", `{}`, "X-API-Key", k.Secret); resp.StatusCode != 200 {
		t.Fatalf("balance 0.15: got %d %s", resp.StatusCode, b)
	}
	var debit *ledger.Record
	for _, r := range h.records("key:" + k.KeyID) {
		if r.Kind == ledger.KindDebit {
			debit = &r
		}
	}
	if debit == nil || debit.Amount != 42000 || debit.BalanceAfter == nil || *debit.BalanceAfter != 108000 {
		t.Fatalf("debit %+v, want 0.042 with balance after 0.108", debit)
	}
}
