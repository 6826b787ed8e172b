package toolgate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestGateway_SettlementReconciled: the facilitator takes longer than the
// gateway's settle deadline, so the outcome is unknown when the gateway
// must answer. The payer is not asked to sign again: the call is served
// with PAYMENT-RESPONSE settlement_pending, the nonce stays locked, and the
// gateway finds the settlement on chain (--x402-rpc beside the facilitator)
// and records it.
func TestGateway_SettlementReconciled(t *testing.T) {
	t.Parallel()
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, 5*money.PerUSD)
	fac := chain.StartFacilitator(t, a, chain.FacilitatorConfig{SettleDelay: 3 * time.Second})
	up := startUpstream(t)
	g := startGateway(t, up.url, "--x402-facilitator", fac.URL(), "--x402-rpc", a.RPC(),
		"--x402-settle-timeout", "1s", "--x402-reconcile-every", "500ms")
	payTo0 := chain.BalanceOf(t, a, chain.PayTo.Address)

	p := g.validV2(t, chain.Payer, "extract/structured", priceExtract)
	r := do(t, "POST", g.url+"/tools/extract/structured", []byte(extractInput), p.Headers())
	if r.Status != 200 {
		t.Fatalf("got %d %s, want 200: an unknown outcome must not make the payer pay again", r.Status, r.Body)
	}
	s := decodeSettlement(t, r, "PAYMENT-RESPONSE")
	if s.Success || s.ErrorReason != "settlement_pending" {
		t.Fatalf("payment response: got %+v, want success false, settlement_pending", s)
	}
	if got := up.Hits("/extract"); got != 1 {
		t.Fatalf("upstream hits: got %d, want 1", got)
	}
	// The same payment again: never a fresh 402 (that invites a second
	// signature), never settled twice: the recorded answer, still pending.
	r2 := do(t, "POST", g.url+"/tools/extract/structured", []byte(extractInput), p.Headers())
	if r2.Status != 200 || string(r2.Body) != string(r.Body) || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay while pending: got %d %s, want the recorded 200 %s", r2.Status, r2.Body, r.Body)
	}
	if s2 := decodeSettlement(t, r2, "PAYMENT-RESPONSE"); s2.ErrorReason != "settlement_pending" {
		t.Fatalf("replay while pending: PAYMENT-RESPONSE %+v, want settlement_pending", s2)
	}

	principal := "wallet:" + chain.Payer.Address.Hex()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var txn *auditRecord
		for _, rec := range g.audit(t, principal) {
			if rec.Type == "txn" && rec.Kind == "x402_settlement" {
				rec := rec
				txn = &rec
			}
		}
		if txn != nil {
			if len(txn.TxHash) != 66 || txn.Amount != priceExtract {
				t.Fatalf("reconciled txn: got %+v, want the tx hash and the price", txn)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no x402_settlement txn recorded within 30 s; ledger: %+v", g.audit(t, principal))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Once reconciled, the same payment again learns the outcome.
	var final settleResponse
	deadline = time.Now().Add(30 * time.Second)
	for {
		r3 := do(t, "POST", g.url+"/tools/extract/structured", []byte(extractInput), p.Headers())
		if r3.Status != 200 {
			t.Fatalf("replay after reconciliation: got %d %s, want 200", r3.Status, r3.Body)
		}
		if final = decodeSettlement(t, r3, "PAYMENT-RESPONSE"); final.Success {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replay PAYMENT-RESPONSE still %+v 30 s after reconciliation", final)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(final.Transaction) != 66 || !strings.EqualFold(final.Payer, chain.Payer.Address.Hex()) {
		t.Fatalf("final PAYMENT-RESPONSE %+v, want success with the transaction and payer", final)
	}
	if got := up.Hits("/extract"); got != 1 {
		t.Fatalf("upstream hits after replays: got %d, want 1", got)
	}
	if got, want := chain.BalanceOf(t, a, chain.PayTo.Address)-payTo0, money.Micros(priceExtract); got != want {
		t.Fatalf("payTo balance rose by %d, want exactly one price %d", got, want)
	}
	for _, rec := range g.audit(t, principal) {
		if rec.Type == "call" && rec.Outcome == "allowed" && rec.Reason != "settlement_pending" {
			t.Errorf("call record reason: got %q, want settlement_pending", rec.Reason)
		}
	}
}
