package gateway

import (
	"encoding/json"
	"net/url"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/money"
)

// statsFanout answers GET /stats for the whole cluster (docs/cluster.md):
// every live node (itself included, through its advertised URL) is asked
// for its own counts over the same minutes (since and until resolved here
// to absolute times) with the top lists at their longest, and the answers
// are summed: totals, series, tools, and the top principals re-ranked from
// the merged lists (top_approximate when some node's list was full, so
// that a principal could be missing from it). ledger is this node's;
// nodes holds every node's, and unreachable names the nodes whose calls
// are not in the sums. It reports false for a peer's request (answer
// locally) or when no node is known.
func (g *Gateway) statsFanout(ctx *fasthttp.RequestCtx, since, until time.Time, step time.Duration, top int) (Stats, bool) {
	cp, ok := g.opts.Cluster.(ClusterPeers)
	if !ok || fromPeer(ctx) {
		return Stats{}, false
	}
	peers := cp.Peers()
	if len(peers) == 0 {
		return Stats{}, false
	}
	q := url.Values{}
	q.Set("since", since.UTC().Format(time.RFC3339Nano))
	q.Set("until", until.UTC().Format(time.RFC3339Nano))
	q.Set("step", step.String())
	q.Set("top", strconv.Itoa(maxStatsTop))
	answers := askPeers(ctx, peers, "/stats", []byte(q.Encode()))

	from, to, stepM := since.Unix()/60, until.Unix()/60, int64(step/time.Minute)
	out := statsFrame(from, to, stepM)
	out.Since, out.Until, out.StepS = out.Series.Start, until.UTC(), int(step/time.Second)
	out.Ledger.HeadSeq, out.Ledger.HeadHash = g.led.Head()
	out.Ledger.LastVerification = g.lastVerify.Load()
	out.Nodes = map[string]LedgerStat{}
	tools := map[string]*ToolStat{}
	prin := map[string]*PrincipalStat{}
	for _, a := range answers {
		var w statsWire
		if a.err == "" && json.Unmarshal(a.body, &w) != nil {
			a.err = "answered what is not a /stats answer"
		}
		s := w.stats()
		if a.err == "" && (s.Series.Points != out.Series.Points || !s.Series.Start.Equal(out.Series.Start)) {
			a.err = "counted other minutes (" + s.Series.Start.Format(time.RFC3339) + ", " + strconv.Itoa(s.Series.Points) + " points)"
		}
		if a.err != "" {
			if out.Unreachable == nil {
				out.Unreachable = map[string]string{}
			}
			out.Unreachable[a.peer.Node] = a.err
			continue
		}
		out.Nodes[a.peer.Node] = s.Ledger
		t := &out.Totals
		t.Calls += s.Totals.Calls
		t.Denied += s.Totals.Denied
		t.SpendUSD = t.SpendUSD.SatAdd(s.Totals.SpendUSD)
		t.X402RevenueUSD = t.X402RevenueUSD.SatAdd(s.Totals.X402RevenueUSD)
		for k, n := range s.Totals.ByOutcome {
			t.ByOutcome[k] += n
		}
		for k, n := range s.Totals.DenialsByReason {
			t.DenialsByReason[k] += n
		}
		for o, ser := range s.Series.ByOutcome {
			sum := out.Series.ByOutcome[o]
			if sum == nil {
				sum = make([]int64, out.Series.Points)
				out.Series.ByOutcome[o] = sum
			}
			for i := range min(len(ser), len(sum)) {
				sum[i] += ser[i]
			}
		}
		for i := range min(len(s.Series.SpendUSD), out.Series.Points) {
			out.Series.SpendUSD[i] = out.Series.SpendUSD[i].SatAdd(s.Series.SpendUSD[i])
		}
		for i := range min(len(s.Series.RevenueUSD), out.Series.Points) {
			out.Series.RevenueUSD[i] = out.Series.RevenueUSD[i].SatAdd(s.Series.RevenueUSD[i])
		}
		for _, ts := range s.Tools {
			m := tools[ts.Tool]
			if m == nil {
				m = &ToolStat{Tool: ts.Tool}
				tools[ts.Tool] = m
			}
			m.add(ts.Calls, ts.Denied, ts.SpendUSD)
		}
		// A principal in both lists of a node is counted once.
		seen := map[string]bool{}
		for _, list := range [][]PrincipalStat{s.TopPrincipals.BySpend, s.TopPrincipals.ByDenials} {
			if len(list) >= maxStatsTop {
				out.TopApprox = true
			}
			for _, ps := range list {
				if seen[ps.Principal] {
					continue
				}
				seen[ps.Principal] = true
				m := prin[ps.Principal]
				if m == nil {
					m = &PrincipalStat{Principal: ps.Principal}
					prin[ps.Principal] = m
				}
				m.add(ps.Calls, ps.Denied, ps.SpendUSD)
			}
		}
	}
	out.rank(tools, prin, top)
	return out, true
}

