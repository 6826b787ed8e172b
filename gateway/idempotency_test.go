package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// withPaymentID returns hdr (a v2 payment header) with the
// payment-identifier extension carrying id, as @x402/extensions adds it.
func withPaymentID(t *testing.T, hdr, id string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(hdr)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["extensions"] = map[string]any{"payment-identifier": map[string]any{"info": map[string]any{"required": false, "id": id}}}
	b, _ := json.Marshal(m)
	return base64.StdEncoding.EncodeToString(b)
}

// TestPendingSettlement_ReplayGetsOutcome: a settlement left pending is
// never answered by a fresh 402: the same payment again gets the recorded
// answer (no second upstream call or settlement) with PAYMENT-RESPONSE
// pending, and once reconciliation knows the outcome, with the outcome.
func TestPendingSettlement_ReplayGetsOutcome(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			mined := "0x" + strings.Repeat("cd", 32)
			var released atomic.Bool // until set, the settlement stays pending
			rc := &fakeReconciler{}
			rc.ReconcileFn = func(_ context.Context, _ x402.NonceKey, tx string) (x402.SettleResult, error) {
				if !released.Load() {
					return x402.SettleResult{Pending: true, Transaction: tx}, nil
				}
				return x402.SettleResult{Success: true, Transaction: mined}, nil
			}
			e := newPaidEnv(t, &fakeSettler{SettleFn: pendingOutcomes[1].settle}, func(o *gateway.Options) {
				o.X402.Reconciler = rc
				o.X402.ReconcileEvery = 10 * time.Millisecond
				o.X402.SettleTimeout = 50 * time.Millisecond
			})
			p := e.sign(tool, false)
			resp, b := e.callPaid(tool, "", p.hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, b)
			}
			hits, settles := e.up.hits.Load(), e.settler.settles.Load()
			resp2, b2 := e.callPaid(tool, "", p.hdr)
			if resp2.StatusCode != 200 || string(b2) != string(b) || resp2.Header.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("replay while pending: got %d %s (replayed %q), want the recorded 200 %s", resp2.StatusCode, b2,
					resp2.Header.Get("Idempotent-Replayed"), b)
			}
			if sr := settlement(t, resp2, "PAYMENT-RESPONSE"); sr.Success || sr.ErrorReason != x402.ReasonSettlementPending {
				t.Fatalf("replay while pending: PAYMENT-RESPONSE %+v, want settlement_pending", sr)
			}
			released.Store(true)
			e.waitTxn("x402_settlement")
			var sr x402.SettleResponse
			waitFor(t, "the replay to carry the outcome", func() bool {
				r, _ := e.callPaid(tool, "", p.hdr)
				sr = settlement(t, r, "PAYMENT-RESPONSE")
				return r.StatusCode == 200 && sr.Success
			})
			if sr.Transaction != mined || sr.Payer != e.payer.Address.Hex() || sr.Network != "eip155:84532" {
				t.Fatalf("replay after reconciliation: PAYMENT-RESPONSE %+v, want success with tx %s", sr, mined)
			}
			if e.up.hits.Load() != hits || e.settler.settles.Load() != settles {
				t.Fatalf("replays reached the upstream (%d→%d) or the backend (%d→%d)", hits, e.up.hits.Load(), settles, e.settler.settles.Load())
			}
			if s := ledgerOf(e.records(e.principal))["x402_settlement"]; len(s) != 1 {
				t.Fatalf("x402_settlement txns: %d, want 1", len(s))
			}
			// Another request with the same authorization is still refused.
			resp3, _ := e.do("POST", "/tools/"+tool, `{"q":2}`, "PAYMENT-SIGNATURE", p.hdr, "Content-Type", "application/json")
			if resp3.StatusCode != 402 || paymentReason(t, resp3.Header.Get("PAYMENT-REQUIRED")) != x402.ReasonNonceUsed {
				t.Fatalf("same payment, other body: got %d, want 402 %s", resp3.StatusCode, x402.ReasonNonceUsed)
			}
		})
	}
}

