package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/x402"
)

// uptoFacilitator is the address the test gateway's upto payments name.
var uptoFacilitator = chain.Relayer.Address

// withUpto is withX402 with the upto scheme on (metered tools accept it).
func withUpto(t testing.TB, settler x402.Settler) func(*gateway.Options) {
	base := withX402(t, settler)
	return func(o *gateway.Options) {
		base(o)
		o.X402.Config.UptoFacilitator = uptoFacilitator
	}
}

// uptoSettler is a fakeSettler for upto payments that records the amount
// of each settle request (the upto requirements' amount).
type uptoSettler struct {
	fakeSettler
	mu      sync.Mutex
	amounts []string // settle requests' amounts, in order
	verify  []string // verify requests' amounts
}

func newUptoSettler() *uptoSettler {
	s := &uptoSettler{}
	amount := func(p *x402.Payment, o *x402.Offer) string {
		var r x402.Requirements
		_ = json.Unmarshal(o.RequirementsFor(p), &r)
		return r.Amount
	}
	s.VerifyFn = func(_ context.Context, p *x402.Payment, o *x402.Offer) (x402.VerifyResult, error) {
		s.mu.Lock()
		s.verify = append(s.verify, amount(p, o))
		s.mu.Unlock()
		return x402.VerifyResult{Valid: true, Payer: p.Permit2.From.Hex()}, nil
	}
	s.SettleFn = func(_ context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
		a := amount(p, o)
		s.mu.Lock()
		s.amounts = append(s.amounts, a)
		s.mu.Unlock()
		n := p.Permit2.Nonce.Bytes32()
		return x402.SettleResult{Success: true, Transaction: "0x" + hex.EncodeToString(n[:]), Network: o.Network(2),
			Payer: p.Permit2.From.Hex(), Amount: a}, nil
	}
	return s
}

func (s *uptoSettler) settled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.amounts...)
}

// uptoAuth is an upto authorization for the test gateway's metered tool
// (max $0.10), valid for 5 minutes, that tests may alter before signing.
func uptoAuth(payer chain.Account, nonce uint64) map[string]any {
	return map[string]any{
		"from":      payer.Address.Hex(),
		"permitted": map[string]any{"token": chain.USDCAddress.Hex(), "amount": "100000"},
		"spender":   x402.UptoProxyAddress.Hex(),
		"nonce":     strconv.FormatUint(nonce, 10),
		"deadline":  strconv.FormatInt(time.Now().Add(5*time.Minute).Unix(), 10),
		"witness": map[string]any{
			"to": chain.PayTo.Address.Hex(), "facilitator": uptoFacilitator.Hex(), "validAfter": "0",
		},
	}
}

// signUpto signs the authorization w (uptoAuth's shape) with key, over
// Permit2's EIP-712 digest as the x402 package computes it.
func signUpto(t testing.TB, key chain.Account, w map[string]any) string {
	t.Helper()
	raw, _ := json.Marshal(map[string]any{"x402Version": 2, "accepted": map[string]any{"scheme": "upto", "network": "eip155:84532"},
		"payload": map[string]any{"signature": "0x00", "permit2Authorization": w}})
	p, err := x402.DecodeJSON(raw, 2)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := chain.SignPermit2(key, p.Permit2.Digest(x402.Permit2DomainSeparator(chain.ChainID)))
	if err != nil {
		t.Fatal(err)
	}
	return "0x" + hex.EncodeToString(sig)
}

// uptoHeader wraps authorization w and signature sig in a v2 header that
// echoes the tool's upto requirements (accepts[0]).
func (h *harness) uptoHeader(tool string, w map[string]any, sig string) string {
	h.t.Helper()
	b, _ := json.Marshal(map[string]any{"x402Version": 2, "accepted": h.accepted(tool),
		"payload": map[string]any{"signature": sig, "permit2Authorization": w}})
	return base64.StdEncoding.EncodeToString(b)
}

// paymentResponse decodes the PAYMENT-RESPONSE header.
func paymentResponse(t testing.TB, v string) x402.SettleResponse {
	t.Helper()
	var s x402.SettleResponse
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil || json.Unmarshal(raw, &s) != nil {
		t.Fatalf("PAYMENT-RESPONSE %q: not base64 JSON", v)
	}
	return s
}

// requiredError returns the error of a 402's PAYMENT-REQUIRED header.
func requiredError(t testing.TB, v string) string {
	t.Helper()
	raw, _ := base64.StdEncoding.DecodeString(v)
	var pr struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(raw, &pr)
	return pr.Error
}

