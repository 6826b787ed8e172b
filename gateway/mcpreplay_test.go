package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// TestMCP_PendingSettlementReplay: over MCP (the Go SDK client), a paid
// tools/call whose settlement is left pending is served with a pending
// receipt; the same payment again gets the recorded result
// (_meta["toolgate/replayed"], no second upstream call or settlement) with
// the receipt pending, and once reconciliation knows the outcome, with
// the outcome.
func TestMCP_PendingSettlementReplay(t *testing.T) {
	mined := "0x" + strings.Repeat("cd", 32)
	var released atomic.Bool
	rc := &fakeReconciler{ReconcileFn: func(_ context.Context, _ x402.NonceKey, tx string) (x402.SettleResult, error) {
		if !released.Load() {
			return x402.SettleResult{Pending: true, Transaction: tx}, nil
		}
		return x402.SettleResult{Success: true, Transaction: mined}, nil
	}}
	e := newPaidEnv(t, &fakeSettler{SettleFn: pendingOutcomes[2].settle}, func(o *gateway.Options) {
		o.X402.Reconciler = rc
		o.X402.ReconcileEvery = 10 * time.Millisecond
	})
	cs := e.mcpConnect(t, "", "")
	raw, err := base64.StdEncoding.DecodeString(e.sign("after", false).hdr)
	if err != nil {
		t.Fatal(err)
	}
	var payment map[string]any
	json.Unmarshal(raw, &payment)
	call := func() *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "after", Arguments: map[string]any{"q": 1},
			Meta: mcp.Meta{"x402/payment": payment}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	receipt := func(res *mcp.CallToolResult) map[string]any {
		r, _ := res.Meta["x402/payment-response"].(map[string]any)
		return r
	}
	first := call()
	if first.IsError || receipt(first)["success"] != false || receipt(first)["errorReason"] != x402.ReasonSettlementPending {
		t.Fatalf("paid call, settlement pending: isError %v meta %v", first.IsError, first.Meta)
	}
	hits, settles := e.up.hits.Load(), e.settler.settles.Load()
	again := call()
	b1, _ := json.Marshal(first.StructuredContent)
	b2, _ := json.Marshal(again.StructuredContent)
	if again.IsError || again.Meta["toolgate/replayed"] != true || string(b1) != string(b2) ||
		receipt(again)["errorReason"] != x402.ReasonSettlementPending {
		t.Fatalf("same payment while pending: isError %v meta %v %s, want the recorded result %s, receipt pending", again.IsError, again.Meta, b2, b1)
	}
	released.Store(true)
	e.waitTxn("x402_settlement")
	waitFor(t, "the replay to carry the outcome", func() bool {
		r := receipt(call())
		return r["success"] == true && r["transaction"] == mined
	})
	if e.up.hits.Load() != hits || e.settler.settles.Load() != settles {
		t.Fatalf("replays reached the upstream (%d→%d) or the backend (%d→%d)", hits, e.up.hits.Load(), settles, e.settler.settles.Load())
	}
}