// TestIdempotencyKey: an API-key call retried with the same
// Idempotency-Key, tool and body gets the recorded answer, billed once and
// run once; a different body under the same key is 409; concurrent
// duplicates run once and all get the one answer.
func TestIdempotencyKey(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"name":"idem"}`)
	const key = "order-7f3a-0001"
	resp, b := h.call(k.Secret, "extract/structured", `{"text":"a"}`, "Idempotency-Key", key)
	if resp.StatusCode != 200 {
		t.Fatalf("first: got %d %s", resp.StatusCode, b)
	}
	hits := h.up.hits.Load()
	resp2, b2 := h.call(k.Secret, "extract/structured", `{"text":"a"}`, "Idempotency-Key", key)
	if resp2.StatusCode != 200 || string(b2) != string(b) || resp2.Header.Get("Idempotent-Replayed") != "true" ||
		resp2.Header.Get("Content-Type") != resp.Header.Get("Content-Type") {
		t.Fatalf("retry: got %d %s (%v), want the recorded answer %s", resp2.StatusCode, b2, resp2.Header, b)
	}
	if resp2.Header.Get("X-Cost-Usd") != "0.000" || resp2.Header.Get("X-Policy-Allowed") != "true" {
		t.Fatalf("retry: X-Cost-Usd %q X-Policy-Allowed %q, want 0.000 (billed once) and true",
			resp2.Header.Get("X-Cost-Usd"), resp2.Header.Get("X-Policy-Allowed"))
	}
	if h.up.hits.Load() != hits {
		t.Fatal("retry reached the upstream")
	}
	if st := h.status("key_id=" + k.KeyID); st["spend_today_usd"] != 0.01 {
		t.Fatalf("spend_today_usd %v, want 0.01: billed once", st["spend_today_usd"])
	}
	calls := ledgerOf(h.records("key:" + k.KeyID))["call"]
	if len(calls) != 2 || calls[0].Cost != 10000 || calls[1].Outcome != "replayed" || calls[1].Reason != "idempotency_key" ||
		calls[1].Cost != 0 || calls[1].Status != 200 {
		t.Fatalf("ledger calls %+v: want the billed call and a replayed one at cost 0", calls)
	}

	t.Run("Conflict", func(t *testing.T) {
		for _, tc := range []struct{ name, tool, body string }{
			{"OtherBody", "extract/structured", `{"text":"b"}`},
			{"OtherTool", "search/web", `{"text":"a"}`},
		} {
			resp, b := h.call(k.Secret, tc.tool, tc.body, "Idempotency-Key", key)
			if resp.StatusCode != 409 || !strings.Contains(string(b), "Idempotency-Key reused for a different request") {
				t.Fatalf("%s: got %d %s, want 409", tc.name, resp.StatusCode, b)
			}
		}
		if h.up.hits.Load() != hits {
			t.Fatal("a conflict reached the upstream")
		}
	})
	t.Run("OtherKeyHolder", func(t *testing.T) {
		k2 := h.createKey(`{"name":"other"}`)
		resp, b := h.call(k2.Secret, "extract/structured", `{"text":"b"}`, "Idempotency-Key", key)
		if resp.StatusCode != 200 || resp.Header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("another key's same Idempotency-Key: got %d %s, want its own fresh call", resp.StatusCode, b)
		}
	})
	t.Run("Bad", func(t *testing.T) {
		resp, b := h.call(k.Secret, "extract/structured", `{}`, "Idempotency-Key", strings.Repeat("x", 256))
		if resp.StatusCode != 400 {
			t.Fatalf("256-byte key: got %d %s, want 400", resp.StatusCode, b)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		h.up.delay.Store(int64(50 * time.Millisecond))
		defer h.up.delay.Store(0)
		before := h.up.hits.Load()
		const n = 16
		bodies := make([]string, n)
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, b := h.call(k.Secret, "extract/structured", `{"text":"c"}`, "Idempotency-Key", "concurrent-0001")
				statuses[i], bodies[i] = resp.StatusCode, string(b)
			}()
		}
		wg.Wait()
		for i := range n {
			if statuses[i] != 200 || bodies[i] != bodies[0] {
				t.Fatalf("duplicate %d: got %d %s, want 200 %s", i, statuses[i], bodies[i], bodies[0])
			}
		}
		if got := h.up.hits.Load() - before; got != 1 {
			t.Fatalf("upstream calls: %d, want 1", got)
		}
	})
}

// TestPaymentIdentifier: the payment-identifier extension makes a paid
// retry idempotent: the same id and payment get the recorded answer and
// PAYMENT-RESPONSE, with no second upstream call or settlement; the same
// id with another payment is 409; concurrent duplicates settle once.
func TestPaymentIdentifier(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			e := newPaidEnv(t, &fakeSettler{}, nil)
			const id = "pay_0123456789abcdef0123"
			p := e.sign(tool, false)
			hdr := withPaymentID(t, p.hdr, id)
			resp, b := e.callPaid(tool, "", hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("first: got %d %s", resp.StatusCode, b)
			}
			pr := resp.Header.Get("PAYMENT-RESPONSE")
			hits, settles := e.up.hits.Load(), e.settler.settles.Load()
			resp2, b2 := e.callPaid(tool, "", hdr)
			if resp2.StatusCode != 200 || string(b2) != string(b) || resp2.Header.Get("PAYMENT-RESPONSE") != pr || pr == "" {
				t.Fatalf("retry: got %d %s PAYMENT-RESPONSE %q, want the recorded 200 %s %q", resp2.StatusCode, b2,
					resp2.Header.Get("PAYMENT-RESPONSE"), b, pr)
			}
			if e.up.hits.Load() != hits || e.settler.settles.Load() != settles {
				t.Fatal("retry reached the upstream or the settlement backend")
			}
			other := withPaymentID(t, e.sign(tool, false).hdr, id)
			if resp, b := e.callPaid(tool, "", other); resp.StatusCode != 409 {
				t.Fatalf("same id, other payment: got %d %s, want 409", resp.StatusCode, b)
			}
			if e.up.hits.Load() != hits || e.settler.settles.Load() != settles {
				t.Fatal("a conflict reached the upstream or the settlement backend")
			}
			if s := ledgerOf(e.records(e.principal))["x402_settlement"]; len(s) != 1 {
				t.Fatalf("x402_settlement txns: %d, want 1", len(s))
			}
			if resp, b := e.callPaid(tool, "", withPaymentID(t, e.sign(tool, false).hdr, "short")); resp.StatusCode != 400 {
				t.Fatalf("a 5-character id: got %d %s, want 400", resp.StatusCode, b)
			}

			// Concurrent copies of one payment with an id: one run, one
			// settlement, the same answer for all.
			e.up.delay.Store(int64(50 * time.Millisecond))
			defer e.up.delay.Store(0)
			hdr = withPaymentID(t, e.sign(tool, false).hdr, "pay_concurrent_000000001")
			const n = 16
			bodies := make([]string, n)
			prs := make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, b := e.callPaid(tool, "", hdr)
					bodies[i], prs[i] = fmt.Sprint(resp.StatusCode, " ", string(b)), resp.Header.Get("PAYMENT-RESPONSE")
				}()
			}
			wg.Wait()
			for i := range n {
				if bodies[i] != bodies[0] || prs[i] != prs[0] || !strings.HasPrefix(bodies[0], "200 ") || prs[0] == "" {
					t.Fatalf("duplicate %d: got %s %q, want %s %q", i, bodies[i], prs[i], bodies[0], prs[0])
				}
			}
			if got := e.settler.settles.Load() - settles; got != 1 {
				t.Fatalf("settlements: %d, want 1", got)
			}
		})
	}
}

// TestExtensionResponses: a facilitator's EXTENSION-RESPONSES rejecting
// the Bazaar declaration is counted and noted on the settlement's txn
// record, so that a listing that will never appear is visible.
func TestExtensionResponses(t *testing.T) {
	ext := `{"bazaar":{"status":"rejected","rejectedReason":"missing info.input"}}`
	settler := &fakeSettler{}
	settler.SettleFn = func(_ context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
		return x402.SettleResult{Success: true, Transaction: "0x" + strings.Repeat("ef", 32), Network: o.Network(p.Version),
			Payer: p.Authorization.From.Hex(), Extensions: ext}, nil
	}
	e := newPaidEnv(t, settler, nil)
	if resp, b := e.callPaid("after", "", e.sign("after", false).hdr); resp.StatusCode != 200 {
		t.Fatalf("got %d %s", resp.StatusCode, b)
	}
	s := ledgerOf(e.records(e.principal))["x402_settlement"]
	if len(s) != 1 || s[0].Reason != "bazaar_rejected: missing info.input" {
		t.Fatalf("settlement txns %+v, want one with reason bazaar_rejected: missing info.input", s)
	}
	_, m := e.admin("GET", "/metrics", "")
	if !strings.Contains(string(m), `toolgate_x402_extension_responses_total{extension="bazaar",status="rejected"} 1`) {
		t.Fatal("metric toolgate_x402_extension_responses_total{bazaar,rejected} not 1")
	}
}

// TestPendingSettlement_OwedOnlyOnceSettled: a payment settled ahead
// (before_upstream) whose settlement is pending, for a call that was then
// not served, is owed to the payer only when reconciliation finds it
// settled: never for a settlement that did not happen.
func TestPendingSettlement_OwedOnlyOnceSettled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outcome x402.SettleResult
		owed    int
	}{
		{"Settled", x402.SettleResult{Success: true, Transaction: "0x" + strings.Repeat("12", 32)}, 1},
		{"Reverted", x402.SettleResult{Reason: x402.ReasonTransactionFailed}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var released atomic.Bool
			rc := &fakeReconciler{ReconcileFn: func(_ context.Context, _ x402.NonceKey, tx string) (x402.SettleResult, error) {
				if !released.Load() {
					return x402.SettleResult{Pending: true, Transaction: tx}, nil
				}
				return tc.outcome, nil
			}}
			e := newPaidEnv(t, &fakeSettler{SettleFn: pendingOutcomes[1].settle}, func(o *gateway.Options) {
				o.X402.Reconciler = rc
				o.X402.ReconcileEvery = 10 * time.Millisecond
				o.X402.SettleTimeout = 50 * time.Millisecond
			})
			if resp, b := e.callPaid("before", "?fail=1", e.sign("before", false).hdr); resp.StatusCode != 500 {
				t.Fatalf("got %d %s, want the upstream's 500", resp.StatusCode, b)
			}
			if o := ledgerOf(e.records(e.principal))[gateway.KindX402Owed]; len(o) != 0 {
				t.Fatalf("owed while the settlement is pending: %+v", o)
			}
			released.Store(true)
			kind := "x402_settlement"
			if tc.owed == 0 {
				kind = "x402_settlement_failed"
			}
			e.waitTxn(kind)
			waitFor(t, "the owed record", func() bool {
				return len(ledgerOf(e.records(e.principal))[gateway.KindX402Owed]) == tc.owed
			})
			if o := ledgerOf(e.records(e.principal))[gateway.KindX402Owed]; len(o) != tc.owed ||
				(tc.owed == 1 && o[0].Amount != paidPrice) {
				t.Fatalf("owed records %+v, want %d of %d", o, tc.owed, paidPrice)
			}
		})
	}
}