// TestUpto_Settle: an upto payment of a metered tool is verified at the
// maximum, settled once at the cost the upstream reported (capped at the
// maximum) after the upstream answered, and billed, recorded and reported
// (X-Cost-Usd, PAYMENT-RESPONSE) at that cost; a call that cost nothing
// settles nothing, a failed call settles nothing and frees the payment.
func TestUpto_Settle(t *testing.T) {
	up := newUpstream(t)
	s := newUptoSettler()
	h := newHarnessWith(t, up, meteredCatalog(up.srv.URL), withUpto(t, s))
	var acc x402.Requirements
	_ = json.Unmarshal(h.accepted("llm"), &acc)
	if acc.Scheme != "upto" || acc.Amount != "100000" {
		t.Fatalf("accepts[0]: got %+v, want upto 100000", acc)
	}
	who := "wallet:" + chain.Payer.Address.Hex()
	nonce := uint64(1)
	call := func(t *testing.T, query string) (int, string, x402.SettleResponse) {
		t.Helper()
		nonce++
		w := uptoAuth(chain.Payer, nonce)
		resp, b := h.do("POST", "/tools/llm"+query, `{}`, "PAYMENT-SIGNATURE", h.uptoHeader("llm", w, signUpto(t, chain.Payer, w)))
		if v := resp.Header.Get("X-Toolgate-Cost-Usd"); v != "" {
			t.Fatalf("the upstream's cost report reached the caller: %q", v)
		}
		var sr x402.SettleResponse
		if v := resp.Header.Get("PAYMENT-RESPONSE"); v != "" {
			sr = paymentResponse(t, v)
		}
		if resp.StatusCode != 200 {
			t.Logf("body: %s", b)
		}
		return resp.StatusCode, resp.Header.Get("X-Cost-Usd"), sr
	}
	for _, tc := range []struct {
		name, query, cost, settled string
	}{
		{"Reported", "?cost=0.03", "0.030", "30000"},
		{"AboveMax", "?cost=0.25", "0.100", "100000"},
		{"Missing", "", "0.100", "100000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(s.settled())
			status, cost, sr := call(t, tc.query)
			if status != 200 || cost != tc.cost {
				t.Fatalf("got %d, X-Cost-Usd %q; want 200, %s", status, cost, tc.cost)
			}
			got := s.settled()
			if len(got) != n+1 || got[n] != tc.settled {
				t.Fatalf("settle requests: got %v, want one more at %s", got, tc.settled)
			}
			if !sr.Success || sr.Amount != tc.settled || sr.Transaction == "" {
				t.Errorf("PAYMENT-RESPONSE: got %+v, want success amount %s", sr, tc.settled)
			}
			recs := ledgerOf(h.records(who))
			calls, txns := recs[ledger.TypeCall], recs[ledger.KindX402Settlement]
			if len(calls) == 0 || len(txns) == 0 {
				t.Fatalf("ledger: %d call and %d settlement records, want both", len(calls), len(txns))
			}
			c, x := calls[len(calls)-1], txns[len(txns)-1]
			if strconv.FormatInt(int64(c.Cost), 10) != tc.settled || strconv.FormatInt(int64(x.Amount), 10) != tc.settled ||
				x.Kind != ledger.KindX402Settlement || c.Payment == nil || c.Payment.Scheme != "upto" {
				t.Errorf("ledger: call cost %d (payment %+v), txn %s %d; want %s for both, scheme upto", c.Cost, c.Payment, x.Kind, x.Amount, tc.settled)
			}
		})
	}
	s.mu.Lock()
	verified := append([]string(nil), s.verify...)
	s.mu.Unlock()
	for _, v := range verified {
		if v != "100000" {
			t.Errorf("a verify request carried amount %s, want the maximum 100000", v)
		}
	}
	if st := h.status("wallet=" + chain.Payer.Address.Hex()); st["spend_today_usd"] != 0.23 {
		t.Errorf("spend_today_usd %v, want 0.23 (the settled costs)", st["spend_today_usd"])
	}

	t.Run("ZeroSettlesNothing", func(t *testing.T) {
		n, txns := len(s.settled()), len(ledgerOf(h.records(who))[ledger.KindX402Settlement])
		nonce++
		w := uptoAuth(chain.Payer, nonce)
		hdr := h.uptoHeader("llm", w, signUpto(t, chain.Payer, w))
		resp, b := h.do("POST", "/tools/llm?cost=0", `{}`, "PAYMENT-SIGNATURE", hdr)
		if resp.StatusCode != 200 || resp.Header.Get("X-Cost-Usd") != "0.000" {
			t.Fatalf("got %d %s X-Cost-Usd %q, want 200 0.000", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
		}
		if sr := paymentResponse(t, resp.Header.Get("PAYMENT-RESPONSE")); !sr.Success || sr.Amount != "0" || sr.Transaction != "" {
			t.Errorf("PAYMENT-RESPONSE: got %+v, want success, amount 0, no transaction", sr)
		}
		if got := s.settled(); len(got) != n {
			t.Errorf("settle requests: got %v, want none more", got)
		}
		if got := len(ledgerOf(h.records(who))[ledger.KindX402Settlement]); got != txns {
			t.Errorf("txn records: got %d more, want none", got-txns)
		}
		// The payment is spent: it pays for no other call.
		resp, b = h.do("POST", "/tools/llm?cost=0.05", `{}`, "PAYMENT-SIGNATURE", hdr)
		if resp.StatusCode != 402 || requiredError(t, resp.Header.Get("PAYMENT-REQUIRED")) != x402.ReasonPermit2NonceUsed {
			t.Errorf("reuse: got %d %s, want 402 %s", resp.StatusCode, b, x402.ReasonPermit2NonceUsed)
		}
	})
	t.Run("UpstreamFailureSettlesNothing", func(t *testing.T) {
		n := len(s.settled())
		nonce++
		w := uptoAuth(chain.Payer, nonce)
		hdr := h.uptoHeader("llm", w, signUpto(t, chain.Payer, w))
		resp, _ := h.do("POST", "/tools/llm?fail=1&cost=0.05", `{}`, "PAYMENT-SIGNATURE", hdr)
		if resp.StatusCode < 400 || resp.Header.Get("PAYMENT-RESPONSE") != "" {
			t.Fatalf("got %d with PAYMENT-RESPONSE %q, want the failure and no settlement", resp.StatusCode, resp.Header.Get("PAYMENT-RESPONSE"))
		}
		if got := s.settled(); len(got) != n {
			t.Fatalf("settle requests: got %v, want none more", got)
		}
		// Not spent: the same payment pays for a call that runs.
		if resp, b := h.do("POST", "/tools/llm?cost=0.01", `{}`, "PAYMENT-SIGNATURE", hdr); resp.StatusCode != 200 {
			t.Fatalf("retry after the failure: got %d %s, want 200", resp.StatusCode, b)
		}
		if got := s.settled(); len(got) != n+1 || got[n] != "10000" {
			t.Errorf("settle requests: got %v, want one more at 10000", got)
		}
	})
	t.Run("SettleRefused", func(t *testing.T) {
		f := newUptoSettler()
		f.SettleFn = func(context.Context, *x402.Payment, *x402.Offer) (x402.SettleResult, error) {
			return x402.SettleResult{Reason: x402.ReasonUptoExceedsAmount, Network: "eip155:84532"}, nil
		}
		h2 := newHarnessWith(t, up, meteredCatalog(up.srv.URL), withUpto(t, f))
		w := uptoAuth(chain.Payer, 9)
		resp, b := h2.do("POST", "/tools/llm?cost=0.03", `{}`, "PAYMENT-SIGNATURE", h2.uptoHeader("llm", w, signUpto(t, chain.Payer, w)))
		if resp.StatusCode != 402 || strings.Contains(string(b), "echo") {
			t.Fatalf("got %d %s, want 402 with the body withheld", resp.StatusCode, b)
		}
		if sr := paymentResponse(t, resp.Header.Get("PAYMENT-RESPONSE")); sr.Success || sr.ErrorReason != x402.ReasonUptoExceedsAmount {
			t.Errorf("PAYMENT-RESPONSE: got %+v, want failure %s", sr, x402.ReasonUptoExceedsAmount)
		}
		if st := h2.status("wallet=" + chain.Payer.Address.Hex()); st["spend_today_usd"] != 0.0 {
			t.Errorf("spend_today_usd %v, want 0", st["spend_today_usd"])
		}
	})
}

