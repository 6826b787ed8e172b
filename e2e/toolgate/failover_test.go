package toolgate_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestGateway_FacilitatorFailover: two --x402-facilitator URLs, the first
// down. Paid calls by the real @x402/fetch client are served and settled
// through the second; the first is skipped while it backs off, and the
// metrics say so per facilitator.
func TestGateway_FacilitatorFailover(t *testing.T) {
	t.Parallel()
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, 5*money.PerUSD)
	fac := chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	up := startUpstream(t)
	g := startGateway(t, up.url, "--x402-facilitator", "http://"+dead, "--x402-facilitator", fac.URL())
	payTo0 := chain.BalanceOf(t, a, chain.PayTo.Address)

	res := chain.PayV2(t, g.url+"/tools/extract/structured", chain.PayOptions{RPC: a.RPC(), JSON: extractInput, Count: 3})
	for _, r := range res {
		s, ok := r.Settlement()
		if r.Status != 200 || !ok || !s.Success {
			t.Fatalf("call %d: got %d %q %s (settlement %+v), want 200 settled", r.I, r.Status, r.Error, r.Body, s)
		}
	}
	if got := chain.BalanceOf(t, a, chain.PayTo.Address) - payTo0; got != 3*priceExtract {
		t.Fatalf("payTo received %d, want %d", got, 3*priceExtract)
	}
	if st := fac.Stats(t); st.Settle != 3 {
		t.Fatalf("live facilitator settlements: %d, want 3", st.Settle)
	}
	m := string(g.admin(t, "GET", "/metrics", nil).Body)
	deadErr := metricValue(m, `toolgate_x402_facilitator_requests_total{facilitator="`+dead+`",op="verify",result="error"}`)
	deadSkipped := metricValue(m, `toolgate_x402_facilitator_requests_total{facilitator="`+dead+`",op="verify",result="skipped"}`) +
		metricValue(m, `toolgate_x402_facilitator_requests_total{facilitator="`+dead+`",op="settle",result="skipped"}`)
	liveHost := strings.TrimPrefix(fac.URL(), "http://")
	liveOK := metricValue(m, `toolgate_x402_facilitator_requests_total{facilitator="`+liveHost+`",op="settle",result="ok"}`)
	if deadErr < 1 || deadSkipped < 1 || liveOK != 3 {
		t.Fatalf("metrics: dead verify errors %v, dead skipped %v, live settle ok %v; want ≥1, ≥1, 3\n%s", deadErr, deadSkipped, liveOK, grepLines(m, "facilitator"))
	}
	if v := metricValue(m, `toolgate_x402_facilitator_up{facilitator="`+dead+`"}`); v != 0 {
		t.Fatalf("toolgate_x402_facilitator_up of the dead one: %v, want 0", v)
	}
}

// metricValue returns the value of the sample named exactly series, 0 if absent.
func metricValue(metrics, series string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			_, _ = fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestGateway_VerifyRPC: with --x402-verify rpc beside a facilitator, the
// gateway verifies payments itself over the RPC (balance,
// authorizationState, a simulated transfer) and only settles through the
// facilitator: a paid call by @x402/fetch is served with no /verify, and
// an unfunded payer is refused without reaching the facilitator or the tool.
func TestGateway_VerifyRPC(t *testing.T) {
	t.Parallel()
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, 5*money.PerUSD)
	fac := chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
	up := startUpstream(t)
	g := startGateway(t, up.url, "--x402-facilitator", fac.URL(), "--x402-rpc", a.RPC(), "--x402-verify", "rpc")

	r := chain.PayV2(t, g.url+"/tools/extract/structured", chain.PayOptions{RPC: a.RPC(), JSON: extractInput})[0]
	if s, ok := r.Settlement(); r.Status != 200 || !ok || !s.Success {
		t.Fatalf("paid call: got %d %q %s (settlement %+v), want 200 settled", r.Status, r.Error, r.Body, s)
	}
	if st := fac.Stats(t); st.Verify != 0 || st.Settle != 1 {
		t.Fatalf("facilitator: %d verifications, %d settlements; want 0 and 1", st.Verify, st.Settle)
	}
	poor := chain.NewAccount(t)
	p := g.validV2(t, poor, "extract/structured", priceExtract)
	r2 := do(t, "POST", g.url+"/tools/extract/structured", []byte(extractInput), p.Headers())
	var pr paymentRequired
	decodeB64JSON(t, "PAYMENT-REQUIRED", r2.Header.Get("Payment-Required"), &pr)
	if r2.Status != 402 || pr.Error != "invalid_exact_evm_insufficient_balance" {
		t.Fatalf("unfunded payer: got %d (error %q), want 402 invalid_exact_evm_insufficient_balance", r2.Status, pr.Error)
	}
	if st := fac.Stats(t); st.Verify != 0 || st.Settle != 1 || up.Hits("/extract") != 1 {
		t.Fatalf("after the refusal: facilitator %+v, upstream %d; want unchanged", st, up.Hits("/extract"))
	}
}
