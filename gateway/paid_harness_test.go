package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// fakeSettler is a function-field x402.Settler: each test sets the
// behaviour it needs; nil fields answer valid / success. It counts calls.
type fakeSettler struct {
	VerifyFn func(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.VerifyResult, error)
	SettleFn func(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error)

	verifies, settles atomic.Int64
}

var _ x402.Settler = (*fakeSettler)(nil)

func (f *fakeSettler) Verify(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.VerifyResult, error) {
	f.verifies.Add(1)
	if f.VerifyFn != nil {
		return f.VerifyFn(ctx, p, o)
	}
	return x402.VerifyResult{Valid: true, Payer: p.Authorization.From.Hex()}, nil
}

func (f *fakeSettler) Settle(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
	f.settles.Add(1)
	if f.SettleFn != nil {
		return f.SettleFn(ctx, p, o)
	}
	return x402.SettleResult{Success: true, Transaction: "0x" + hex.EncodeToString(p.Authorization.Nonce[:]),
		Network: o.Network(p.Version), Payer: p.Authorization.From.Hex()}, nil
}

// withX402 turns on x402 with settler, paying to chain.PayTo on the local
// test chain's id (84532, the default USDC domain), without any chain.
func withX402(t testing.TB, settler x402.Settler) func(*gateway.Options) {
	return func(o *gateway.Options) {
		cfg, err := x402.NewConfig("eip155:84532", "", "", "", chain.PayTo.Address.Hex(), "http://gw.test")
		if err != nil {
			t.Fatal(err)
		}
		o.X402 = &gateway.X402Options{Config: cfg, Settler: settler, Nonces: x402.NewNonceLock(o.DB),
			VerifyTimeout: time.Second, SettleTimeout: time.Second, ReconcileEvery: time.Hour}
	}
}

// accepted returns the v2 requirements the gateway offers for tool.
func (h *harness) accepted(tool string) json.RawMessage {
	h.t.Helper()
	resp, b := h.do("POST", "/tools/"+tool, "")
	if resp.StatusCode == 403 {
		// No wallet may call it, so no challenge: the listing has them.
		return h.listedAccepts(tool)
	}
	if resp.StatusCode != 402 {
		h.t.Fatalf("unpaid %s: got %d %s, want 402", tool, resp.StatusCode, b)
	}
	raw, err := base64.StdEncoding.DecodeString(resp.Header.Get("PAYMENT-REQUIRED"))
	if err != nil {
		h.t.Fatal(err)
	}
	var pr struct {
		Accepts []json.RawMessage `json:"accepts"`
	}
	if err := json.Unmarshal(raw, &pr); err != nil || len(pr.Accepts) == 0 {
		h.t.Fatalf("PAYMENT-REQUIRED %s: %v", raw, err)
	}
	return pr.Accepts[0]
}

// listedAccepts returns the v2 requirements /discovery/resources lists for tool.
func (h *harness) listedAccepts(tool string) json.RawMessage {
	h.t.Helper()
	_, b := h.do("GET", "/discovery/resources?limit=100", "")
	var l struct {
		Items []struct {
			Accepts  []json.RawMessage `json:"accepts"`
			Metadata struct {
				ToolID string `json:"toolId"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		h.t.Fatalf("discovery %s: %v", b, err)
	}
	for _, it := range l.Items {
		if it.Metadata.ToolID == tool && len(it.Accepts) > 0 {
			return it.Accepts[0]
		}
	}
	h.t.Fatalf("discovery lists no %s: %s", tool, b)
	return nil
}

// pay returns a fresh v2 payment header by payer for tool at price.
func (h *harness) pay(payer chain.Account, tool string, price money.Micros) string {
	h.t.Helper()
	auth := chain.NewAuthorization(payer.Address, chain.PayTo.Address, price, 5*time.Minute)
	sig, err := auth.Sign(payer)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.payWith(auth, sig, tool)
}

// payWith wraps an authorization and any signature bytes in a v2 header.
func (h *harness) payWith(auth chain.Authorization, sig []byte, tool string) string {
	h.t.Helper()
	b, _ := json.Marshal(map[string]any{
		"x402Version": 2,
		"accepted":    h.accepted(tool),
		"payload":     map[string]any{"signature": "0x" + hex.EncodeToString(sig), "authorization": auth.WireJSON()},
	})
	return base64.StdEncoding.EncodeToString(b)
}

// records returns the call and txn records of principal, oldest first
// (not its admin records: key created, policy put, …).
func (h *harness) records(principal string) []ledger.Record {
	h.t.Helper()
	var out []ledger.Record
	err := h.led.Query(ledger.Query{Principal: principal}, func(r *ledger.Record) error {
		if r.Type == ledger.TypeAdmin {
			return nil
		}
		out = append(out, *r)
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// status returns the admin view of a principal's status.
func (h *harness) status(query string) map[string]any {
	h.t.Helper()
	resp, b := h.admin("GET", "/authorization/status?"+query, "")
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("status %s: got %d %s", query, resp.StatusCode, b)
	}
	return decode(h.t, b)
}
