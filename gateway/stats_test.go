package gateway_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/x402"
)

type statsBody struct {
	StepS  int `json:"step_s"`
	Totals struct {
		Calls           int64            `json:"calls"`
		Denied          int64            `json:"denied"`
		ByOutcome       map[string]int64 `json:"by_outcome"`
		DenialsByReason map[string]int64 `json:"denials_by_reason"`
		SpendUSD        float64          `json:"spend_usd"`
		X402RevenueUSD  float64          `json:"x402_revenue_usd"`
	} `json:"totals"`
	Series struct {
		Points    int                `json:"points"`
		ByOutcome map[string][]int64 `json:"by_outcome"`
	} `json:"series"`
	Tools []struct {
		Tool   string `json:"tool"`
		Calls  int64  `json:"calls"`
		Denied int64  `json:"denied"`
	} `json:"tools"`
	TopPrincipals struct {
		BySpend   []principalRow `json:"by_spend"`
		ByDenials []principalRow `json:"by_denials"`
	} `json:"top_principals"`
	Ledger struct {
		HeadSeq uint64 `json:"head_seq"`
	} `json:"ledger"`
}

type principalRow struct {
	Principal string  `json:"principal"`
	Denied    int64   `json:"denied"`
	SpendUSD  float64 `json:"spend_usd"`
}

