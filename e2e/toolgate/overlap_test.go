package toolgate_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
)

// TestGateway_VerifyOverlap: a verify_overlap tool through the real binary,
// the reference facilitator and @x402/fetch on anvil: a funded payer's
// call is verified while the upstream runs, then settled and served; an
// unfunded payer's payment is refused by the facilitator's /verify after
// the upstream ran: 402 with the reason, the upstream's answer withheld,
// nothing settled, the authorization unused on chain.
func TestGateway_VerifyOverlap(t *testing.T) {
	t.Parallel()
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, priceExtract)
	fac := chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
	up := startUpstream(t)
	tools := fmt.Sprintf(`{"tools":[{"id":"extract/structured","rate_class":"light","price_usd":"0.01","upstream":"%s/extract",
  "timeout_ms":5000,"verify_overlap":true,"description":"Extract structured JSON from text"}]}`, up.url)
	g := startGatewayCatalog(t, tools, "--x402-facilitator", fac.URL())
	url := g.url + "/tools/extract/structured"
	payTo0 := chain.BalanceOf(t, a, chain.PayTo.Address)

	res := chain.PayV2(t, url, chain.PayOptions{RPC: a.RPC(), JSON: extractInput})
	if s, ok := res[0].Settlement(); res[0].Status != 200 || !ok || !s.Success || !strings.Contains(res[0].Body, `"path":"/extract"`) {
		t.Fatalf("funded payer: got %d %s %+v, want 200 served and settled", res[0].Status, res[0].Body, s)
	}
	if got := chain.BalanceOf(t, a, chain.PayTo.Address) - payTo0; got != priceExtract {
		t.Errorf("payTo received %d, want %d", got, priceExtract)
	}

	poor := chain.NewAccount(t)
	p := g.validV2(t, poor, "extract/structured", priceExtract)
	hits, settles := up.Hits("/extract"), fac.Stats(t).Settle
	r := do(t, "POST", url, []byte(extractInput), p.Headers())
	var pr paymentRequired
	decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
	if r.Status != 402 || !strings.Contains(pr.Error, "insufficient") || strings.Contains(string(r.Body), `"path":"/extract"`) {
		t.Fatalf("unfunded payer: got %d %s (error %q), want 402 with the balance reason, without the upstream's answer", r.Status, r.Body, pr.Error)
	}
	if got := up.Hits("/extract") - hits; got != 1 {
		t.Errorf("upstream calls for the refused payment: got %d, want 1 (it ran during verification)", got)
	}
	if got := fac.Stats(t).Settle - settles; got != 0 {
		t.Errorf("settlements for the refused payment: got %d, want 0", got)
	}
	if chain.AuthorizationState(t, a, poor.Address, p.Auth.Nonce) {
		t.Error("authorizationState of the refused payment: got used, want unused")
	}
	if got := chain.BalanceOf(t, a, chain.PayTo.Address) - payTo0; got != priceExtract {
		t.Errorf("payTo received %d in all, want %d (one paid call)", got, priceExtract)
	}
}
