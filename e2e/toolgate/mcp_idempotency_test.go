package toolgate_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestMCP_IdempotentReplays: idempotent retries over MCP with the official
// TypeScript SDK client, through the same claims as REST. An x402 payer's
// payment with the payment-identifier extension (@x402/extensions), sent
// again byte for byte, gets the recorded result (one upstream call, one
// settlement, _meta["toolgate/replayed"]); the same id with a fresh
// payment is a 409 tool error. A key caller's
// _meta["toolgate/idempotency-key"] does what the Idempotency-Key header
// does over REST (billed once; another request under the key is a 409);
// the same key over REST is another request (409); a key that is not a
// string is an invalid-params error.
func TestMCP_IdempotentReplays(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaFacilitator)
	args := map[string]any{"text": "Invoice 42 from ACME, total $120"}

	t.Run("PaymentIdentifier", func(t *testing.T) {
		const id = "mcp-retry-0123456789abcdef"
		payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
		run := runMCP(t, e.gw, "mcp-pay.mjs", "", []mcpStep{
			{"op": "unpaid", "name": "extract/structured", "arguments": args},
			{"op": "pay", "name": "extract/structured", "arguments": args, "paymentId": id},
			{"op": "replay"},
			{"op": "pay", "name": "extract/structured", "arguments": args, "paymentId": id},
		}, "PAYER_PRIVATE_KEY="+chain.Payer.KeyHex, "PAYER_RPC_URL="+e.a.RPC())
		wantConnected(t, run)
		var pr paymentRequired
		_ = json.Unmarshal(run.one(t, 0).Result.StructuredContent, &pr)
		if pr.Extensions["payment-identifier"] == nil {
			t.Fatalf("the MCP PaymentRequired does not declare payment-identifier: %s", run.one(t, 0).Result.StructuredContent)
		}
		first, again := run.one(t, 1), run.one(t, 2)
		var p struct {
			Extensions map[string]struct {
				Info struct{ ID string } `json:"info"`
			} `json:"extensions"`
		}
		if err := json.Unmarshal(first.Payload, &p); err != nil || p.Extensions["payment-identifier"].Info.ID != id {
			t.Fatalf("the client's payload does not carry the id: %s", first.Payload)
		}
		s1, ok1 := first.Result.settlement(t)
		s2, ok2 := again.Result.settlement(t)
		if first.Result.IsError || !ok1 || !s1.Success {
			t.Fatalf("paid call: got %+v", first.Result)
		}
		if again.Result.IsError || !ok2 || s2 != s1 || string(again.Result.Meta["toolgate/replayed"]) != "true" ||
			again.Result.metaString("toolgate/replayed_request_id") != first.Result.metaString("toolgate/request_id") ||
			again.Result.metaString("toolgate/cost_usd") != "0.000" {
			t.Errorf("same payment and id again: got %+v, want the recorded result (replayed, same receipt %+v)", again.Result, s1)
		}
		wantJSONEqual(t, "replayed structuredContent", again.Result.StructuredContent, first.Result.StructuredContent)
		conflict := run.one(t, 3).Result
		if !conflict.IsError || !bytes.Contains(conflict.StructuredContent, []byte("payment-identifier reused")) {
			t.Errorf("same id, fresh payment: got %+v, want a 409 tool error", conflict)
		}
		if s, ok := conflict.settlement(t); ok {
			t.Errorf("conflict: got a receipt %+v", s)
		}
		if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payTo0; got != priceExtract {
			t.Errorf("payTo received %d, want %d (one settlement)", got, priceExtract)
		}
		if s := e.fac.Stats(t); s.Settle != 1 {
			t.Errorf("facilitator settlements: got %d, want 1", s.Settle)
		}
		if got := e.up.Hits("/extract"); got != 1 {
			t.Errorf("upstream calls: got %d, want 1", got)
		}
		if outs := e.gw.outcomes(t, "wallet:"+chain.Payer.Address.Hex()); outs["allowed"] != 1 || outs["replayed"] != 1 || outs["conflict"] != 1 {
			t.Errorf("payer's records: got %v, want 1 allowed, 1 replayed, 1 conflict", outs)
		}
	})

	t.Run("IdempotencyKey", func(t *testing.T) {
		keyID, secret := e.gw.mcpKey(t, seedPolicy)
		hits0 := e.up.Hits("/extract")
		meta := map[string]any{"toolgate/idempotency-key": "order-77"}
		run := runMCP(t, e.gw, "mcp-client.mjs", secret, []mcpStep{
			{"op": "call", "name": "extract/structured", "arguments": args, "meta": meta},
			{"op": "call", "name": "extract/structured", "arguments": args, "meta": meta},
			{"op": "call", "name": "extract/structured", "arguments": map[string]any{"text": "another"}, "meta": meta},
			{"op": "call", "name": "extract/structured", "arguments": args, "meta": map[string]any{"toolgate/idempotency-key": 5}},
		})
		wantConnected(t, run)
		first, again, other := run.one(t, 0).Result, run.one(t, 1).Result, run.one(t, 2).Result
		if first.IsError || first.metaString("toolgate/cost_usd") != "0.010" {
			t.Fatalf("first call: got %+v", first)
		}
		if again.IsError || string(again.Meta["toolgate/replayed"]) != "true" || again.metaString("toolgate/cost_usd") != "0.000" {
			t.Errorf("same key and call: got %+v, want the recorded result, billed nothing", again)
		}
		wantJSONEqual(t, "replayed structuredContent", again.StructuredContent, first.StructuredContent)
		if !other.IsError || !bytes.Contains(other.StructuredContent, []byte("Idempotency-Key reused")) {
			t.Errorf("same key, other arguments: got %+v, want a 409 tool error", other)
		}
		if l := run.op(3); len(l) != 1 || l[0].Code == nil || *l[0].Code != -32602 {
			t.Errorf("a non-string key: got %+v, want invalid params (-32602)", l)
		}
		// The same key and body over REST: another request.
		body, _ := json.Marshal(args)
		req, _ := http.NewRequest("POST", e.gw.url+"/tools/extract/structured", bytes.NewReader(body))
		req.Header.Set("X-API-Key", secret)
		req.Header.Set("Idempotency-Key", "order-77")
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 409 {
			t.Errorf("the MCP call's key over REST: got %d, want 409", res.StatusCode)
		}
		if got := e.up.Hits("/extract") - hits0; got != 1 {
			t.Errorf("upstream calls: got %d, want 1", got)
		}
		recs := e.gw.outcomes(t, "key:"+keyID)
		if recs["allowed"] != 1 || recs["replayed"] != 1 || recs["conflict"] != 2 {
			t.Errorf("key's records: got %v, want 1 allowed, 1 replayed, 2 conflict", recs)
		}
		var spent money.Micros
		for _, r := range e.gw.audit(t, "key:"+keyID) {
			if r.Type == "call" {
				spent += r.Cost
			}
		}
		if spent != priceExtract {
			t.Errorf("billed %d micro-USD, want %d (once)", spent, priceExtract)
		}
	})
}
