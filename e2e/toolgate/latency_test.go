package toolgate_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestPaidLatency measures paid-call latency as @x402/fetch sees it (402
// round trip, signing, paid retry, verification, upstream, settlement):
// 200 sequential calls against toolgate (facilitator /verify, and
// --x402-verify rpc) and against the reference @x402/express server, with
// the same facilitator, chain, payer and price in the same run. Each server
// first gets warm-up calls (the facilitator's and the servers' JIT, the
// connections), then the measured calls go in rounds that rotate the order
// of the servers, so that a noisy stretch of the shared machine falls on
// all of them alike. It runs only with TOOLGATE_BENCH_PAID=1 (about a
// minute) and logs p50/p99 of each, their ratios, and where the
// milliseconds go: the client's phases, the facilitator's /verify and
// /settle with their node calls, and the gateway's own phases.
func TestPaidLatency(t *testing.T) {
	if os.Getenv("TOOLGATE_BENCH_PAID") == "" {
		t.Skip("set TOOLGATE_BENCH_PAID=1 to measure paid-call latency")
	}
	const (
		n      = 200 // measured calls per server
		rounds = 4
		warm   = 20
	)
	e := newEnv(t, viaFacilitator)
	chain.Mint(t, e.a, chain.Payer.Address, 3*(n+warm)*priceExtract)
	// Phase timings of every paid call in the gateways' debug log (and no
	// access log line per call, which the default warn level of the other
	// tests does not print either).
	phaseLog := []string{"--log-level", "debug", "--log-format", "json", "--access-log=false"}
	tg := startGateway(t, e.up.url, append([]string{"--x402-facilitator", e.fac.URL()}, phaseLog...)...)
	// The second gateway verifies over the RPC (--x402-verify rpc) and
	// settles through the same facilitator.
	rpcGW := startGateway(t, e.up.url, append([]string{"--x402-facilitator", e.fac.URL(), "--x402-rpc", e.a.RPC(),
		"--x402-verify", "rpc"}, phaseLog...)...)
	// The default unknown_wallet tier (120 light calls a minute, $2 a day)
	// would stop the run: lift both for the payer.
	for _, g := range []*gateway{tg, rpcGW} {
		if r := g.admin(t, "PUT", "/wallets/"+chain.Payer.Address.Hex()+"/policy", map[string]any{
			"rate_class_quota": map[string]int{"light": 100000}, "daily_spend_cap_usd": 1000,
		}); r.Status/100 != 2 {
			t.Fatalf("PUT wallet policy: got %d: %s", r.Status, r.Body)
		}
	}
	ref := chain.StartRefServer(t, e.fac, chain.PayTo.Address, priceExtract)

	type server struct {
		name, url string
		gw        *gateway
		calls     []chain.PayResult
		fac       []chain.FacilitatorOp
		conns     int // connections the facilitator accepted during its measured calls
	}
	servers := []*server{
		{name: "reference", url: ref.URL()},
		{name: "toolgate", url: tg.url + "/tools/extract/structured", gw: tg},
		{name: "toolgate-rpc", url: rpcGW.url + "/tools/extract/structured", gw: rpcGW},
	}
	pay := func(s *server, count int) []chain.PayResult {
		t.Helper()
		res := chain.PayV2(t, s.url, chain.PayOptions{RPC: e.a.RPC(), JSON: extractInput, Count: count})
		for i, r := range res {
			if r.Status != 200 || r.Error != "" {
				t.Fatalf("%s call %d: got %d %q: %s", s.name, i, r.Status, r.Error, r.Body)
			}
			if st, ok := r.Settlement(); !ok || !st.Success {
				t.Fatalf("%s call %d: not settled: %+v", s.name, i, st)
			}
		}
		return res
	}
	payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
	for _, s := range servers {
		pay(s, warm)
	}
	e.fac.Timings(t) // forget the warm-up's
	gwLogFrom := map[*gateway]int{}
	for _, s := range servers {
		if s.gw != nil {
			gwLogFrom[s.gw] = s.gw.stderrLen()
		}
	}
	for r := range rounds {
		for k := range servers {
			s := servers[(k+r)%len(servers)]
			c0 := e.fac.Stats(t).Connections
			s.calls = append(s.calls, pay(s, n/rounds)...)
			s.fac = append(s.fac, e.fac.Timings(t)...)
			s.conns += e.fac.Stats(t).Connections - c0
		}
	}
	if got, want := chain.BalanceOf(t, e.a, chain.PayTo.Address)-payTo0, money.Micros(3*(n+warm)*priceExtract); got != want {
		t.Errorf("payTo balance rose by %d, want %d", got, want)
	}

	t.Logf("paid calls, %d sequential per server in %d rotating rounds after %d warm-up calls, @x402/fetch 2.27.0, reference facilitator, anvil automine:",
		n, rounds, warm)
	p50 := map[string]float64{}
	p99 := map[string]float64{}
	for _, s := range servers {
		ms := make([]float64, len(s.calls))
		for i, c := range s.calls {
			ms[i] = c.Ms
		}
		p50[s.name], p99[s.name] = quantile(ms, 0.50), quantile(ms, 0.99)
		t.Logf("  %-13s p50 %6.2f ms  p99 %6.2f ms", s.name, p50[s.name], p99[s.name])
	}
	for _, s := range servers[1:] {
		t.Logf("  ratio %s/reference: p50 %.2f  p99 %.2f", s.name, p50[s.name]/p50["reference"], p99[s.name]/p99["reference"])
	}

	// Where the milliseconds go, p50 of each part over the measured calls.
	t.Logf("breakdown (p50 ms; client: unpaid request → 402 | reading the 402 and signing | paid request → answer):")
	for _, s := range servers {
		var unpaid, sign, paid []float64
		for _, c := range s.calls {
			if c.Phases != nil {
				unpaid, sign, paid = append(unpaid, c.Phases.Unpaid), append(sign, c.Phases.Sign), append(paid, c.Phases.Paid)
			}
		}
		line := fmt.Sprintf("  %-13s client %.2f | %.2f | %.2f", s.name, quantile(unpaid, .5), quantile(sign, .5), quantile(paid, .5))
		for _, op := range []string{"verify", "settle"} {
			var d, rpcMs []float64
			var rpcN int
			methods := map[string]int{}
			for _, f := range s.fac {
				if f.Op != op {
					continue
				}
				d = append(d, f.Ms)
				sum := 0.0
				for _, r := range f.RPC {
					m, _ := r[0].(string)
					x, _ := r[1].(float64)
					methods[m]++
					sum += x
				}
				rpcN += len(f.RPC)
				rpcMs = append(rpcMs, sum)
			}
			if len(d) == 0 {
				line += fmt.Sprintf("; facilitator /%s: none", op)
				continue
			}
			line += fmt.Sprintf("; facilitator /%s %.2f (%d calls, node calls %.1f per call taking %.2f: %s)", op, quantile(d, .5),
				len(d), float64(rpcN)/float64(len(d)), quantile(rpcMs, .5), methodCounts(methods, len(d)))
		}
		t.Log(line + fmt.Sprintf("; facilitator connections opened: %d", s.conns))
		if s.gw != nil {
			ph := s.gw.paidPhases(t, gwLogFrom[s.gw])
			t.Logf("  %-13s inside the gateway (paid request → answer; %d calls): total %.2f = verify %.2f + upstream %.2f + settle %.2f + ledger %.2f + rest %.2f",
				s.name, len(ph["total_us"]), quantile(ph["total_us"], .5), quantile(ph["verify_us"], .5), quantile(ph["upstream_us"], .5),
				quantile(ph["settle_us"], .5), quantile(ph["ledger_us"], .5), quantile(ph["rest_us"], .5))
		}
	}
}

// quantile returns the q-quantile of xs (nearest rank; 0 when empty).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// methodCounts renders how often each node method was called per op.
func methodCounts(m map[string]int, ops int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%.1f", strings.TrimPrefix(k, "eth_"), float64(m[k])/float64(ops))
	}
	return strings.Join(parts, " ")
}

