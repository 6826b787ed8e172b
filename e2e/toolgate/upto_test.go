package toolgate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// meteredUpstream is a loopback tool that reports the cost the request
// asks for ({"cost":"0.03"}) in X-Toolgate-Cost-Usd, or answers 500 for
// {"fail":true}.
type meteredUpstream struct {
	url  string
	hits atomic.Int64
}

func startMeteredUpstream(t testing.TB) *meteredUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &meteredUpstream{url: "http://" + ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		var in struct {
			Cost string `json:"cost"`
			Fail bool   `json:"fail"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &in)
		w.Header().Set("Content-Type", "application/json")
		if in.Fail {
			w.WriteHeader(500)
			io.WriteString(w, `{"error":"model crashed"}`)
			return
		}
		if in.Cost != "" {
			w.Header().Set("X-Toolgate-Cost-Usd", in.Cost)
		}
		fmt.Fprintf(w, `{"ok":true,"tokens":42,"leaked_payment":%t}`,
			r.Header.Get("Payment-Signature") != "" || r.Header.Get("X-Payment") != "")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return u
}

const (
	uptoMax   = 100_000 // $0.10, the metered tool's max_usd
	uptoTools = `{"tools":[
 {"id":"llm/generate","rate_class":"light","price":{"max_usd":"0.10","metered":true},"upstream":"%s/llm","timeout_ms":5000,
  "description":"Generate text, billed per token"}]}`
)

// uptoEnv is anvil with TestUSDC, Permit2 and the upto proxy, the
// reference facilitator (exact and upto), a metered upstream and the
// gateway with --x402-upto auto.
type uptoEnv struct {
	a   *chain.Anvil
	fac *chain.Facilitator
	up  *meteredUpstream
	gw  *gateway
	url string
}

func newUptoEnv(t *testing.T) *uptoEnv {
	t.Helper()
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.DeployPermit2(t, a)
	e := &uptoEnv{a: a, up: startMeteredUpstream(t)}
	e.fac = chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
	e.gw = startGatewayCatalog(t, fmt.Sprintf(uptoTools, e.up.url), "--x402-facilitator", e.fac.URL(), "--x402-upto", "auto")
	e.url = e.gw.url + "/tools/llm/generate"
	return e
}

// payer returns a fresh funded account (gas, 1 USDC) that has approved
// Permit2 on the token, as the upto scheme needs once per payer.
func (e *uptoEnv) payer(t *testing.T) chain.Account {
	t.Helper()
	p := chain.NewAccount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.a.SetBalance(ctx, p.Address, new(big.Int).Lsh(big.NewInt(1), 60)); err != nil {
		t.Fatal(err)
	}
	chain.Mint(t, e.a, p.Address, money.PerUSD)
	chain.ApprovePermit2(t, e.a, p, new(big.Int).Lsh(big.NewInt(1), 200))
	return p
}

// TestUpto_Challenge: a metered tool's 402 offers upto at the maximum,
// naming the facilitator's address and Permit2, then exact at the maximum
// for payers without upto; the v1 body stays exact-only.
func TestUpto_Challenge(t *testing.T) {
	t.Parallel()
	e := newUptoEnv(t)
	r := do(t, "POST", e.url, nil, nil)
	if r.Status != 402 {
		t.Fatalf("status: got %d, want 402: %s", r.Status, r.Body)
	}
	var pr paymentRequired
	decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
	if len(pr.Accepts) != 2 {
		t.Fatalf("accepts: got %d entries, want 2 (upto, exact): %s", len(pr.Accepts), pr.Accepts)
	}
	type extra struct {
		Name, Version, AssetTransferMethod, FacilitatorAddress string
	}
	var up, ex struct {
		Scheme, Network, Amount, Asset, PayTo string
		Extra                                 extra
	}
	_ = json.Unmarshal(pr.Accepts[0], &up)
	_ = json.Unmarshal(pr.Accepts[1], &ex)
	if up.Scheme != "upto" || up.Network != network || up.Amount != "100000" || up.Asset != chain.USDCAddress.Hex() ||
		up.PayTo != chain.PayTo.Address.Hex() ||
		up.Extra != (extra{"USDC", "2", "permit2", e.fac.RelayerAddress().Hex()}) {
		t.Errorf("accepts[0]: got %+v, want upto 100000 with facilitatorAddress %s", up, e.fac.RelayerAddress().Hex())
	}
	if ex.Scheme != "exact" || ex.Amount != "100000" {
		t.Errorf("accepts[1]: got %+v, want exact 100000", ex)
	}
	var v1 struct {
		Accepts []struct{ Scheme string } `json:"accepts"`
	}
	if err := json.Unmarshal(r.Body, &v1); err != nil || len(v1.Accepts) != 1 || v1.Accepts[0].Scheme != "exact" {
		t.Errorf("v1 body: got %s, want one exact entry", r.Body)
	}
}

// TestUpto_Pay pays the metered tool with the real @x402/fetch client and
// @x402/evm's UptoEvmScheme: the payer is charged on chain exactly what
// the upstream reported (capped at the maximum), once.
func TestUpto_Pay(t *testing.T) {
	t.Parallel()
	e := newUptoEnv(t)

	pay := func(t *testing.T, p chain.Account, body string, opts chain.PayOptions) []chain.PayResult {
		t.Helper()
		opts.Payer, opts.RPC, opts.JSON, opts.Upto = p, e.a.RPC(), body, true
		return chain.PayV2(t, e.url, opts)
	}
	// charged checks what payer lost and payee gained across fn.
	charged := func(t *testing.T, p chain.Account, want money.Micros, fn func()) {
		t.Helper()
		payer0, payee0 := chain.BalanceOf(t, e.a, p.Address), chain.BalanceOf(t, e.a, chain.PayTo.Address)
		fn()
		if got := payer0 - chain.BalanceOf(t, e.a, p.Address); got != want {
			t.Errorf("payer charged %d atomic units, want %d", got, want)
		}
		if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payee0; got != want {
			t.Errorf("payee received %d atomic units, want %d", got, want)
		}
	}
	settles := func() int { return e.fac.Stats(t).Settle }

	t.Run("ActualCost", func(t *testing.T) {
		p := e.payer(t)
		var r chain.PayResult
		charged(t, p, 30_000, func() { r = pay(t, p, `{"cost":"0.03"}`, chain.PayOptions{})[0] })
		if r.Status != 200 {
			t.Fatalf("got %d %q, want 200: %s", r.Status, r.Error, r.Body)
		}
		if got := r.Headers["x-cost-usd"]; got != "0.030" {
			t.Errorf("X-Cost-Usd: got %q, want 0.030", got)
		}
		if _, leaked := r.Headers["x-toolgate-cost-usd"]; leaked {
			t.Error("the upstream's X-Toolgate-Cost-Usd reached the client")
		}
		if strings.Contains(r.Body, `"leaked_payment":true`) {
			t.Error("the payment header reached the upstream")
		}
		s, ok := r.Settlement()
		if !ok || !s.Success || s.Amount != "30000" || s.Transaction == "" || !strings.EqualFold(s.Payer, p.Address.Hex()) {
			t.Fatalf("PAYMENT-RESPONSE: got %+v (present %t), want success, amount 30000, a transaction, payer %s", s, ok, p.Address.Hex())
		}
		e.gw.wantSettledInLedger(t, p.Address, "llm/generate", r.Headers["x-request-id"], s.Transaction, 30_000)
		for _, rec := range e.gw.audit(t, "wallet:"+p.Address.Hex()) {
			if rec.Type == "call" && rec.Payment != nil && rec.Payment.Nonce == "" {
				t.Errorf("ledger payment summary without the Permit2 nonce: %+v", rec)
			}
		}
		// Spend reserved the maximum and committed the actual cost.
		st := e.gw.admin(t, "GET", "/authorization/status?wallet="+p.Address.Hex(), nil)
		var sp struct {
			Spend json.RawMessage `json:"spend_today_usd"`
		}
		_ = json.Unmarshal(st.Body, &sp)
		if got, err := money.ParseJSON(sp.Spend); err != nil || got != 30_000 {
			t.Errorf("spend_today_usd: got %s (%v), want 0.03", sp.Spend, err)
		}
	})
	t.Run("CappedAtMax", func(t *testing.T) {
		p := e.payer(t)
		var r chain.PayResult
		charged(t, p, uptoMax, func() { r = pay(t, p, `{"cost":"0.25"}`, chain.PayOptions{})[0] })
		s, _ := r.Settlement()
		if r.Status != 200 || r.Headers["x-cost-usd"] != "0.100" || s.Amount != "100000" {
			t.Errorf("got %d, X-Cost-Usd %q, settled %q; want 200, 0.100, 100000", r.Status, r.Headers["x-cost-usd"], s.Amount)
		}
	})
	t.Run("ZeroCostSettlesNothing", func(t *testing.T) {
		p := e.payer(t)
		before := settles()
		var r chain.PayResult
		charged(t, p, 0, func() { r = pay(t, p, `{"cost":"0"}`, chain.PayOptions{})[0] })
		s, ok := r.Settlement()
		if r.Status != 200 || r.Headers["x-cost-usd"] != "0.000" || !ok || !s.Success || s.Amount != "0" || s.Transaction != "" {
			t.Errorf("got %d, X-Cost-Usd %q, PAYMENT-RESPONSE %+v; want 200, 0.000, success amount 0 without a transaction",
				r.Status, r.Headers["x-cost-usd"], s)
		}
		if got := settles(); got != before {
			t.Errorf("facilitator /settle calls: got %d more, want none", got-before)
		}
	})
	t.Run("UpstreamFailureSettlesNothing", func(t *testing.T) {
		p := e.payer(t)
		before := settles()
		var r chain.PayResult
		charged(t, p, 0, func() { r = pay(t, p, `{"fail":true}`, chain.PayOptions{})[0] })
		if r.Status != 500 {
			t.Errorf("status: got %d, want the upstream's 500: %s", r.Status, r.Body)
		}
		if got := settles(); got != before {
			t.Errorf("facilitator /settle calls: got %d more, want none", got-before)
		}
	})
	t.Run("ReplaySettlesOnce", func(t *testing.T) {
		p := e.payer(t)
		before := settles()
		var res []chain.PayResult
		charged(t, p, 40_000, func() { res = pay(t, p, `{"cost":"0.04"}`, chain.PayOptions{Resend: true}) })
		if len(res) != 2 || res[0].Status != 200 || res[1].Status != 402 {
			t.Fatalf("got %+v, want 200 then 402 for the resent payment", res)
		}
		var pr paymentRequired
		decodeB64JSON(t, "PAYMENT-REQUIRED", res[1].Headers["payment-required"], &pr)
		if pr.Error != "permit2_invalid_nonce" {
			t.Errorf("replay 402 error: got %q, want the nonce-used reason", pr.Error)
		}
		if got := settles() - before; got != 1 {
			t.Errorf("facilitator /settle calls: got %d, want 1", got)
		}
	})
	t.Run("PaymentIdentifierRetry", func(t *testing.T) {
		p := e.payer(t)
		before := settles()
		var res []chain.PayResult
		charged(t, p, 20_000, func() {
			res = pay(t, p, `{"cost":"0.02"}`, chain.PayOptions{Resend: true, PaymentID: "pay_upto_0123456789abcdef"})
		})
		if len(res) != 2 || res[0].Status != 200 || res[1].Status != 200 || res[1].Body != res[0].Body {
			t.Fatalf("got %+v, want the same 200 answer twice", res)
		}
		s0, _ := res[0].Settlement()
		s1, _ := res[1].Settlement()
		if s0 != s1 || s1.Amount != "20000" {
			t.Errorf("PAYMENT-RESPONSE: got %+v then %+v, want the same, amount 20000", s0, s1)
		}
		if got := settles() - before; got != 1 {
			t.Errorf("facilitator /settle calls: got %d, want 1", got)
		}
	})
	t.Run("ExactOnlyClientPaysMax", func(t *testing.T) {
		p := e.payer(t)
		var r chain.PayResult
		charged(t, p, uptoMax, func() {
			r = chain.PayV2(t, e.url, chain.PayOptions{Payer: p, RPC: e.a.RPC(), JSON: `{"cost":"0.03"}`})[0]
		})
		if r.Status != 200 || r.Headers["x-cost-usd"] != "0.100" {
			t.Errorf("got %d, X-Cost-Usd %q; want 200, 0.100 (exact pays the maximum)", r.Status, r.Headers["x-cost-usd"])
		}
	})
}
