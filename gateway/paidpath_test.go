package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// The paid path end to end through HTTP, with a fake settlement backend:
// no node, no chain. Tests assert only what a payer and an operator see
// (status, headers, body, ledger records), so that they hold whatever the
// gateway's internals look like.

// fakeReconciler is a function-field gateway.Reconciler; nil ReconcileFn
// answers "still pending". It counts calls and keeps the last arguments.
type fakeReconciler struct {
	ReconcileFn func(ctx context.Context, k x402.NonceKey, tx string) (x402.SettleResult, error)

	calls  atomic.Int64
	lastTx atomic.Pointer[string]
	lastK  atomic.Pointer[x402.NonceKey]
}

var _ gateway.Reconciler = (*fakeReconciler)(nil)

func (f *fakeReconciler) ReconcileTx(ctx context.Context, k x402.NonceKey, tx string) (x402.SettleResult, error) {
	f.lastTx.Store(&tx)
	f.lastK.Store(&k)
	f.calls.Add(1)
	if f.ReconcileFn != nil {
		return f.ReconcileFn(ctx, k, tx)
	}
	return x402.SettleResult{Pending: true, Transaction: tx}, nil
}

const paidPrice money.Micros = 10000 // $0.01, the price of both paid tools

// paidCatalog has one tool per settle mode, both at paidPrice.
func paidCatalog(up string) string {
	return `{"tools":[
 {"id":"after","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/after"},
 {"id":"before","rate_class":"light","price_usd":"0.01","settle":"before_upstream","upstream":"` + up + `/before"}]}`
}

var settleModes = []string{"after", "before"} // tool ids of paidCatalog

// paidEnv is a gateway with x402 through a fake settler, and one payer.
type paidEnv struct {
	*harness
	t         *testing.T // shadows harness.t
	settler   *fakeSettler
	payer     chain.Account
	principal string
}

// newPaidEnv runs a gateway over paidCatalog with settler; tune, if not
// nil, adjusts the options after withX402 (o.X402 is set).
func newPaidEnv(t *testing.T, settler *fakeSettler, tune func(*gateway.Options)) *paidEnv {
	t.Helper()
	up := newUpstream(t)
	x := withX402(t, settler)
	h := newHarnessWith(t, up, paidCatalog(up.srv.URL), func(o *gateway.Options) {
		x(o)
		if tune != nil {
			tune(o)
		}
	})
	payer := chain.Accounts[6]
	return &paidEnv{harness: h, t: t, settler: settler, payer: payer, principal: "wallet:" + payer.Address.Hex()}
}

// signed is one signed authorization and its v2 header.
type signed struct {
	auth chain.Authorization
	hdr  string
}

// sign returns a fresh v2 payment for tool at paidPrice: an EOA signature,
// or with smart set one only the backend can check (as a smart wallet's).
func (e *paidEnv) sign(tool string, smart bool) signed {
	e.t.Helper()
	auth := chain.NewAuthorization(e.payer.Address, chain.PayTo.Address, paidPrice, 5*time.Minute)
	sig := smartWalletSig()
	if !smart {
		var err error
		if sig, err = auth.Sign(e.payer); err != nil {
			e.t.Fatal(err)
		}
	}
	return signed{auth: auth, hdr: e.payWith(auth, sig, tool)}
}

// payV1 returns a v1 (x-402-fetch) payment header for base-sepolia.
func (e *paidEnv) payV1(auth chain.Authorization) string {
	e.t.Helper()
	sig, err := auth.Sign(e.payer)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
		"payload": map[string]any{"signature": "0x" + hex.EncodeToString(sig), "authorization": auth.WireJSON()},
	})
	return base64.StdEncoding.EncodeToString(b)
}

// respell returns hdr with the same payment in other bytes (a trailing
// space in its JSON): the same authorization, another remote-verification
// cache entry.
func respell(t *testing.T, hdr string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(hdr)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(append(raw, ' '))
}

// callPaid calls tool with a v2 payment header; query may add "?fail=1".
func (e *paidEnv) callPaid(tool, query, hdr string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do("POST", "/tools/"+tool+query, `{"q":1}`, "PAYMENT-SIGNATURE", hdr, "Content-Type", "application/json")
}

