package toolgate_test

import (
	"testing"

	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestCluster_OnePaymentThreeNodes: three toolgate nodes in cluster mode
// behind one public URL, on one Redis, one chain and one facilitator.
// The same payment sent concurrently to all three runs once: one 200,
// one upstream call, one settlement (payTo up by the price once), every
// other answer 402 nonce already used.
func TestCluster_OnePaymentThreeNodes(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, 5*money.PerUSD)
	fac := chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
	up := startUpstream(t)
	up.delay.Store(int64(100e6)) // keep the winner in flight (100 ms)
	const public = "http://toolgate.cluster.test"
	var nodes []*gateway
	for range 3 {
		nodes = append(nodes, startGateway(t, up.url, "--x402-facilitator", fac.URL(),
			"--cluster-redis", rs.URL(), "--public-url", public))
	}
	p := nodes[0].validV2(t, chain.Payer, "extract/structured", priceExtract)
	payTo0 := chain.BalanceOf(t, a, chain.PayTo.Address)

	const n = 60
	ok, replay := sendAtOnce(t, n, func(i int) string { return nodes[i%3].url + "/tools/extract/structured" }, p)
	if ok != 1 || replay != n-1 {
		t.Errorf("got %d × 200 and %d × 402 nonce used, want 1 and %d", ok, replay, n-1)
	}
	if got := up.Hits("/extract"); got != 1 {
		t.Errorf("upstream hits: got %d, want 1", got)
	}
	if got := chain.BalanceOf(t, a, chain.PayTo.Address) - payTo0; got != priceExtract {
		t.Errorf("payTo balance rose by %d, want %d (one settlement)", got, priceExtract)
	}
	if s := fac.Stats(t); s.Settle != 1 {
		t.Errorf("facilitator /settle calls: got %d, want 1", s.Settle)
	}
}
