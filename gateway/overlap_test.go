package gateway_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/x402"
)

// TestVerifyOverlap: a verify_overlap tool's payment is verified while its
// upstream runs (the verification sees the upstream's request arrive; a
// plain after_upstream tool's verification finishes before it); a good
// payment is then settled and served as usual; a payment found invalid,
// or a backend that cannot verify, answers as without the overlap (402
// with the reason, 503), with the upstream's answer discarded, nothing
// settled or billed, and the authorization unspent (the same payment is
// answered its known refusal again without running the upstream).
func TestVerifyOverlap(t *testing.T) {
	up := newUpstream(t)
	up.delay.Store(int64(200 * time.Millisecond))
	var (
		verdict     x402.VerifyResult
		verifyErr   error
		sawUpstream bool
	)
	settler := &fakeSettler{}
	settler.VerifyFn = func(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.VerifyResult, error) {
		before := up.hits.Load()
		sawUpstream = false
		if o.ToolID() == "overlap" {
			// The upstream's request arrives while we verify.
			deadline := time.Now().Add(2 * time.Second)
			for up.hits.Load() == before && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		sawUpstream = up.hits.Load() != before
		return verdict, verifyErr
	}
	cat := `{"tools":[
 {"id":"seq","rate_class":"light","price_usd":"0.01","upstream":"` + up.srv.URL + `/seq"},
 {"id":"overlap","rate_class":"light","price_usd":"0.01","verify_overlap":true,"upstream":"` + up.srv.URL + `/overlap"}]}`
	h := newHarnessWith(t, up, cat, withX402(t, settler))
	payer := chain.Payer
	valid := x402.VerifyResult{Valid: true, Payer: payer.Address.Hex()}
	call := func(tool, pay string) (int, string, string) {
		t.Helper()
		resp, b := h.do("POST", "/tools/"+tool, `{"q":1}`, "PAYMENT-SIGNATURE", pay)
		return resp.StatusCode, string(b), resp.Header.Get("PAYMENT-REQUIRED")
	}

	t.Run("Overlapped", func(t *testing.T) {
		verdict, verifyErr = valid, nil
		if code, b, _ := call("seq", h.pay(payer, "seq", paidPrice)); code != 200 || sawUpstream {
			t.Fatalf("plain after_upstream: got %d %s, upstream during verification %t; want 200, verified first", code, b, sawUpstream)
		}
		settles := settler.settles.Load()
		if code, b, _ := call("overlap", h.pay(payer, "overlap", paidPrice)); code != 200 || !sawUpstream || !strings.Contains(b, `"path":"/overlap"`) {
			t.Fatalf("verify_overlap: got %d %s, upstream during verification %t; want 200 with the upstream's answer, overlapped", code, b, sawUpstream)
		}
		if got := settler.settles.Load() - settles; got != 1 {
			t.Errorf("settlements: got %d, want 1", got)
		}
	})

	t.Run("InvalidAfterTheCallRan", func(t *testing.T) {
		verdict, verifyErr = x402.VerifyResult{Reason: x402.ReasonInsufficientFunds, Payer: payer.Address.Hex()}, nil
		pay := h.pay(payer, "overlap", paidPrice)
		hits, settles := up.hits.Load(), settler.settles.Load()
		code, b, pr := call("overlap", pay)
		raw, _ := base64.StdEncoding.DecodeString(pr)
		if code != 402 || strings.Contains(b, `"path":"/overlap"`) || !strings.Contains(string(raw), x402.ReasonInsufficientFunds) {
			t.Fatalf("refused payment: got %d %s (PAYMENT-REQUIRED %s), want 402 with the reason and without the upstream's answer", code, b, raw)
		}
		if up.hits.Load() != hits+1 || settler.settles.Load() != settles {
			t.Errorf("upstream calls +%d, settlements +%d; want the call run once, nothing settled",
				up.hits.Load()-hits, settler.settles.Load()-settles)
		}
		recs := h.records("wallet:" + payer.Address.Hex())
		last := recs[len(recs)-1]
		if last.Outcome != "payment_invalid" || last.Cost != 0 || last.UpstreamStatus != 200 {
			t.Errorf("record: got %s cost %d upstream %d, want payment_invalid, 0, the upstream's 200", last.Outcome, last.Cost, last.UpstreamStatus)
		}
		// The authorization was not spent (the same payment is not a used
		// nonce), and its known refusal is answered before the call: the
		// upstream does not run again for it.
		hits = up.hits.Load()
		code, _, pr = call("overlap", pay)
		raw, _ = base64.StdEncoding.DecodeString(pr)
		if code != 402 || !strings.Contains(string(raw), x402.ReasonInsufficientFunds) || up.hits.Load() != hits {
			t.Errorf("the same payment again: got %d %s, upstream calls +%d; want 402 with its reason, no call", code, raw, up.hits.Load()-hits)
		}
	})

	t.Run("BackendDown", func(t *testing.T) {
		verdict, verifyErr = x402.VerifyResult{}, errors.New("facilitator down")
		hits, settles := up.hits.Load(), settler.settles.Load()
		if code, b, _ := call("overlap", h.pay(payer, "overlap", paidPrice)); code != 503 || strings.Contains(b, `"path":"/overlap"`) {
			t.Fatalf("backend down: got %d %s, want 503 without the upstream's answer", code, b)
		}
		if up.hits.Load() != hits+1 || settler.settles.Load() != settles {
			t.Errorf("upstream calls +%d, settlements +%d; want the call run once, nothing settled",
				up.hits.Load()-hits, settler.settles.Load()-settles)
		}
	})
}