// stderrLen is how much the gateway has logged so far.
func (g *gateway) stderrLen() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stderr.Len()
}

// paidPhases reads the gateway's "paid call phases" debug lines logged
// after offset from: each phase in milliseconds, by field ("rest_us" is
// the total less the named phases).
func (g *gateway) paidPhases(t testing.TB, from int) map[string][]float64 {
	t.Helper()
	g.mu.Lock()
	log := bytes.Clone(g.stderr.Bytes()[from:])
	g.mu.Unlock()
	out := map[string][]float64{}
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct{ Total, Verify, Upstream, Settle, Ledger float64 }
		var raw map[string]any
		if json.Unmarshal(sc.Bytes(), &raw) != nil || raw["msg"] != "paid call phases" {
			continue
		}
		l.Total, _ = raw["total_us"].(float64)
		l.Verify, _ = raw["verify_us"].(float64)
		l.Upstream, _ = raw["upstream_us"].(float64)
		l.Settle, _ = raw["settle_us"].(float64)
		l.Ledger, _ = raw["ledger_us"].(float64)
		ms := func(us float64) float64 { return us / 1000 }
		out["total_us"] = append(out["total_us"], ms(l.Total))
		out["verify_us"] = append(out["verify_us"], ms(l.Verify))
		out["upstream_us"] = append(out["upstream_us"], ms(l.Upstream))
		out["settle_us"] = append(out["settle_us"], ms(l.Settle))
		out["ledger_us"] = append(out["ledger_us"], ms(l.Ledger))
		out["rest_us"] = append(out["rest_us"], ms(l.Total-l.Verify-l.Upstream-l.Settle-l.Ledger))
	}
	return out
}
