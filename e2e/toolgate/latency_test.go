package toolgate_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestPaidLatency measures paid-call latency as @x402/fetch sees it (402
// round trip, signing, paid retry, verification, upstream, settlement):
// 200 sequential calls against toolgate (facilitator /verify; --x402-verify
// rpc; and --x402-verify rpc with the tool's verify_overlap) and against
// the reference @x402/express server, with the same facilitator, chain,
// payer and price in the same run. Each server first gets warm-up calls
// (the facilitator's and the servers' JIT, the connections), then the
// measured calls go in rounds that rotate the order of the servers, so
// that a noisy stretch of the shared machine falls on all of them alike.
// Each round's client process makes clientWarm calls first that are not
// counted (a fresh node process's first call runs cold code and would be
// the p99 of every server). It runs only with TOOLGATE_BENCH_PAID=1 (about
// a minute) and logs p50/p99 of each, their ratios, and where the
// milliseconds go: each call's timeline from the client's, the gateway's
// and the facilitator's wall-clock timestamps (one host, one clock).
func TestPaidLatency(t *testing.T) {
	if os.Getenv("TOOLGATE_BENCH_PAID") == "" {
		t.Skip("set TOOLGATE_BENCH_PAID=1 to measure paid-call latency")
	}
	const (
		rounds     = 4
		warm       = 20
		clientWarm = 2 // uncounted calls at the start of each round's client process
	)
	n := 200 // measured calls per server; TOOLGATE_BENCH_PAID_N (a multiple of rounds) for a shorter look
	if v, err := strconv.Atoi(os.Getenv("TOOLGATE_BENCH_PAID_N")); err == nil && v >= rounds {
		n = v - v%rounds
	}
	perServer := warm + rounds*(n/rounds+clientWarm)
	e := newEnv(t, viaFacilitator)
	const nServers = 4
	chain.Mint(t, e.a, chain.Payer.Address, money.Micros(nServers*perServer*priceExtract))
	// Phase timings of every paid call in the gateways' debug log (and no
	// access log line per call, which the default warn level of the other
	// tests does not print either).
	phaseLog := []string{"--log-level", "debug", "--log-format", "json", "--access-log=false"}
	tg := startGateway(t, e.up.url, append([]string{"--x402-facilitator", e.fac.URL()}, phaseLog...)...)
	// The others verify over the RPC (--x402-verify rpc) and settle
	// through the same facilitator; the last one also verifies beside the
	// upstream call (the tool's verify_overlap).
	rpcArgs := append([]string{"--x402-facilitator", e.fac.URL(), "--x402-rpc", e.a.RPC(), "--x402-verify", "rpc"}, phaseLog...)
	rpcGW := startGateway(t, e.up.url, rpcArgs...)
	overlapTools := strings.Replace(fmt.Sprintf(testTools, e.up.url), `{"id":"extract/structured",`,
		`{"id":"extract/structured","verify_overlap":true,`, 1)
	overlapGW := startGatewayCatalog(t, overlapTools, rpcArgs...)
	// The default unknown_wallet tier (120 light calls a minute, $2 a day)
	// would stop the run: lift both for the payer.
	for _, g := range []*gateway{tg, rpcGW, overlapGW} {
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
		{name: "tg-rpc-overlap", url: overlapGW.url + "/tools/extract/structured", gw: overlapGW},
	}
	if len(servers) != nServers {
		t.Fatal("nServers is wrong")
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
			s.calls = append(s.calls, pay(s, clientWarm+n/rounds)[clientWarm:]...)
			s.fac = append(s.fac, e.fac.Timings(t)...)
			s.conns += e.fac.Stats(t).Connections - c0
		}
	}
	if got, want := chain.BalanceOf(t, e.a, chain.PayTo.Address)-payTo0, money.Micros(nServers*perServer*priceExtract); got != want {
		t.Errorf("payTo balance rose by %d, want %d", got, want)
	}

	t.Logf("paid calls, %d sequential per server in %d rotating rounds after %d warm-up calls (+%d uncounted per round), @x402/fetch 2.27.0, reference facilitator, anvil automine:",
		n, rounds, warm, clientWarm)
	p50 := map[string]float64{}
	p99 := map[string]float64{}
	for _, s := range servers {
		ms := make([]float64, len(s.calls))
		for i, c := range s.calls {
			ms[i] = c.Ms
		}
		p50[s.name], p99[s.name] = quantile(ms, 0.50), quantile(ms, 0.99)
		t.Logf("  %-14s p50 %6.2f ms  p99 %6.2f ms", s.name, p50[s.name], p99[s.name])
	}
	for _, s := range servers[1:] {
		t.Logf("  ratio %s/reference: p50 %.2f  p99 %.2f", s.name, p50[s.name]/p50["reference"], p99[s.name]/p99["reference"])
	}

	// What the facilitator did for each server (p50 over the calls).
	t.Logf("facilitator (p50 ms of its handler, node calls per op):")
	for _, s := range servers {
		line := fmt.Sprintf("  %-14s", s.name)
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
				line += fmt.Sprintf(" /%s: none;", op)
				continue
			}
			line += fmt.Sprintf(" /%s %.2f (%d, node calls %.1f per op taking %.2f: %s);", op, quantile(d, .5),
				len(d), float64(rpcN)/float64(len(d)), quantile(rpcMs, .5), methodCounts(methods, len(d)))
		}
		t.Log(line + fmt.Sprintf(" connections opened: %d", s.conns))
	}

	// Where the milliseconds go: each call's timeline, cut into segments
	// from the three processes' wall-clock stamps, p50 of each segment.
	t.Logf("timeline (p50 ms of each segment over the calls; p50s of parts do not add up to the p50 of the whole):")
	var bounds []string
	for _, s := range servers {
		var gw []gwPhases
		if s.gw != nil {
			gw = s.gw.paidPhases(t, gwLogFrom[s.gw])
		}
		segs, matched, bound := timeline(s.calls, s.fac, gw, s.gw != nil)
		t.Logf("  %-14s %s (%d of %d calls lined up)", s.name, segs, matched, len(s.calls))
		if s.gw != nil {
			bounds = append(bounds, fmt.Sprintf("%s %.2f ms = %.2f× the reference's p50", s.name, bound, bound/p50["reference"]))
		}
	}
	// The least p50 any gateway could reach with this client, chain and
	// facilitator: each call with the gateway's own time (from its call's
	// start to its end, the settlement round trip included) replaced by
	// the facilitator's /settle handler alone.
	t.Logf("bound (p50 of each call less the gateway's time, plus the facilitator's /settle handler): %s", strings.Join(bounds, "; "))
}