// TestUpto_BadPayloads: upto payments that do not match the offer, or
// carry a broken authorization, are refused with a 402 naming the problem
// (a 400 when the header is no payment at all), before any upstream call
// or settlement.
func TestUpto_BadPayloads(t *testing.T) {
	up := newUpstream(t)
	s := newUptoSettler()
	s.VerifyFn = func(_ context.Context, p *x402.Payment, _ *x402.Offer) (x402.VerifyResult, error) {
		return x402.VerifyResult{Reason: x402.ReasonPermit2Signature, Payer: p.Permit2.From.Hex()}, nil
	}
	h := newHarnessWith(t, up, meteredCatalog(up.srv.URL), withUpto(t, s))
	other := chain.NewAccount(t)
	set := func(path string, v any) func(map[string]any) {
		return func(w map[string]any) {
			m, keys := w, strings.Split(path, ".")
			for _, k := range keys[:len(keys)-1] {
				m = m[k].(map[string]any)
			}
			if v == nil {
				delete(m, keys[len(keys)-1])
			} else {
				m[keys[len(keys)-1]] = v
			}
		}
	}
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	soon := strconv.FormatInt(time.Now().Add(2*time.Second).Unix(), 10)
	for i, tc := range []struct {
		name   string
		tool   string
		change func(map[string]any)
		signer *chain.Account // nil: the payer
		sig    string         // set: this signature instead
		want   string
	}{
		{name: "Spender", change: set("spender", other.Address.Hex()), want: x402.ReasonPermit2Spender},
		{name: "Recipient", change: set("witness.to", other.Address.Hex()), want: x402.ReasonPermit2Recipient},
		{name: "Facilitator", change: set("witness.facilitator", other.Address.Hex()), want: x402.ReasonUptoFacilitator},
		{name: "Token", change: set("permitted.token", other.Address.Hex()), want: x402.ReasonPermit2Token},
		{name: "AmountBelowMax", change: set("permitted.amount", "30000"), want: x402.ReasonPermit2Amount},
		{name: "AmountAboveMax", change: set("permitted.amount", "1000000"), want: x402.ReasonPermit2Amount},
		{name: "DeadlineTooSoon", change: set("deadline", soon), want: x402.ReasonPermit2Deadline},
		{name: "NotYetValid", change: set("witness.validAfter", future), want: x402.ReasonPermit2NotYetValid},
		{name: "MissingWitness", change: set("witness", nil), want: x402.ReasonUptoPayload},
		{name: "BadNonce", change: set("nonce", "not-a-number"), want: x402.ReasonUptoPayload},
		{name: "BadAddress", change: set("from", "0x1234"), want: x402.ReasonUptoPayload},
		{name: "NoSignature", sig: "", want: x402.ReasonMissingSignature},
		{name: "SignatureNotHex", sig: "0xzz", want: x402.ReasonSignatureFormat},
		{name: "SignedByAnother", signer: &other, want: x402.ReasonPermit2Signature},
		{name: "FixedPriceTool", tool: "fixed", want: x402.ReasonScheme},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := "llm"
			if tc.tool != "" {
				tool = tc.tool
			}
			w := uptoAuth(chain.Payer, uint64(100+i))
			signer := chain.Payer
			if tc.signer != nil {
				signer = *tc.signer
			}
			sig := signUpto(t, signer, w)
			if tc.name == "NoSignature" || tc.name == "SignatureNotHex" {
				sig = tc.sig
			}
			if tc.change != nil {
				tc.change(w)
			}
			var hdr string
			if tool == "fixed" {
				// An upto payload echoing upto requirements the tool never offered.
				var acc map[string]any
				_ = json.Unmarshal(h.accepted("fixed"), &acc)
				acc["scheme"] = "upto"
				b, _ := json.Marshal(map[string]any{"x402Version": 2, "accepted": acc,
					"payload": map[string]any{"signature": sig, "permit2Authorization": w}})
				hdr = base64.StdEncoding.EncodeToString(b)
			} else {
				hdr = h.uptoHeader(tool, w, sig)
			}
			hits, settles := up.hits.Load(), len(s.settled())
			resp, b := h.do("POST", "/tools/"+tool+"?cost=0.01", `{}`, "PAYMENT-SIGNATURE", hdr)
			if resp.StatusCode != 402 {
				t.Fatalf("got %d %s, want 402", resp.StatusCode, b)
			}
			if got := requiredError(t, resp.Header.Get("PAYMENT-REQUIRED")); got != tc.want {
				t.Errorf("PAYMENT-REQUIRED error: got %q, want %q", got, tc.want)
			}
			if up.hits.Load() != hits || len(s.settled()) != settles {
				t.Errorf("a refused payment reached the upstream or the settler")
			}
		})
	}
	t.Run("V1Upto", func(t *testing.T) {
		b, _ := json.Marshal(map[string]any{"x402Version": 1, "scheme": "upto", "network": "base-sepolia",
			"payload": map[string]any{"signature": "0x00", "permit2Authorization": uptoAuth(chain.Payer, 7)}})
		resp, body := h.do("POST", "/tools/llm", `{}`, "X-PAYMENT", base64.StdEncoding.EncodeToString(b))
		if resp.StatusCode != 402 {
			t.Fatalf("got %d %s, want 402", resp.StatusCode, body)
		}
	})
	t.Run("NotAPayment", func(t *testing.T) {
		resp, body := h.do("POST", "/tools/llm", `{}`, "PAYMENT-SIGNATURE", "%%%")
		if resp.StatusCode != 400 {
			t.Fatalf("got %d %s, want 400", resp.StatusCode, body)
		}
	})
}