func (h *harness) stats(t *testing.T, q string) statsBody {
	t.Helper()
	resp, b := h.admin("GET", "/stats"+q, "")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /stats%s: got %d %s", q, resp.StatusCode, b)
	}
	var s statsBody
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStats_Counts: allowed, denied and over-quota calls show in /stats
// by outcome, reason, tool and principal, per step and in total, and the
// counters come back from the ledger after a restart.
func TestStats_Counts(t *testing.T) {
	h := newHarness(t)
	good := h.createKey(`{"name":"good"}`)
	bad := h.createKey(`{"name":"bad","policy":{"deny_tools":["code_execute"],"rate_class_quota":{"light":1}}}`)
	for range 3 {
		if resp, b := h.call(good.Secret, "extract/structured", `{}`); resp.StatusCode != 200 {
			t.Fatalf("allowed call: %d %s", resp.StatusCode, b)
		}
	}
	h.call(bad.Secret, "code_execute", `{}`)
	h.call(bad.Secret, "code_execute", `{}`)
	h.call(bad.Secret, "search/web", `{}`)
	if resp, _ := h.call(bad.Secret, "search/web", `{}`); resp.StatusCode != 403 {
		t.Fatalf("second light call: got %d, want 403 over quota", resp.StatusCode)
	}
	h.do("POST", "/tools/extract/structured", `{}`, "X-API-Key", "it-AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG") // unauthenticated

	check := func(t *testing.T, s statsBody) {
		t.Helper()
		want := map[string]int64{"allowed": 4, "denied": 2, "quota_exceeded": 1, "unauthenticated": 1}
		for o, n := range want {
			if s.Totals.ByOutcome[o] != n {
				t.Errorf("by_outcome[%s]: got %d, want %d (all %v)", o, s.Totals.ByOutcome[o], n, s.Totals.ByOutcome)
			}
		}
		if s.Totals.Calls != 8 || s.Totals.Denied != 4 {
			t.Errorf("calls, denied: got %d, %d, want 8, 4", s.Totals.Calls, s.Totals.Denied)
		}
		wantReasons := map[string]int64{"deny_tools": 2, "rate_class_quota": 1, "invalid_api_key": 1}
		if len(s.Totals.DenialsByReason) != len(wantReasons) {
			t.Errorf("denials_by_reason: got %v, want %v", s.Totals.DenialsByReason, wantReasons)
		}
		for r, n := range wantReasons {
			if s.Totals.DenialsByReason[r] != n {
				t.Errorf("denials_by_reason[%s]: got %d, want %d", r, s.Totals.DenialsByReason[r], n)
			}
		}
		if s.Totals.SpendUSD != 0.032 {
			t.Errorf("spend_usd: got %v, want 0.032 (3 × 0.01 + 0.002)", s.Totals.SpendUSD)
		}
		var sum int64
		for _, ser := range s.Series.ByOutcome {
			if len(ser) != s.Series.Points {
				t.Fatalf("series length %d, want points %d", len(ser), s.Series.Points)
			}
			for _, n := range ser {
				sum += n
			}
		}
		if sum != s.Totals.Calls {
			t.Errorf("series sum %d, want the total %d", sum, s.Totals.Calls)
		}
		if len(s.TopPrincipals.ByDenials) == 0 || s.TopPrincipals.ByDenials[0].Principal != "key:"+bad.KeyID || s.TopPrincipals.ByDenials[0].Denied != 3 {
			t.Errorf("top by denials: got %+v, want key:%s with 3", s.TopPrincipals.ByDenials, bad.KeyID)
		}
		if len(s.TopPrincipals.BySpend) != 2 || s.TopPrincipals.BySpend[0].Principal != "key:"+good.KeyID || s.TopPrincipals.BySpend[0].SpendUSD != 0.03 {
			t.Errorf("top by spend: got %+v, want key:%s first with 0.03", s.TopPrincipals.BySpend, good.KeyID)
		}
		tools := map[string]int64{}
		for _, tl := range s.Tools {
			tools[tl.Tool] = tl.Calls
		}
		if tools["extract/structured"] != 4 || tools["code_execute"] != 2 || tools["search/web"] != 2 {
			t.Errorf("tools: got %v", tools)
		}
		if s.Ledger.HeadSeq == 0 {
			t.Error("ledger head_seq: got 0")
		}
	}
	s := h.stats(t, "?since=1h&step=1m")
	if s.StepS != 60 || s.Series.Points < 60 || s.Series.Points > 61 {
		t.Errorf("step_s, points: got %d, %d, want 60, 60-61", s.StepS, s.Series.Points)
	}
	check(t, s)
	if s := h.stats(t, "?since=24h&step=15m"); s.Series.Points < 96 || s.Series.Points > 97 {
		t.Errorf("24h in 15m steps: got %d points, want 96-97", s.Series.Points)
	} else {
		check(t, s)
	}

	t.Run("Restored", func(t *testing.T) {
		keys, err := identity.Open(h.db)
		if err != nil {
			t.Fatal(err)
		}
		o := h.gw.Options()
		o.Keys = keys
		g2, err := gateway.New(o)
		if err != nil {
			t.Fatal(err)
		}
		defer g2.Close()
		s, _ := gateway.StatsOf(g2, "since=1h&step=1m")
		var got statsBody
		json.Unmarshal(s, &got)
		check(t, got)
	})

	t.Run("BadQuery", func(t *testing.T) {
		for q, want := range map[string]string{
			"?since=25h":           "at most 24h",
			"?step=30s":            "whole number of minutes",
			"?top=0":               "top:",
			"?since=yesterday":     "since:",
			"?bogus=1":             "unknown parameter",
			"?since=1h&until=2h":   "before until",
			"?since=24h&step=1m&x": "unknown parameter",
		} {
			resp, b := h.admin("GET", "/stats"+q, "")
			if resp.StatusCode != 400 || !strings.Contains(string(b), want) {
				t.Errorf("GET /stats%s: got %d %s, want 400 naming %q", q, resp.StatusCode, b, want)
			}
		}
		if resp, _ := h.do("GET", "/stats", ""); resp.StatusCode != 401 {
			t.Errorf("GET /stats without the token: got %d, want 401", resp.StatusCode)
		}
	})
}