// statsWire reads a node's /stats answer: Stats with its amounts as the
// decimal USD they are rendered in (money.Micros has no decoder: an
// amount is read from its text, never through a float).
type statsWire struct {
	Totals struct {
		Calls           int64            `json:"calls"`
		Denied          int64            `json:"denied"`
		ByOutcome       map[string]int64 `json:"by_outcome"`
		DenialsByReason map[string]int64 `json:"denials_by_reason"`
		SpendUSD        usd              `json:"spend_usd"`
		X402RevenueUSD  usd              `json:"x402_revenue_usd"`
	} `json:"totals"`
	Series struct {
		Start      time.Time          `json:"start"`
		Points     int                `json:"points"`
		ByOutcome  map[string][]int64 `json:"by_outcome"`
		SpendUSD   []usd              `json:"spend_usd"`
		RevenueUSD []usd              `json:"x402_revenue_usd"`
	} `json:"series"`
	Tools []struct {
		Tool     string `json:"tool"`
		Calls    int64  `json:"calls"`
		Denied   int64  `json:"denied"`
		SpendUSD usd    `json:"spend_usd"`
	} `json:"tools"`
	Top struct {
		BySpend   []principalWire `json:"by_spend"`
		ByDenials []principalWire `json:"by_denials"`
	} `json:"top_principals"`
	Ledger LedgerStat `json:"ledger"`
}

type principalWire struct {
	Principal string `json:"principal"`
	Calls     int64  `json:"calls"`
	Denied    int64  `json:"denied"`
	SpendUSD  usd    `json:"spend_usd"`
}

// usd is an amount read from its decimal text.
type usd money.Micros

func (u *usd) UnmarshalJSON(b []byte) error {
	m, err := money.ParseJSON(b)
	*u = usd(m)
	return err
}

func (w *statsWire) stats() Stats {
	var s Stats
	s.Totals = StatsTotals{Calls: w.Totals.Calls, Denied: w.Totals.Denied, ByOutcome: w.Totals.ByOutcome,
		DenialsByReason: w.Totals.DenialsByReason, SpendUSD: money.Micros(w.Totals.SpendUSD), X402RevenueUSD: money.Micros(w.Totals.X402RevenueUSD)}
	s.Series = StatsSeries{Start: w.Series.Start, Points: w.Series.Points, ByOutcome: w.Series.ByOutcome,
		SpendUSD: micros(w.Series.SpendUSD), RevenueUSD: micros(w.Series.RevenueUSD)}
	for _, t := range w.Tools {
		s.Tools = append(s.Tools, ToolStat{Tool: t.Tool, Calls: t.Calls, Denied: t.Denied, SpendUSD: money.Micros(t.SpendUSD)})
	}
	s.TopPrincipals.BySpend, s.TopPrincipals.ByDenials = principals(w.Top.BySpend), principals(w.Top.ByDenials)
	s.Ledger = w.Ledger
	return s
}

func micros(us []usd) []money.Micros {
	out := make([]money.Micros, len(us))
	for i, u := range us {
		out[i] = money.Micros(u)
	}
	return out
}

func principals(ps []principalWire) []PrincipalStat {
	out := make([]PrincipalStat, len(ps))
	for i, p := range ps {
		out[i] = PrincipalStat{Principal: p.Principal, Calls: p.Calls, Denied: p.Denied, SpendUSD: money.Micros(p.SpendUSD)}
	}
	return out
}