// segment names, in timeline order. A segment absent for a server is
// left out of its line.
var segmentOrder = []string{
	"unpaid", "sign", "to server", "identify+decide", "verify", "upstream", "to verify", "fac /verify", "between",
	"gw before settle", "to fac", "fac /settle", "from fac", "after settle", "to client", "own", "floor",
}

// timeline lines each call up with its gateway phases (gateway servers)
// and its facilitator ops by wall-clock time, and returns the p50 of each
// segment, rendered, with how many calls lined up. Segments:
//
//	unpaid           the unpaid request and its 402, as the client sees it
//	sign             the client reading the 402 and signing
//	to server        paid request sent → the gateway's call started
//	identify+decide  payment decoded and checked locally, nonce lock, policy, quota, spend
//	verify           the verification (RPC reads, or the facilitator's /verify)
//	upstream         the upstream call
//	gw before settle the gateway's other time before the settle request
//	to verify        (reference) paid request sent → the facilitator's /verify handler
//	fac /verify      (reference) the facilitator's /verify handler
//	between          (reference) /verify answered → /settle received
//	to fac           settle request made → the facilitator's handler
//	fac /settle      the facilitator's /settle handler (body read, settle, answer)
//	from fac         /settle answered → the gateway has the result
//	after settle     the gateway's time after the settlement (ledger, answer)
//	to client        the gateway's call done (reference: /settle answered) → the client has the whole answer
//	own              the server's own time: all but unpaid, sign, fac /settle (and fac /verify)
//	floor            unpaid + sign + fac /settle: what neither server can shed
//
// For a gateway it also returns the p50 of each call's bound: the call
// with the gateway's time (its call's start to end) replaced by the
// facilitator's /settle handler alone.
func timeline(calls []chain.PayResult, fac []chain.FacilitatorOp, gw []gwPhases, isGateway bool) (string, int, float64) {
	seg := map[string][]float64{}
	var bound []float64
	matched := 0
	for _, c := range calls {
		if c.Phases == nil || len(c.Phases.At) != 4 {
			continue
		}
		us, ue, ps, end := c.Phases.At[0], c.Phases.At[1], c.Phases.At[2], c.Phases.At[3]
		opIn := func(op string, from float64) *chain.FacilitatorOp {
			for i := range fac {
				if f := &fac[i]; f.Op == op && len(f.At) == 2 && f.At[0] >= from && f.At[1] <= end {
					return f
				}
			}
			return nil
		}
		add := map[string]float64{"unpaid": ue - us, "sign": ps - ue}
		if isGateway {
			var g *gwPhases
			for i := range gw {
				if gw[i].start >= ps && gw[i].start <= end {
					g = &gw[i]
					break
				}
			}
			if g == nil {
				continue
			}
			st := opIn("settle", g.start+g.settleAt)
			if st == nil {
				continue
			}
			settleSent := g.start + g.settleAt
			settled := settleSent + g.settle
			add["to server"] = g.start - ps
			add["identify+decide"] = g.decidedAt
			add["verify"] = g.verify
			add["upstream"] = g.upstream
			// The time before the settlement that was neither the
			// verification nor the upstream call (with verify_overlap
			// the two run side by side: their union is taken out).
			busy := g.verify + g.upstream
			if g.upstreamAt < g.verifyAt+g.verify && g.verifyAt < g.upstreamAt+g.upstream {
				busy = max(g.verifyAt+g.verify, g.upstreamAt+g.upstream) - min(g.verifyAt, g.upstreamAt)
			}
			add["gw before settle"] = g.settleAt - g.decidedAt - busy
			add["to fac"] = st.At[0] - settleSent
			add["fac /settle"] = st.At[1] - st.At[0]
			add["from fac"] = settled - st.At[1]
			add["after settle"] = g.total - g.settleAt - g.settle
			add["to client"] = end - (g.start + g.total)
			own := (end - us) - add["unpaid"] - add["sign"] - add["fac /settle"]
			if v := opIn("verify", g.start); v != nil {
				own -= v.At[1] - v.At[0]
			}
			add["own"] = own
			bound = append(bound, (end-us)-g.total+add["fac /settle"])
		} else {
			v := opIn("verify", ps)
			if v == nil {
				continue
			}
			st := opIn("settle", v.At[1])
			if st == nil {
				continue
			}
			add["to verify"] = v.At[0] - ps
			add["fac /verify"] = v.At[1] - v.At[0]
			add["between"] = st.At[0] - v.At[1]
			add["fac /settle"] = st.At[1] - st.At[0]
			add["to client"] = end - st.At[1]
			add["own"] = (end - us) - add["unpaid"] - add["sign"] - add["fac /settle"] - add["fac /verify"]
		}
		add["floor"] = add["unpaid"] + add["sign"] + add["fac /settle"]
		matched++
		for k, v := range add {
			seg[k] = append(seg[k], v)
		}
	}
	var parts []string
	for _, k := range segmentOrder {
		if xs := seg[k]; len(xs) > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, quantile(xs, .5)))
		}
	}
	return strings.Join(parts, " | "), matched, quantile(bound, .5)
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