// TestUpto_Pending: an upto settlement whose outcome the facilitator did
// not give (a timeout after sending) is answered as pending with the
// actual amount, never with a fresh 402, and reconciled once at that
// amount.
func TestUpto_Pending(t *testing.T) {
	up := newUpstream(t)
	s := newUptoSettler()
	s.SettleFn = func(context.Context, *x402.Payment, *x402.Offer) (x402.SettleResult, error) {
		return x402.SettleResult{}, x402.ErrOutcomeUnknown
	}
	var key atomic.Pointer[x402.NonceKey]
	rc := &fakeReconciler{ReconcileFn: func(_ context.Context, k x402.NonceKey, _ string) (x402.SettleResult, error) {
		key.Store(&k)
		return x402.SettleResult{Success: true, Transaction: "0x" + strings.Repeat("ab", 32)}, nil
	}}
	h := newHarnessWith(t, up, meteredCatalog(up.srv.URL), func(o *gateway.Options) {
		withUpto(t, s)(o)
		o.X402.Reconciler, o.X402.ReconcileEvery = rc, 10*time.Millisecond
	})
	w := uptoAuth(chain.Payer, 77)
	resp, b := h.do("POST", "/tools/llm?cost=0.03", `{}`, "PAYMENT-SIGNATURE", h.uptoHeader("llm", w, signUpto(t, chain.Payer, w)))
	if resp.StatusCode == 402 {
		t.Fatalf("got 402 %s: a pending settlement must not ask for a second payment", b)
	}
	if sr := paymentResponse(t, resp.Header.Get("PAYMENT-RESPONSE")); sr.Success || sr.ErrorReason != x402.ReasonSettlementPending || sr.Amount != "30000" {
		t.Errorf("PAYMENT-RESPONSE: got %+v, want pending with amount 30000", sr)
	}
	who := "wallet:" + chain.Payer.Address.Hex()
	deadline := time.Now().Add(10 * time.Second)
	for {
		txns := ledgerOf(h.records(who))[ledger.KindX402Settlement]
		if len(txns) == 1 {
			if txns[0].Amount != 30_000 {
				t.Errorf("reconciled settlement amount: got %d, want 30000", txns[0].Amount)
			}
			break
		}
		if len(txns) > 1 || time.Now().After(deadline) {
			t.Fatalf("reconciled settlement records: got %d, want 1", len(txns))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if k := key.Load(); k == nil || k.Asset != x402.Permit2Address || k.From != chain.Payer.Address {
		t.Errorf("reconciled key: got %+v, want the payer's Permit2 nonce", k)
	}
}

// TestUpto_ConcurrentReplays: one upto payment sent by many callers at
// once pays for exactly one call and is settled once.
func TestUpto_ConcurrentReplays(t *testing.T) {
	up := newUpstream(t)
	s := newUptoSettler()
	h := newHarnessWith(t, up, meteredCatalog(up.srv.URL), withUpto(t, s))
	w := uptoAuth(chain.Payer, 5)
	hdr := h.uptoHeader("llm", w, signUpto(t, chain.Payer, w))
	const n = 32
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := h.do("POST", "/tools/llm?cost=0.02", `{}`, "PAYMENT-SIGNATURE", hdr)
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 402:
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != n-1 {
		t.Fatalf("got %d served and %d refused, want 1 and %d", ok.Load(), refused.Load(), n-1)
	}
	if got := s.settled(); len(got) != 1 || got[0] != "20000" {
		t.Fatalf("settle requests: got %v, want one at 20000", got)
	}
}