// TestStatus_Provenance: the status of a principal says where each field
// of its effective policy comes from.
func TestStatus_Provenance(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"policy":{"rate_class_quota":{"heavy":1}}}`)
	_, b := h.admin("GET", "/authorization/status?key_id="+k.KeyID, "")
	prov, _ := decode(t, b)["provenance"].(map[string]any)
	for f, want := range map[string]string{"rate_class_quota": "override", "daily_spend_cap_usd": "tier:api_key", "mode": "built-in"} {
		if prov[f] != want {
			t.Errorf("provenance[%s]: got %v, want %s (all %v)", f, prov[f], want, prov)
		}
	}
	plain := h.createKey(`{}`)
	_, b = h.admin("GET", "/authorization/status?key_id="+plain.KeyID, "")
	if prov, _ := decode(t, b)["provenance"].(map[string]any); prov["rate_class_quota"] != "defaults" {
		t.Errorf("plain key provenance[rate_class_quota]: got %v, want defaults", prov["rate_class_quota"])
	}
}

// TestPolicy_DryRun: ?dry_run=true validates a policy (problems at their
// JSON paths) and stores nothing.
func TestPolicy_DryRun(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{}`)
	resp, b := h.admin("PUT", "/credits/keys/"+k.KeyID+"/policy?dry_run=true", `{"rate_class_quota":{"heavy":-1},"mode":"lax"}`)
	probs, _ := decode(t, b)["problems"].([]any)
	if resp.StatusCode != 400 || len(probs) != 2 {
		t.Fatalf("invalid policy: got %d %s, want 400 with 2 problems", resp.StatusCode, b)
	}
	paths := map[string]bool{}
	for _, p := range probs {
		paths[p.(map[string]any)["path"].(string)] = true
	}
	if !paths["$.rate_class_quota.heavy"] || !paths["$.mode"] {
		t.Errorf("problem paths: got %v, want $.rate_class_quota.heavy and $.mode", paths)
	}
	resp, b = h.admin("PUT", "/credits/keys/"+k.KeyID+"/policy?dry_run=true", `{"deny_tools":["*"]}`)
	if m := decode(t, b); resp.StatusCode != 200 || m["dry_run"] != true {
		t.Fatalf("valid policy: got %d %s, want 200 dry_run", resp.StatusCode, b)
	}
	if resp, b := h.call(k.Secret, "search/web", `{}`); resp.StatusCode != 200 {
		t.Fatalf("after dry runs: got %d %s, want 200 (nothing stored)", resp.StatusCode, b)
	}
	resp, b = h.admin("POST", "/credits/keys?dry_run=true", `{"name":"x","policy":{"allow_tools":"email/send"}}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"policy.allow_tools"`) {
		t.Fatalf("create dry run: got %d %s, want 400 at policy.allow_tools", resp.StatusCode, b)
	}
	if resp, _ := h.admin("POST", "/credits/keys?dry_run=true", `{"name":"x"}`); resp.StatusCode != 200 || len(h.keys(t)) != 1 {
		t.Fatalf("valid create dry run: got %d and %d keys, want 200 and 1", resp.StatusCode, len(h.keys(t)))
	}
}

// TestStats_X402Revenue: a settled x402 payment counts as revenue, a
// refused settlement does not (both settle modes).
func TestStats_X402Revenue(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			var refuse atomic.Bool
			refuse.Store(true)
			settler := &fakeSettler{}
			settler.SettleFn = func(_ context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
				if refuse.Load() {
					return x402.SettleResult{Reason: x402.ReasonTransferFailed, Payer: p.Authorization.From.Hex(), Network: o.Network(p.Version)}, nil
				}
				return x402.SettleResult{Success: true, Transaction: "0xabc", Network: o.Network(p.Version), Payer: p.Authorization.From.Hex()}, nil
			}
			e := newPaidEnv(t, settler, nil)
			if resp, b := e.callPaid(tool, "", e.sign(tool, false).hdr); resp.StatusCode != 402 {
				t.Fatalf("refused settlement: got %d %s, want 402", resp.StatusCode, b)
			}
			if s := e.harness.stats(t, "?since=1h"); s.Totals.X402RevenueUSD != 0 || s.Totals.ByOutcome["settle_failed"] != 1 {
				t.Fatalf("after a refused settlement: revenue %v, settle_failed %d, want 0 and 1", s.Totals.X402RevenueUSD, s.Totals.ByOutcome["settle_failed"])
			}
			refuse.Store(false)
			if resp, b := e.callPaid(tool, "", e.sign(tool, false).hdr); resp.StatusCode != 200 {
				t.Fatalf("settled call: got %d %s, want 200", resp.StatusCode, b)
			}
			s := e.harness.stats(t, "?since=1h")
			if s.Totals.X402RevenueUSD != 0.01 || s.Totals.ByOutcome["allowed"] != 1 || len(s.TopPrincipals.BySpend) != 1 ||
				s.TopPrincipals.BySpend[0].Principal != e.principal {
				t.Fatalf("after a settled call: %+v, want revenue 0.01, one allowed call by %s", s.Totals, e.principal)
			}
		})
	}
}
