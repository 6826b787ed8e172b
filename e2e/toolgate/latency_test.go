package toolgate_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestPaidLatency measures paid-call latency as @x402/fetch sees it (402
// round trip, signing, paid retry, verification, upstream, settlement):
// 200 sequential calls against toolgate and against the reference
// @x402/express server, with the same facilitator, chain, payer and price
// in the same run. It runs only with TOOLGATE_BENCH_PAID=1 (about a
// minute) and logs p50/p99 of both and their ratio.
func TestPaidLatency(t *testing.T) {
	if os.Getenv("TOOLGATE_BENCH_PAID") == "" {
		t.Skip("set TOOLGATE_BENCH_PAID=1 to measure paid-call latency")
	}
	const n = 200
	e := newEnv(t, viaFacilitator)
	chain.Mint(t, e.a, chain.Payer.Address, 3*n*priceExtract)
	// The second gateway verifies over the RPC (--x402-verify rpc) and
	// settles through the same facilitator.
	rpcGW := startGateway(t, e.up.url, "--x402-facilitator", e.fac.URL(), "--x402-rpc", e.a.RPC(), "--x402-verify", "rpc")
	// The default unknown_wallet tier (120 light calls a minute, $2 a day)
	// would stop the run: lift both for the payer.
	for _, g := range []*gateway{e.gw, rpcGW} {
		if r := g.admin(t, "PUT", "/wallets/"+chain.Payer.Address.Hex()+"/policy", map[string]any{
			"rate_class_quota": map[string]int{"light": 100000}, "daily_spend_cap_usd": 1000,
		}); r.Status/100 != 2 {
			t.Fatalf("PUT wallet policy: got %d: %s", r.Status, r.Body)
		}
	}
	ref := chain.StartRefServer(t, e.fac, chain.PayTo.Address, priceExtract)

	run := func(name, url string) (p50, p99 time.Duration) {
		t.Helper()
		res := chain.PayV2(t, url, chain.PayOptions{RPC: e.a.RPC(), JSON: extractInput, Count: n})
		ms := make([]float64, 0, n)
		for i, r := range res {
			if r.Status != 200 || r.Error != "" {
				t.Fatalf("%s call %d: got %d %q: %s", name, i, r.Status, r.Error, r.Body)
			}
			if s, ok := r.Settlement(); !ok || !s.Success {
				t.Fatalf("%s call %d: not settled: %+v", name, i, s)
			}
			ms = append(ms, r.Ms)
		}
		slices.Sort(ms)
		q := func(p float64) time.Duration {
			return time.Duration(ms[int(p*float64(len(ms)-1))] * float64(time.Millisecond))
		}
		return q(0.50), q(0.99)
	}
	payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
	// Warm both (JIT, connections), then measure in the same order.
	refP50, refP99 := run("ref", ref.URL())
	gwP50, gwP99 := run("toolgate", e.gw.url+"/tools/extract/structured")
	rpcP50, rpcP99 := run("toolgate-rpc", rpcGW.url+"/tools/extract/structured")
	if got, want := chain.BalanceOf(t, e.a, chain.PayTo.Address)-payTo0, money.Micros(3*n*priceExtract); got != want {
		t.Errorf("payTo balance rose by %d, want %d", got, want)
	}
	t.Logf("paid calls, %d sequential, @x402/fetch 2.27.0, reference facilitator, anvil automine:", n)
	t.Logf("  @x402/express reference: p50 %v  p99 %v", refP50.Round(10*time.Microsecond), refP99.Round(10*time.Microsecond))
	t.Logf("  toolgate:                p50 %v  p99 %v", gwP50.Round(10*time.Microsecond), gwP99.Round(10*time.Microsecond))
	t.Logf("  ratio toolgate/reference: p50 %.2f  p99 %.2f", float64(gwP50)/float64(refP50), float64(gwP99)/float64(refP99))
	t.Logf("  toolgate --x402-verify rpc: p50 %v  p99 %v", rpcP50.Round(10*time.Microsecond), rpcP99.Round(10*time.Microsecond))
	t.Logf("  ratio toolgate-rpc/reference: p50 %.2f  p99 %.2f", float64(rpcP50)/float64(refP50), float64(rpcP99)/float64(refP99))

	// Where toolgate's time goes: its own record of each paid call (from
	// the paid retry's arrival to the answer, settlement included) and the
	// upstream's part of it; the rest of the client's time is its 402
	// round trip, signing and the HTTP exchanges.
	for _, gw := range []struct {
		name string
		g    *gateway
	}{{"toolgate", e.gw}, {"toolgate-rpc", rpcGW}} {
		r := gw.g.admin(t, "GET", "/audit?tool=extract/structured&outcome=allowed&type=call&limit=10000", nil)
		var inGW, upstream []float64
		for _, line := range strings.Split(strings.TrimSpace(string(r.Body)), "\n") {
			var rec struct {
				LatencyUS         int64 `json:"latency_us"`
				UpstreamLatencyUS int64 `json:"upstream_latency_us"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.LatencyUS > 0 {
				inGW = append(inGW, float64(rec.LatencyUS)/1000)
				upstream = append(upstream, float64(rec.UpstreamLatencyUS)/1000)
			}
		}
		if len(inGW) > 0 {
			slices.Sort(inGW)
			slices.Sort(upstream)
			t.Logf("  inside %s (paid retry → answer, incl. verify + settle): p50 %.2fms p99 %.2fms; upstream p50 %.2fms; over %d calls",
				gw.name, inGW[len(inGW)/2], inGW[int(0.99*float64(len(inGW)-1))], upstream[len(upstream)/2], len(inGW))
		}
	}
}