// gwPhases is one "paid call phases" debug line of the gateway, in
// milliseconds: start on the wall clock (Unix ms), the others durations
// or offsets from start.
type gwPhases struct {
	start, total, identifiedAt, decidedAt, verifyAt, verify, upstreamAt, upstream, settleAt, settle, ledger float64
}

// paidPhases reads the gateway's "paid call phases" debug lines logged
// after offset from.
func (g *gateway) paidPhases(t testing.TB, from int) []gwPhases {
	t.Helper()
	g.mu.Lock()
	log := bytes.Clone(g.stderr.Bytes()[from:])
	g.mu.Unlock()
	var out []gwPhases
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var raw map[string]any
		if json.Unmarshal(sc.Bytes(), &raw) != nil || raw["msg"] != "paid call phases" {
			continue
		}
		ms := func(k string) float64 { us, _ := raw[k].(float64); return us / 1000 }
		out = append(out, gwPhases{start: ms("start_unix_us"), total: ms("total_us"), identifiedAt: ms("identified_at_us"),
			decidedAt: ms("decided_at_us"), verifyAt: ms("verify_at_us"), verify: ms("verify_us"), upstreamAt: ms("upstream_at_us"), upstream: ms("upstream_us"),
			settleAt: ms("settle_at_us"), settle: ms("settle_us"), ledger: ms("ledger_us")})
	}
	return out
}