// settlement decodes the settlement header name of resp.
func settlement(t *testing.T, resp *http.Response, name string) x402.SettleResponse {
	t.Helper()
	v := resp.Header.Get(name)
	if v == "" {
		t.Fatalf("no %s header (status %d)", name, resp.StatusCode)
	}
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		t.Fatalf("%s %q: %v", name, v, err)
	}
	var s x402.SettleResponse
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("%s %s: %v", name, raw, err)
	}
	return s
}

// ledgerOf sorts a principal's records: calls under "call", txns by kind.
func ledgerOf(recs []ledger.Record) map[string][]ledger.Record {
	m := map[string][]ledger.Record{}
	for _, r := range recs {
		k := r.Kind
		if r.Type == ledger.TypeCall {
			k = ledger.TypeCall
		}
		m[k] = append(m[k], r)
	}
	return m
}

// lastCall returns the principal's newest call record.
func (e *paidEnv) lastCall() ledger.Record {
	e.t.Helper()
	calls := ledgerOf(e.records(e.principal))[ledger.TypeCall]
	if len(calls) == 0 {
		e.t.Fatal("no call record")
	}
	return calls[len(calls)-1]
}

// waitTxn waits until the principal has a txn of kind and returns it.
func (e *paidEnv) waitTxn(kind string) ledger.Record {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if txns := ledgerOf(e.records(e.principal))[kind]; len(txns) > 0 {
			if len(txns) > 1 {
				e.t.Fatalf("%d %s txns, want 1: %+v", len(txns), kind, txns)
			}
			return txns[0]
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s txn within 10 s; ledger: %+v", kind, e.records(e.principal))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, failing after 10 s with what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wantNotBilled checks the last call was recorded with outcome and reason
// at cost 0, that nothing was settled, and that today's spend is zero.
func (e *paidEnv) wantNotBilled(outcome, reason string) {
	e.t.Helper()
	c := e.lastCall()
	if c.Outcome != outcome || c.Reason != reason || c.Cost != 0 {
		e.t.Fatalf("call record: outcome %q reason %q cost %d, want %q %q 0", c.Outcome, c.Reason, c.Cost, outcome, reason)
	}
	if s := ledgerOf(e.records(e.principal))["x402_settlement"]; len(s) != 0 {
		e.t.Fatalf("x402_settlement txns %+v, want none", s)
	}
	if st := e.status("wallet=" + e.payer.Address.Hex()); st["spend_today_usd"] != 0.0 {
		e.t.Fatalf("spend_today_usd %v, want 0", st["spend_today_usd"])
	}
}

// wantReplayed checks that hdr, a payment whose settlement was left
// pending, gets the recorded answer without a further backend or upstream
// call.
func (e *paidEnv) wantReplayed(tool, hdr string) {
	e.t.Helper()
	v, s, hits := e.settler.verifies.Load(), e.settler.settles.Load(), e.up.hits.Load()
	resp, b := e.callPaid(tool, "", hdr)
	if resp.StatusCode != 200 || resp.Header.Get("Idempotent-Replayed") != "true" || resp.Header.Get("PAYMENT-RESPONSE") == "" {
		e.t.Fatalf("replay of a pending payment: got %d %s, want the recorded 200 with PAYMENT-RESPONSE", resp.StatusCode, b)
	}
	if e.settler.verifies.Load() != v || e.settler.settles.Load() != s || e.up.hits.Load() != hits {
		e.t.Fatal("replay reached the settlement backend or the upstream")
	}
}

// wantNonceUsed checks that hdr is refused as a replay without a further
// backend call.
func (e *paidEnv) wantNonceUsed(tool, hdr string) {
	e.t.Helper()
	v, s := e.settler.verifies.Load(), e.settler.settles.Load()
	resp, b := e.callPaid(tool, "", hdr)
	if resp.StatusCode != 402 || paymentReason(e.t, resp.Header.Get("PAYMENT-REQUIRED")) != x402.ReasonNonceUsed {
		e.t.Fatalf("replay: got %d %s, want 402 %s", resp.StatusCode, b, x402.ReasonNonceUsed)
	}
	if e.settler.verifies.Load() != v || e.settler.settles.Load() != s {
		e.t.Fatal("replay reached the settlement backend")
	}
}

// TestPaidPath_Settled: a valid payment is served and settled once, in
// both modes; the payer gets the settlement and the ledger has the call
// (billed, with its payment) and the x402_settlement txn.
func TestPaidPath_Settled(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			e := newPaidEnv(t, &fakeSettler{}, nil)
			p := e.sign(tool, false)
			resp, b := e.callPaid(tool, "", p.hdr)
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"path":"/`+tool+`"`) {
				t.Fatalf("got %d %s, want 200 from the upstream", resp.StatusCode, b)
			}
			if got := resp.Header.Get("X-Cost-Usd"); got != "0.010" {
				t.Fatalf("X-Cost-Usd %q, want 0.010", got)
			}
			wantVerifies := int64(1) // after_upstream confirms before the tool runs
			if tool == "before" {
				wantVerifies = 0 // the settlement itself confirms an EOA payment
			}
			if v, s := e.settler.verifies.Load(), e.settler.settles.Load(); v != wantVerifies || s != 1 {
				t.Fatalf("backend: %d verifications, %d settlements, want %d and 1", v, s, wantVerifies)
			}
			tx := "0x" + hex.EncodeToString(p.auth.Nonce[:]) // the fake's transaction hash
			sr := settlement(t, resp, "PAYMENT-RESPONSE")
			want := x402.SettleResponse{Success: true, Payer: e.payer.Address.Hex(), Transaction: tx, Network: "eip155:84532"}
			if sr != want {
				t.Fatalf("PAYMENT-RESPONSE %+v, want %+v", sr, want)
			}
			if resp.Header.Get("X-PAYMENT-RESPONSE") != "" {
				t.Fatal("v2 payment answered with X-PAYMENT-RESPONSE too")
			}

			l := ledgerOf(e.records(e.principal))
			if len(l["call"]) != 1 || len(l["x402_settlement"]) != 1 {
				t.Fatalf("ledger %+v, want one call and one x402_settlement", l)
			}
			c := l["call"][0]
			if c.Outcome != "allowed" || c.Reason != "" || c.Cost != paidPrice || c.Tool != tool || c.Tier != "unknown_wallet" {
				t.Fatalf("call record %+v: want allowed, cost %d, tier unknown_wallet", c, paidPrice)
			}
			wantPay := ledger.Payment{Version: 2, Scheme: "exact", Network: "eip155:84532", Payer: e.payer.Address.Hex(),
				Amount: paidPrice, Nonce: tx}
			if c.Payment == nil || *c.Payment != wantPay {
				t.Fatalf("call payment %+v, want %+v", c.Payment, wantPay)
			}
			s := l["x402_settlement"][0]
			if s.Amount != paidPrice || s.Payer != e.payer.Address.Hex() || s.Network != "eip155:84532" ||
				s.TxHash != tx || s.Tool != tool || s.RequestID != c.RequestID {
				t.Fatalf("settlement txn %+v: want amount %d, payer, network, tx %s, tool, the call's request id", s, paidPrice, tx)
			}
			if st := e.status("wallet=" + e.payer.Address.Hex()); st["spend_today_usd"] != 0.01 {
				t.Fatalf("spend_today_usd %v, want 0.01", st["spend_today_usd"])
			}
			e.wantNonceUsed(tool, p.hdr)
			e.wantNonceUsed(tool, respell(t, p.hdr))
		})
	}
}

// TestPaidPath_VerifyInvalid: a payment the backend refuses gets 402 with
// the backend's reason and is not settled; its authorization is released,
// so the payer may send it again (here, once the backend accepts it).
func TestPaidPath_VerifyInvalid(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			var valid atomic.Bool
			settler := &fakeSettler{VerifyFn: func(_ context.Context, p *x402.Payment, _ *x402.Offer) (x402.VerifyResult, error) {
				if valid.Load() {
					return x402.VerifyResult{Valid: true, Payer: p.Authorization.From.Hex()}, nil
				}
				return x402.VerifyResult{Reason: x402.ReasonInsufficientFunds, Payer: p.Authorization.From.Hex()}, nil
			}}
			e := newPaidEnv(t, settler, nil)
			// before_upstream verifies remotely only what it cannot check
			// itself: a smart wallet's signature.
			p := e.sign(tool, tool == "before")
			resp, b := e.callPaid(tool, "", p.hdr)
			if resp.StatusCode != 402 || paymentReason(t, resp.Header.Get("PAYMENT-REQUIRED")) != x402.ReasonInsufficientFunds {
				t.Fatalf("got %d %s, want 402 %s", resp.StatusCode, b, x402.ReasonInsufficientFunds)
			}
			if resp.Header.Get("PAYMENT-RESPONSE") != "" || e.settler.settles.Load() != 0 || e.up.hits.Load() != 0 {
				t.Fatalf("refused payment: %d settlements, %d upstream calls, PAYMENT-RESPONSE %q; want none",
					e.settler.settles.Load(), e.up.hits.Load(), resp.Header.Get("PAYMENT-RESPONSE"))
			}
			e.wantNotBilled("payment_invalid", x402.ReasonInsufficientFunds)

			valid.Store(true)
			resp, b = e.callPaid(tool, "", respell(t, p.hdr))
			if resp.StatusCode != 200 || e.settler.settles.Load() != 1 {
				t.Fatalf("same authorization once valid: got %d %s with %d settlements, want 200 and 1", resp.StatusCode, b, e.settler.settles.Load())
			}
		})
	}
}

// TestPaidPath_VerifyError: a backend that cannot answer /verify gets the
// payer a 503 and charges nothing; the authorization stays usable.
func TestPaidPath_VerifyError(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			var down atomic.Bool
			down.Store(true)
			settler := &fakeSettler{VerifyFn: func(_ context.Context, p *x402.Payment, _ *x402.Offer) (x402.VerifyResult, error) {
				if down.Load() {
					return x402.VerifyResult{}, errors.New("dial tcp: connection refused (secret detail)")
				}
				return x402.VerifyResult{Valid: true, Payer: p.Authorization.From.Hex()}, nil
			}}
			e := newPaidEnv(t, settler, nil)
			p := e.sign(tool, tool == "before")
			resp, b := e.callPaid(tool, "", p.hdr)
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" {
				t.Fatalf("got %d Retry-After %q %s, want 503, 5", resp.StatusCode, resp.Header.Get("Retry-After"), b)
			}
			wantJSON(t, b, `{"error":"Payment verification unavailable; nothing was charged","retry":"true"}`)
			if e.settler.settles.Load() != 0 || e.up.hits.Load() != 0 {
				t.Fatalf("%d settlements, %d upstream calls, want none", e.settler.settles.Load(), e.up.hits.Load())
			}
			e.wantNotBilled("payment_unavailable", "verification_unavailable")

			down.Store(false) // an error is not kept: the same header is verified again
			if resp, b := e.callPaid(tool, "", p.hdr); resp.StatusCode != 200 {
				t.Fatalf("backend back: got %d %s, want 200", resp.StatusCode, b)
			}
			if v := e.settler.verifies.Load(); v != 2 {
				t.Fatalf("verifications %d, want 2", v)
			}
		})
	}
}

// TestPaidPath_SettleRefused: a settlement refused by the backend gets 402
// with PAYMENT-RESPONSE success:false and its reason; in after_upstream
// mode the tool ran but its answer is withheld. Nothing is billed and the
// authorization is released.
func TestPaidPath_SettleRefused(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			var refuse atomic.Bool
			refuse.Store(true)
			settler := &fakeSettler{}
			settler.SettleFn = func(_ context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
				if refuse.Load() {
					return x402.SettleResult{Reason: x402.ReasonTransferFailed, Message: "revoked",
						Payer: p.Authorization.From.Hex(), Network: o.Network(p.Version)}, nil
				}
				return x402.SettleResult{Success: true, Transaction: "0xabc", Network: o.Network(p.Version), Payer: p.Authorization.From.Hex()}, nil
			}
			e := newPaidEnv(t, settler, nil)
			p := e.sign(tool, false)
			resp, b := e.callPaid(tool, "", p.hdr)
			if resp.StatusCode != 402 || paymentReason(t, resp.Header.Get("PAYMENT-REQUIRED")) != x402.ReasonTransferFailed {
				t.Fatalf("got %d %s, want 402 %s", resp.StatusCode, b, x402.ReasonTransferFailed)
			}
			if strings.Contains(string(b), `"echo"`) {
				t.Fatalf("body %s: the upstream's answer was released unpaid", b)
			}
			sr := settlement(t, resp, "PAYMENT-RESPONSE")
			if sr.Success || sr.ErrorReason != x402.ReasonTransferFailed || sr.Network != "eip155:84532" {
				t.Fatalf("PAYMENT-RESPONSE %+v, want success:false %s on eip155:84532", sr, x402.ReasonTransferFailed)
			}
			wantHits := int64(1) // after_upstream: the tool ran, then settlement failed
			if tool == "before" {
				wantHits = 0
			}
			if got := e.up.hits.Load(); got != wantHits {
				t.Fatalf("upstream calls %d, want %d", got, wantHits)
			}
			e.wantNotBilled("settle_failed", x402.ReasonTransferFailed)

			refuse.Store(false)
			if resp, b := e.callPaid(tool, "", p.hdr); resp.StatusCode != 200 || !settlement(t, resp, "PAYMENT-RESPONSE").Success {
				t.Fatalf("same payment again: got %d %s, want 200 settled", resp.StatusCode, b)
			}
		})
	}
}

// TestPaidPath_SettleError: a settlement that failed before anything was
// sent gets 503 and charges nothing; the authorization is released.
func TestPaidPath_SettleError(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			var down atomic.Bool
			down.Store(true)
			settler := &fakeSettler{}
			settler.SettleFn = func(_ context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
				if down.Load() {
					return x402.SettleResult{}, errors.New("dial tcp: connection refused")
				}
				return x402.SettleResult{Success: true, Transaction: "0xabc", Network: o.Network(p.Version), Payer: p.Authorization.From.Hex()}, nil
			}
			e := newPaidEnv(t, settler, nil)
			p := e.sign(tool, false)
			resp, b := e.callPaid(tool, "", p.hdr)
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" {
				t.Fatalf("got %d Retry-After %q %s, want 503, 5", resp.StatusCode, resp.Header.Get("Retry-After"), b)
			}
			wantJSON(t, b, `{"error":"Payment settlement unavailable; nothing was charged","retry":"true"}`)
			if resp.Header.Get("PAYMENT-RESPONSE") != "" {
				t.Fatalf("PAYMENT-RESPONSE %q for a settlement never sent", resp.Header.Get("PAYMENT-RESPONSE"))
			}
			e.wantNotBilled("payment_unavailable", "settlement_unavailable")

			down.Store(false)
			if resp, b := e.callPaid(tool, "", p.hdr); resp.StatusCode != 200 {
				t.Fatalf("backend back: got %d %s, want 200", resp.StatusCode, b)
			}
		})
	}
}

// pendingOutcomes are the ways a settlement's fate stays unknown: the
// backend timed out after the request may have reached it, it said the
// outcome is unknown, or it broadcast a transaction not yet mined.
var pendingOutcomes = []struct {
	name   string
	settle func(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error)
	tx     string // the transaction hash the payer and the reconciler see
}{
	{name: "Timeout", settle: func(ctx context.Context, _ *x402.Payment, _ *x402.Offer) (x402.SettleResult, error) {
		<-ctx.Done() // SettleTimeout
		return x402.SettleResult{}, fmt.Errorf("%w: settle: %w", x402.ErrOutcomeUnknown, ctx.Err())
	}},
	{name: "ErrOutcomeUnknown", settle: func(context.Context, *x402.Payment, *x402.Offer) (x402.SettleResult, error) {
		return x402.SettleResult{}, fmt.Errorf("%w: settle: HTTP 502", x402.ErrOutcomeUnknown)
	}},
	{name: "Pending", tx: "0x" + strings.Repeat("77", 32), settle: func(_ context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
		return x402.SettleResult{Pending: true, Reason: x402.ReasonSettlementPending, Transaction: "0x" + strings.Repeat("77", 32),
			Payer: p.Authorization.From.Hex(), Network: o.Network(p.Version)}, nil
	}},
}

// TestPaidPath_OutcomeUnknown: a settlement whose fate is unknown is
// treated as paid: the call is served and billed with settlement_pending,
// the payer gets PAYMENT-RESPONSE success:false settlement_pending, and
// the authorization stays locked. Without a Reconciler nothing more is
// recorded.
func TestPaidPath_OutcomeUnknown(t *testing.T) {
	for _, po := range pendingOutcomes {
		for _, tool := range settleModes {
			t.Run(po.name+"/"+tool, func(t *testing.T) {
				e := newPaidEnv(t, &fakeSettler{SettleFn: po.settle}, func(o *gateway.Options) {
					o.X402.SettleTimeout = 50 * time.Millisecond
				})
				p := e.sign(tool, false)
				resp, b := e.callPaid(tool, "", p.hdr)
				if resp.StatusCode != 200 || !strings.Contains(string(b), `"path":"/`+tool+`"`) {
					t.Fatalf("got %d %s, want 200 from the upstream", resp.StatusCode, b)
				}
				sr := settlement(t, resp, "PAYMENT-RESPONSE")
				want := x402.SettleResponse{ErrorReason: x402.ReasonSettlementPending, Payer: e.payer.Address.Hex(),
					Transaction: po.tx, Network: "eip155:84532"}
				if sr != want {
					t.Fatalf("PAYMENT-RESPONSE %+v, want %+v", sr, want)
				}
				c := e.lastCall()
				if c.Outcome != "allowed" || c.Reason != "settlement_pending" || c.Cost != paidPrice {
					t.Fatalf("call record %+v: want allowed, settlement_pending, cost %d", c, paidPrice)
				}
				if s := ledgerOf(e.records(e.principal))["x402_settlement"]; len(s) != 0 {
					t.Fatalf("x402_settlement %+v before the outcome is known", s)
				}
				e.wantReplayed(tool, p.hdr)
				e.wantReplayed(tool, respell(t, p.hdr))
			})
		}
	}
}

// TestPaidPath_Reconcile: a settlement left pending is followed to its
// outcome by the Reconciler and recorded: x402_settlement when the
// authorization was used, x402_settlement_failed when our transaction
// reverted or the authorization expired unused. The authorization stays
// locked throughout.
func TestPaidPath_Reconcile(t *testing.T) {
	unknown := pendingOutcomes[1].settle
	pending := pendingOutcomes[2]
	newEnv := func(t *testing.T, settle func(context.Context, *x402.Payment, *x402.Offer) (x402.SettleResult, error),
		rc *fakeReconciler, clock *testClock) *paidEnv {
		return newPaidEnv(t, &fakeSettler{SettleFn: settle}, func(o *gateway.Options) {
			o.X402.Reconciler = rc
			o.X402.ReconcileEvery = 10 * time.Millisecond
			if clock != nil {
				o.Now = clock.now
			}
		})
	}
	serve := func(e *paidEnv, tool string) (signed, ledger.Record) {
		e.t.Helper()
		p := e.sign(tool, false)
		if resp, b := e.callPaid(tool, "", p.hdr); resp.StatusCode != 200 {
			e.t.Fatalf("got %d %s, want 200", resp.StatusCode, b)
		}
		return p, e.lastCall()
	}

	t.Run("Success", func(t *testing.T) {
		for _, tool := range settleModes {
			t.Run(tool, func(t *testing.T) {
				mined := "0x" + strings.Repeat("ab", 32)
				rc := &fakeReconciler{}
				rc.ReconcileFn = func(_ context.Context, _ x402.NonceKey, tx string) (x402.SettleResult, error) {
					switch rc.calls.Load() {
					case 1:
						return x402.SettleResult{}, errors.New("rpc: connection reset") // tried again
					case 2:
						return x402.SettleResult{Pending: true, Transaction: tx}, nil
					}
					return x402.SettleResult{Success: true, Transaction: mined}, nil
				}
				e := newEnv(t, unknown, rc, nil)
				p, call := serve(e, tool)
				s := e.waitTxn("x402_settlement")
				if s.TxHash != mined || s.Amount != paidPrice || s.Payer != e.payer.Address.Hex() ||
					s.Network != "eip155:84532" || s.RequestID != call.RequestID || s.Reason != "" {
					t.Fatalf("reconciled txn %+v: want tx %s, amount %d, payer, network, the call's request id", s, mined, paidPrice)
				}
				if rc.calls.Load() != 3 {
					t.Fatalf("reconciler calls %d, want 3 (error, pending, success)", rc.calls.Load())
				}
				if k := rc.lastK.Load(); k.NonceHex() != "0x"+hex.EncodeToString(p.auth.Nonce[:]) || *rc.lastTx.Load() != "" {
					t.Fatalf("reconciled nonce %s tx %q, want the payment's nonce and no tx (never broadcast by us)", k.NonceHex(), *rc.lastTx.Load())
				}
				if f := ledgerOf(e.records(e.principal))["x402_settlement_failed"]; len(f) != 0 {
					t.Fatalf("x402_settlement_failed %+v", f)
				}
				e.wantReplayed(tool, p.hdr)
			})
		}
	})
	t.Run("Reverted", func(t *testing.T) {
		for _, tool := range settleModes {
			t.Run(tool, func(t *testing.T) {
				rc := &fakeReconciler{ReconcileFn: func(_ context.Context, _ x402.NonceKey, tx string) (x402.SettleResult, error) {
					return x402.SettleResult{Reason: x402.ReasonTransactionFailed, Transaction: tx}, nil
				}}
				e := newEnv(t, pending.settle, rc, nil)
				p, call := serve(e, tool)
				f := e.waitTxn("x402_settlement_failed")
				if f.TxHash != pending.tx || f.Reason != x402.ReasonTransactionFailed || f.Amount != paidPrice ||
					f.Payer != e.payer.Address.Hex() || f.RequestID != call.RequestID {
					t.Fatalf("failed txn %+v: want tx %s, reason %s, amount %d, payer, request id", f, pending.tx, x402.ReasonTransactionFailed, paidPrice)
				}
				if got := *rc.lastTx.Load(); got != pending.tx {
					t.Fatalf("reconciled tx %q, want the broadcast %s", got, pending.tx)
				}
				if s := ledgerOf(e.records(e.principal))["x402_settlement"]; len(s) != 0 {
					t.Fatalf("x402_settlement %+v for a reverted transaction", s)
				}
				e.wantReplayed(tool, p.hdr)
			})
		}
	})
	t.Run("Expired", func(t *testing.T) {
		clock := newTestClock()
		rc := &fakeReconciler{} // always still pending
		e := newEnv(t, unknown, rc, clock)
		p, call := serve(e, "after")
		waitFor(t, "two reconciliation attempts", func() bool { return rc.calls.Load() >= 2 })
		if f := ledgerOf(e.records(e.principal))["x402_settlement_failed"]; len(f) != 0 {
			t.Fatalf("recorded failed while still within validBefore+2 min: %+v", f)
		}
		validBefore := time.Unix(p.auth.ValidBefore, 0)
		clock.advance(validBefore.Add(2*time.Minute + time.Second).Sub(clock.now()))
		f := e.waitTxn("x402_settlement_failed")
		if f.Reason != x402.ReasonValidBefore || f.TxHash != "" || f.Amount != paidPrice || f.RequestID != call.RequestID {
			t.Fatalf("expired txn %+v: want reason %s, no tx, amount %d, request id", f, x402.ReasonValidBefore, paidPrice)
		}
		if !f.At.Equal(clock.now()) {
			t.Fatalf("expired txn at %v, want the gateway clock's %v", f.At, clock.now())
		}
	})
}

// TestPaidPath_UpstreamFailed: an upstream answer ≥ 400 is passed on. In
// after_upstream mode nothing is settled and the payment stays usable; in
// before_upstream mode the payment was settled ahead, so the call is not
// billed and the amount is recorded as owed.
func TestPaidPath_UpstreamFailed(t *testing.T) {
	t.Run("after", func(t *testing.T) {
		e := newPaidEnv(t, &fakeSettler{}, nil)
		p := e.sign("after", false)
		resp, b := e.callPaid("after", "?fail=1", p.hdr)
		if resp.StatusCode != 500 || string(b) != `{"error":"upstream broke"}` {
			t.Fatalf("got %d %s, want the upstream's 500", resp.StatusCode, b)
		}
		if resp.Header.Get("PAYMENT-RESPONSE") != "" || e.settler.settles.Load() != 0 || resp.Header.Get("X-Cost-Usd") != "0.000" {
			t.Fatalf("PAYMENT-RESPONSE %q, %d settlements, cost %s: want none, 0, 0.000",
				resp.Header.Get("PAYMENT-RESPONSE"), e.settler.settles.Load(), resp.Header.Get("X-Cost-Usd"))
		}
		e.wantNotBilled("allowed", "upstream_status_not_billed")
		if c := e.lastCall(); c.UpstreamStatus != 500 || c.Payment == nil {
			t.Fatalf("call record %+v: want upstream_status 500 with the payment", c)
		}
		if resp, b := e.callPaid("after", "", p.hdr); resp.StatusCode != 200 || e.settler.settles.Load() != 1 {
			t.Fatalf("same payment again: got %d %s, %d settlements, want 200 and 1", resp.StatusCode, b, e.settler.settles.Load())
		}
	})
	t.Run("before", func(t *testing.T) {
		e := newPaidEnv(t, &fakeSettler{}, nil)
		p := e.sign("before", false)
		resp, b := e.callPaid("before", "?fail=1", p.hdr)
		if resp.StatusCode != 500 || string(b) != `{"error":"upstream broke"}` || resp.Header.Get("X-Cost-Usd") != "0.000" {
			t.Fatalf("got %d %s cost %s, want the upstream's 500 unbilled", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
		}
		if sr := settlement(t, resp, "PAYMENT-RESPONSE"); !sr.Success {
			t.Fatalf("PAYMENT-RESPONSE %+v, want success (settled ahead)", sr)
		}
		l := ledgerOf(e.records(e.principal))
		c := l["call"][0]
		if c.Cost != 0 || c.Outcome != "allowed" || c.Reason != "upstream_status_not_billed" {
			t.Fatalf("call record %+v: want allowed, upstream_status_not_billed, cost 0", c)
		}
		if len(l["x402_settlement"]) != 1 || len(l["x402_owed"]) != 1 {
			t.Fatalf("ledger %+v, want one x402_settlement and one x402_owed", l)
		}
		if o := l["x402_owed"][0]; o.Amount != paidPrice || o.BalanceAfter == nil || *o.BalanceAfter != paidPrice {
			t.Fatalf("owed txn %+v, want amount and balance_after %d", o, paidPrice)
		}
		if st := e.status("wallet=" + e.payer.Address.Hex()); st["owed_usd"] != 0.01 || st["spend_today_usd"] != 0.0 {
			t.Fatalf("status owed_usd %v spend_today_usd %v, want 0.01 and 0", st["owed_usd"], st["spend_today_usd"])
		}
		e.wantNonceUsed("before", p.hdr)
	})
}

// TestPaidPath_V1: a legacy x402-fetch payment (X-PAYMENT, base-sepolia)
// is served and answered with X-PAYMENT-RESPONSE, in both modes, and
// recorded as version 1 on base-sepolia.
func TestPaidPath_V1(t *testing.T) {
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			e := newPaidEnv(t, &fakeSettler{}, nil)
			auth := chain.NewAuthorization(e.payer.Address, chain.PayTo.Address, paidPrice, 5*time.Minute)
			hdr := e.payV1(auth)
			resp, b := e.do("POST", "/tools/"+tool, `{}`, "X-PAYMENT", hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, b)
			}
			if resp.Header.Get("PAYMENT-RESPONSE") != "" {
				t.Fatal("v1 payment answered with PAYMENT-RESPONSE")
			}
			tx := "0x" + hex.EncodeToString(auth.Nonce[:])
			sr := settlement(t, resp, "X-PAYMENT-RESPONSE")
			if want := (x402.SettleResponse{Success: true, Payer: e.payer.Address.Hex(), Transaction: tx, Network: "base-sepolia"}); sr != want {
				t.Fatalf("X-PAYMENT-RESPONSE %+v, want %+v", sr, want)
			}
			l := ledgerOf(e.records(e.principal))
			if c := l["call"]; len(c) != 1 || c[0].Payment == nil || c[0].Payment.Version != 1 || c[0].Payment.Network != "base-sepolia" || c[0].Cost != paidPrice {
				t.Fatalf("call records %+v, want one billed v1 payment on base-sepolia", c)
			}
			if s := l["x402_settlement"]; len(s) != 1 || s[0].Network != "base-sepolia" || s[0].TxHash != tx {
				t.Fatalf("settlement txns %+v, want one on base-sepolia with %s", s, tx)
			}
			if resp, _ := e.do("POST", "/tools/"+tool, `{}`, "X-PAYMENT", hdr); resp.StatusCode != 402 {
				t.Fatalf("v1 replay: got %d, want 402", resp.StatusCode)
			}
		})
	}
}
