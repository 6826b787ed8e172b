package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// TestReconcile_OneNode: two gateways share pending settlements through
// Redis (cluster.Settlements). Gateway A serves a paid call whose
// settlement outcome is unknown, follows it (still pending) and dies;
// gateway B adopts it once A's claim lapses, learns the outcome and
// records it: one x402_settlement, in B's ledger, none in A's.
func TestReconcile_OneNode(t *testing.T) {
	rs := redistest.Start(t)
	c, err := cluster.Dial(rs.URL(), cluster.Options{NodeID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	claims := func(node string) gateway.SettlementClaims {
		s := cluster.NewSettlements(c.WithNode(node))
		s.ClaimTTL = 150 * time.Millisecond
		return s
	}
	unknown := pendingOutcomes[1].settle
	mined := "0x" + "cd"
	for len(mined) < 66 {
		mined += "cd"
	}
	pendingRC := &fakeReconciler{} // A: always still pending
	minedRC := &fakeReconciler{ReconcileFn: func(context.Context, x402.NonceKey, string) (x402.SettleResult, error) {
		return x402.SettleResult{Success: true, Transaction: mined}, nil
	}}
	env := func(node string, rc *fakeReconciler) *paidEnv {
		return newPaidEnv(t, &fakeSettler{SettleFn: unknown}, func(o *gateway.Options) {
			o.X402.Reconciler = rc
			o.X402.ReconcileEvery = 20 * time.Millisecond
			o.X402.Claims = claims(node)
		})
	}
	a := env("a", pendingRC)
	b := env("b", minedRC)
	p := a.sign("after", false)
	if resp, body := a.callPaid("after", "", p.hdr); resp.StatusCode != 200 {
		t.Fatalf("paid call on A: %d %s", resp.StatusCode, body)
	}
	call := a.lastCall()
	waitFor(t, "A following its pending settlement", func() bool { return pendingRC.calls.Load() >= 3 })
	if minedRC.calls.Load() != 0 {
		t.Fatalf("B reconciled a settlement A still follows (%d attempts)", minedRC.calls.Load())
	}
	a.gw.Close() // A dies: its claim is no longer renewed
	s := b.waitTxn("x402_settlement")
	if s.TxHash != mined || s.RequestID != call.RequestID || s.Amount != paidPrice || s.Payer != a.payer.Address.Hex() {
		t.Fatalf("B's txn %+v: want tx %s, A's request %s, amount %d", s, mined, call.RequestID, paidPrice)
	}
	if got := ledgerOf(a.records(a.principal))["x402_settlement"]; len(got) != 0 {
		t.Fatalf("A recorded %+v too", got)
	}
	// B's reconciliation finished: nobody adopts it again.
	n := minedRC.calls.Load()
	time.Sleep(300 * time.Millisecond) // two claim TTLs: an adoption would have happened
	if minedRC.calls.Load() != n {
		t.Fatalf("reconciled again after it was recorded: %d attempts, then %d", n, minedRC.calls.Load())
	}
	if got := ledgerOf(b.records(b.principal))["x402_settlement"]; len(got) != 1 {
		t.Fatalf("B's x402_settlement records: %+v, want 1", got)
	}
}
