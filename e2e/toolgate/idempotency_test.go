package toolgate_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestGateway_PaymentIdentifier: the real @x402/fetch client with the
// payment-identifier extension of @x402/extensions. A network-level retry
// (the same PAYMENT-SIGNATURE again) gets the recorded answer and the
// same PAYMENT-RESPONSE: one upstream call, one settlement, payTo paid
// once. The same id under a newly signed payment (the client's own
// re-sign) is 409, and moves nothing.
func TestGateway_PaymentIdentifier(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaFacilitator)
	url := e.gw.url + "/tools/extract/structured"
	payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
	id := "pay_e2e_" + hex.EncodeToString(randomBytes(12))

	res := chain.PayV2(t, url, chain.PayOptions{RPC: e.a.RPC(), JSON: extractInput, PaymentID: id, Resend: true})
	first, retry := res[0], res[1]
	if first.Error != "" || first.Status != 200 {
		t.Fatalf("paid call: got %d %q %s", first.Status, first.Error, first.Body)
	}
	s1, ok := first.Settlement()
	if !ok || !s1.Success || s1.Transaction == "" {
		t.Fatalf("paid call: PAYMENT-RESPONSE %+v, want success with a transaction", s1)
	}
	if !retry.Resent || retry.Status != 200 || retry.Body != first.Body || retry.Headers["idempotent-replayed"] != "true" {
		t.Fatalf("retry: got %d %s (headers %v), want the recorded 200 %s", retry.Status, retry.Body, retry.Headers, first.Body)
	}
	if s2, ok := retry.Settlement(); !ok || s2 != s1 {
		t.Fatalf("retry: PAYMENT-RESPONSE %+v, want the recorded %+v", s2, s1)
	}
	if got := e.up.Hits("/extract"); got != 1 {
		t.Fatalf("upstream hits: got %d, want 1", got)
	}
	if st := e.fac.Stats(t); st.Settle != 1 {
		t.Fatalf("facilitator settlements: got %d, want 1", st.Settle)
	}
	if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payTo0; got != priceExtract {
		t.Fatalf("payTo received %d, want one price %d", got, priceExtract)
	}

	// The client signs afresh under the same id: a different payment.
	again := chain.PayV2(t, url, chain.PayOptions{RPC: e.a.RPC(), JSON: extractInput, PaymentID: id})[0]
	if again.Status != 409 {
		t.Fatalf("same id, new payment: got %d %q %s, want 409", again.Status, again.Error, again.Body)
	}
	if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payTo0; got != priceExtract || e.up.Hits("/extract") != 1 {
		t.Fatalf("after the conflict: payTo +%d, upstream %d; want +%d and 1", got, e.up.Hits("/extract"), priceExtract)
	}
}

// TestGateway_RetriesSurviveRestart: recorded answers are in the store,
// so a retry after a restart still gets them: a paid call with a
// payment-identifier, and an API-key call with an Idempotency-Key (billed
// once; another body under the key is 409).
func TestGateway_RetriesSurviveRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaFacilitator)
	g := e.gw
	url := g.url + "/tools/extract/structured"
	p := g.validV2(t, chain.Payer, "extract/structured", priceExtract)
	p = withPaymentID(t, p, "pay_restart_0123456789")
	r1 := do(t, "POST", url, []byte(extractInput), p.Headers())
	if r1.Status != 200 {
		t.Fatalf("paid call: got %d %s", r1.Status, r1.Body)
	}
	var k struct {
		Secret string `json:"secret"`
		KeyID  string `json:"key_id"`
	}
	kr := g.admin(t, "POST", "/credits/keys", map[string]any{})
	if err := json.Unmarshal(kr.Body, &k); err != nil || k.Secret == "" {
		t.Fatalf("create key: %d %s", kr.Status, kr.Body)
	}
	keyed := map[string]string{"X-API-Key": k.Secret, "Idempotency-Key": "restart-0001"}
	k1 := do(t, "POST", url, []byte(extractInput), keyed)
	if k1.Status != 200 {
		t.Fatalf("key call: got %d %s", k1.Status, k1.Body)
	}

	g.restart()
	payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
	r2 := do(t, "POST", url, []byte(extractInput), p.Headers())
	if r2.Status != 200 || string(r2.Body) != string(r1.Body) || r2.Header.Get("Payment-Response") != r1.Header.Get("Payment-Response") {
		t.Fatalf("paid retry after restart: got %d %s, want the recorded 200 %s", r2.Status, r2.Body, r1.Body)
	}
	k2 := do(t, "POST", url, []byte(extractInput), keyed)
	if k2.Status != 200 || string(k2.Body) != string(k1.Body) || k2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("key retry after restart: got %d %s, want the recorded 200 %s", k2.Status, k2.Body, k1.Body)
	}
	if k3 := do(t, "POST", url, []byte(`{"text":"other"}`), keyed); k3.Status != 409 {
		t.Fatalf("key reused with another body: got %d %s, want 409", k3.Status, k3.Body)
	}
	if got := e.up.Hits("/extract"); got != 2 {
		t.Fatalf("upstream hits: got %d, want 2 (one per first attempt)", got)
	}
	if got := chain.BalanceOf(t, e.a, chain.PayTo.Address); got != payTo0 {
		t.Fatalf("payTo moved by %d on retries", got-payTo0)
	}
	var spent money.Micros
	for _, rec := range g.audit(t, "key:"+k.KeyID) {
		if rec.Type == "call" {
			spent += rec.Cost
		}
	}
	if spent != priceExtract {
		t.Fatalf("key billed %d in the ledger, want one price %d", spent, priceExtract)
	}
}

// withPaymentID adds the payment-identifier extension with id to a v2 payment.
func withPaymentID(t testing.TB, p signedPayment, id string) signedPayment {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(p.Header)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["extensions"] = map[string]any{"payment-identifier": map[string]any{"info": map[string]any{"required": false, "id": id}}}
	b, _ := json.Marshal(m)
	p.Header = base64.StdEncoding.EncodeToString(b)
	return p
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	nonce := randomNonce()
	copy(b, nonce[:])
	return b
}
