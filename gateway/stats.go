package gateway

import (
	"encoding/json"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
)

// Call statistics for GET /stats (and the dashboard's overview).
//
// The gateway counts every finished call in memory, per minute, for the
// last 24 hours: by outcome, by refusal reason and by tool, with the
// amount billed and the x402 revenue; per principal it counts in
// 10-minute slices. Memory is bounded: a fixed ring of minutes and
// slices, at most statMaxTools tools per minute and statMaxPrincipals
// principals per slice (the rest are counted under "(other)"). At start
// the counters are rebuilt from the ledger (restoreMeters: the meters
// snapshot and the records after its cut, or the last 50 hours), whole
// minutes and whole slices. A query reads at most 1441
// minutes and 145 slices, whatever the number of records.

const (
	statsSpan         = 24 * time.Hour
	statsSlack        = 2 * time.Minute                // a since this much older than statsSpan is taken as statsSpan
	statsMinutes      = int(statsSpan/time.Minute) + 1 // the current minute is partial
	statsSliceMinutes = 10
	statsSlices       = statsMinutes/statsSliceMinutes + 2
	statMaxTools      = 256
	statMaxPrincipals = 4096
	statOther         = "(other)"
	statAnonymous     = "(anonymous)"
	statUnknownTool   = "(unknown tool)"
)

// statCount is one tool's or principal's figures in a minute or slice.
type statCount struct {
	calls, denied int64
	spend         money.Micros
}

// plus is c with o added (spend saturating: a sum never wraps).
func (c statCount) plus(o statCount) statCount {
	return statCount{c.calls + o.calls, c.denied + o.denied, c.spend.SatAdd(o.spend)}
}

type statMinute struct {
	minute   int64 // unix minute held; the slot is empty unless it is the one asked for
	outcomes map[string]int64
	reasons  map[string]int64 // refusals (isDenial) by reason (the outcome when there is none)
	tools    map[string]statCount
	spend    money.Micros
	revenue  money.Micros
}

type statSlice struct {
	slice      int64 // unix minute / statsSliceMinutes
	principals map[string]statCount
}

// statsBook holds the counters. The zero value is ready; safe for
// concurrent use.
type statsBook struct {
	mu      sync.Mutex
	minutes [statsMinutes]statMinute
	slices  [statsSlices]statSlice
}

// isDenial reports whether an outcome is a refusal by the gateway (the
// call did not run, or its payment did not go through): everything but
// allowed and upstream_error.
func isDenial(outcome string) bool { return outcome != outAllowed && outcome != outUpstreamError }

func (b *statsBook) minute(m int64) *statMinute {
	s := &b.minutes[m%int64(statsMinutes)]
	if s.minute > m {
		return nil // older than the ring
	}
	if s.minute < m || s.outcomes == nil {
		s.minute = m
		if s.outcomes == nil {
			s.outcomes, s.reasons, s.tools = map[string]int64{}, map[string]int64{}, map[string]statCount{}
		} else {
			clear(s.outcomes)
			clear(s.reasons)
			clear(s.tools)
		}
		s.spend, s.revenue = 0, 0
	}
	return s
}

func (b *statsBook) slice(m int64) *statSlice {
	n := m / statsSliceMinutes
	s := &b.slices[n%int64(statsSlices)]
	if s.slice > n {
		return nil
	}
	if s.slice < n || s.principals == nil {
		s.slice = n
		if s.principals == nil {
			s.principals = map[string]statCount{}
		} else {
			clear(s.principals)
		}
	}
	return s
}

// add counts n calls at at.
func (b *statsBook) add(at time.Time, principal, tool, outcome, reason string, cost money.Micros, n int64) {
	if outcome == outUnknownTool {
		tool = statUnknownTool
	}
	if principal == "" {
		principal = statAnonymous
	}
	denied := isDenial(outcome)
	var d int64
	if denied {
		d = n
		if reason == "" {
			reason = outcome
		}
	}
	m := at.Unix() / 60
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.minute(m); s != nil {
		s.outcomes[outcome] += n
		if denied {
			s.reasons[reason] += n
		}
		tc, ok := s.tools[tool]
		if !ok && len(s.tools) >= statMaxTools {
			tool, tc = statOther, s.tools[statOther]
		}
		s.tools[tool] = tc.plus(statCount{n, d, cost})
		s.spend = s.spend.SatAdd(cost)
	}
	if s := b.slice(m); s != nil {
		pc, ok := s.principals[principal]
		if !ok && len(s.principals) >= statMaxPrincipals {
			principal, pc = statOther, s.principals[statOther]
		}
		s.principals[principal] = pc.plus(statCount{n, d, cost})
	}
}

// addRevenue counts an x402 settlement of amount at at.
func (b *statsBook) addRevenue(at time.Time, amount money.Micros) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.minute(at.Unix() / 60); s != nil {
		s.revenue = s.revenue.SatAdd(amount)
	}
}

// restore counts a record read back from the ledger at start.
func (b *statsBook) restore(r *ledger.Record) {
	switch r.Type {
	case ledger.TypeCall:
		n := int64(1)
		if r.Principal == "" && len(r.State) > 0 {
			var agg struct {
				Aggregate bool  `json:"aggregate"`
				Count     int64 `json:"count"`
			}
			if json.Unmarshal(r.State, &agg) == nil && agg.Aggregate && agg.Count > 0 {
				n = agg.Count
			}
		}
		b.add(r.At, r.Principal, r.Tool, r.Outcome, r.Reason, r.Cost, n)
	case ledger.TypeTxn:
		if r.Kind == ledger.KindX402Settlement {
			b.addRevenue(r.At, r.Amount)
		}
	}
}

// merge adds src's minutes from unix minute from on, and its slices
// overlapping them, to b (a start's restore: meterssnap.go). Into an
// empty book it is a copy; the caps apply as in add.
func (b *statsBook) merge(src *statsBook, from int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range src.minutes {
		m := &src.minutes[i]
		if m.outcomes == nil || m.minute < from {
			continue
		}
		s := b.minute(m.minute)
		if s == nil {
			continue
		}
		if len(s.outcomes) == 0 { // the start's case: a copy, caps and all
			s.outcomes, s.reasons, s.tools = maps.Clone(m.outcomes), maps.Clone(m.reasons), maps.Clone(m.tools)
			s.spend, s.revenue = m.spend, m.revenue
			continue
		}
		for o, n := range m.outcomes {
			s.outcomes[o] += n
		}
		for r, n := range m.reasons {
			s.reasons[r] += n
		}
		for t, c := range m.tools {
			tc, ok := s.tools[t]
			if !ok && t != statOther && len(s.tools) >= statMaxTools {
				t, tc = statOther, s.tools[statOther]
			}
			s.tools[t] = tc.plus(c)
		}
		s.spend = s.spend.SatAdd(m.spend)
		s.revenue = s.revenue.SatAdd(m.revenue)
	}
	for i := range src.slices {
		sl := &src.slices[i]
		if sl.principals == nil || sl.slice < from/statsSliceMinutes {
			continue
		}
		s := b.slice(sl.slice * statsSliceMinutes)
		if s == nil {
			continue
		}
		if len(s.principals) == 0 {
			s.principals = maps.Clone(sl.principals)
			continue
		}
		for p, c := range sl.principals {
			pc, ok := s.principals[p]
			if !ok && p != statOther && len(s.principals) >= statMaxPrincipals {
				p, pc = statOther, s.principals[statOther]
			}
			s.principals[p] = pc.plus(c)
		}
	}
}

// Stats is the answer of GET /stats.
type Stats struct {
	Since  time.Time   `json:"since"`
	Until  time.Time   `json:"until"`
	StepS  int         `json:"step_s"`
	Totals StatsTotals `json:"totals"`
	Series StatsSeries `json:"series"`
	Tools  []ToolStat  `json:"tools"`
	// TopPrincipals counts whole 10-minute slices: PrincipalsSince is
	// where the first one starts.
	TopPrincipals   TopPrincipals `json:"top_principals"`
	PrincipalsSince time.Time     `json:"principals_since"`
	Ledger          LedgerStat    `json:"ledger"`
	// In cluster mode (statsfanout.go): every node's ledger, the nodes
	// that did not answer (their calls are not in the sums), and whether
	// a top list may miss a principal (some node had more than
	// maxStatsTop in a list).
	Nodes       map[string]LedgerStat `json:"nodes,omitempty"`
	Unreachable map[string]string     `json:"unreachable,omitempty"`
	TopApprox   bool                  `json:"top_approximate,omitempty"`
}

// StatsTotals sums the range.
type StatsTotals struct {
	Calls           int64            `json:"calls"`
	Denied          int64            `json:"denied"`
	ByOutcome       map[string]int64 `json:"by_outcome"`
	DenialsByReason map[string]int64 `json:"denials_by_reason"`
	SpendUSD        money.Micros     `json:"spend_usd"`
	X402RevenueUSD  money.Micros     `json:"x402_revenue_usd"`
}

// StatsSeries is one value per step from Start: calls by outcome, spend
// and revenue.
type StatsSeries struct {
	Start      time.Time          `json:"start"`
	Points     int                `json:"points"`
	ByOutcome  map[string][]int64 `json:"by_outcome"`
	SpendUSD   []money.Micros     `json:"spend_usd"`
	RevenueUSD []money.Micros     `json:"x402_revenue_usd"`
}

// ToolStat is one tool's calls in the range.
type ToolStat struct {
	Tool     string       `json:"tool"`
	Calls    int64        `json:"calls"`
	Denied   int64        `json:"denied"`
	SpendUSD money.Micros `json:"spend_usd"`
}

func (t *ToolStat) add(calls, denied int64, spend money.Micros) {
	t.Calls, t.Denied, t.SpendUSD = t.Calls+calls, t.Denied+denied, t.SpendUSD.SatAdd(spend)
}

// PrincipalStat is one principal's calls in the range.
type PrincipalStat struct {
	Principal string       `json:"principal"`
	Calls     int64        `json:"calls"`
	Denied    int64        `json:"denied"`
	SpendUSD  money.Micros `json:"spend_usd"`
}

func (p *PrincipalStat) add(calls, denied int64, spend money.Micros) {
	p.Calls, p.Denied, p.SpendUSD = p.Calls+calls, p.Denied+denied, p.SpendUSD.SatAdd(spend)
}

// TopPrincipals are the principals with the most spend, and with the
// most denials, in the range.
type TopPrincipals struct {
	BySpend   []PrincipalStat `json:"by_spend"`
	ByDenials []PrincipalStat `json:"by_denials"`
}

// LedgerStat is the ledger's head and the last verification this
// gateway ran (GET /audit/verify), if any.
type LedgerStat struct {
	HeadSeq          uint64        `json:"head_seq"`
	HeadHash         string        `json:"head_hash"`
	LastVerification *verifyResult `json:"last_verification"`
}

type verifyResult struct {
	At time.Time `json:"at"`
	ledger.Report
}

// query sums minutes [from, to] (unix minutes) in steps of step minutes,
// with the top principals of the slices overlapping the range.
func (b *statsBook) query(from, to, step int64, top int) Stats {
	out := statsFrame(from, to, step)
	points := out.Series.Points
	tools := map[string]*ToolStat{}
	pr := map[string]*PrincipalStat{}
	b.mu.Lock()
	for m := from; m <= to; m++ {
		s := &b.minutes[m%int64(statsMinutes)]
		if s.minute != m || s.outcomes == nil {
			continue
		}
		i := int((m - from) / step)
		for o, n := range s.outcomes {
			ser := out.Series.ByOutcome[o]
			if ser == nil {
				ser = make([]int64, points)
				out.Series.ByOutcome[o] = ser
			}
			ser[i] += n
			out.Totals.ByOutcome[o] += n
			out.Totals.Calls += n
		}
		for r, n := range s.reasons {
			out.Totals.DenialsByReason[r] += n
			out.Totals.Denied += n
		}
		for t, c := range s.tools {
			ts := tools[t]
			if ts == nil {
				ts = &ToolStat{Tool: t}
				tools[t] = ts
			}
			ts.add(c.calls, c.denied, c.spend)
		}
		out.Series.SpendUSD[i] = out.Series.SpendUSD[i].SatAdd(s.spend)
		out.Series.RevenueUSD[i] = out.Series.RevenueUSD[i].SatAdd(s.revenue)
		out.Totals.SpendUSD = out.Totals.SpendUSD.SatAdd(s.spend)
		out.Totals.X402RevenueUSD = out.Totals.X402RevenueUSD.SatAdd(s.revenue)
	}
	first := from / statsSliceMinutes
	for n := first; n <= to/statsSliceMinutes; n++ {
		s := &b.slices[n%int64(statsSlices)]
		if s.slice != n || s.principals == nil {
			continue
		}
		for p, c := range s.principals {
			ps := pr[p]
			if ps == nil {
				ps = &PrincipalStat{Principal: p}
				pr[p] = ps
			}
			ps.add(c.calls, c.denied, c.spend)
		}
	}
	b.mu.Unlock()
	out.rank(tools, pr, top)
	return out
}

// statsFrame is an empty answer for minutes [from, to] in steps of step
// minutes.
func statsFrame(from, to, step int64) Stats {
	points := int((to - from + step) / step)
	return Stats{
		Totals: StatsTotals{ByOutcome: map[string]int64{}, DenialsByReason: map[string]int64{}},
		Series: StatsSeries{Start: time.Unix(from*60, 0).UTC(), Points: points, ByOutcome: map[string][]int64{},
			SpendUSD: make([]money.Micros, points), RevenueUSD: make([]money.Micros, points)},
		PrincipalsSince: time.Unix(from/statsSliceMinutes*statsSliceMinutes*60, 0).UTC(),
	}
}

// rank sets the tools, most calls first, and the top principals.
func (s *Stats) rank(tools map[string]*ToolStat, pr map[string]*PrincipalStat, top int) {
	s.Tools = make([]ToolStat, 0, len(tools))
	for _, t := range tools {
		s.Tools = append(s.Tools, *t)
	}
	sort.Slice(s.Tools, func(i, j int) bool {
		a, b := s.Tools[i], s.Tools[j]
		if a.Calls != b.Calls {
			return a.Calls > b.Calls
		}
		return a.Tool < b.Tool
	})
	all := make([]PrincipalStat, 0, len(pr))
	for _, p := range pr {
		all = append(all, *p)
	}
	s.TopPrincipals.BySpend = topBy(all, top, func(p PrincipalStat) int64 { return int64(p.SpendUSD) })
	s.TopPrincipals.ByDenials = topBy(all, top, func(p PrincipalStat) int64 { return p.Denied })
}

// topBy returns the n principals with the largest non-zero key, largest
// first (ties by name).
func topBy(all []PrincipalStat, n int, key func(PrincipalStat) int64) []PrincipalStat {
	out := make([]PrincipalStat, 0, min(n, len(all)))
	for _, p := range all {
		if key(p) > 0 {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := key(out[i]), key(out[j])
		if a != b {
			return a > b
		}
		return out[i].Principal < out[j].Principal
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

const maxStatsTop = 1000

// apiStats serves GET /stats?since=&until=&step=&top=: since and until
// take an RFC 3339 time or a duration back from now, within the last 24
// hours (default: the last hour, until now); step is a whole number of
// minutes (default 1m), at most 1440 steps; top is how many principals
// each top list holds (default 10, at most 1000).
func (g *Gateway) apiStats(ctx *fasthttp.RequestCtx) (any, *Decision) {
	if !ctx.IsGet() {
		return nil, errBadMethod
	}
	now := g.now()
	since, until, step, top := now.Add(-time.Hour), now, time.Minute, 10
	var bad []string
	ctx.QueryArgs().VisitAll(func(k, v []byte) {
		key, val := string(k), string(v)
		switch key {
		case "since", "until":
			t, err := parseWhen(val, now)
			if err != nil {
				bad = append(bad, key+": "+err.Error())
			} else if key == "since" {
				since = t
			} else {
				until = t
			}
		case "step":
			d, err := time.ParseDuration(val)
			if err != nil || d < time.Minute || d%time.Minute != 0 {
				bad = append(bad, "step: want a whole number of minutes such as 1m or 15m")
			} else {
				step = d
			}
		case "top":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > maxStatsTop {
				bad = append(bad, "top: want an integer between 1 and "+strconv.Itoa(maxStatsTop))
			} else {
				top = n
			}
		default:
			bad = append(bad, key+": unknown parameter")
		}
	})
	// A peer's request (statsfanout.go) carries the asking node's since
	// and until, taken as they are so that every node counts the same
	// minutes whatever its clock (minutes this node does not hold count
	// zero).
	peer := fromPeer(ctx)
	if until.After(now) && !peer {
		until = now
	}
	if len(bad) == 0 {
		oldest := now.Add(-statsSpan)
		switch {
		case peer:
			oldest = oldest.Add(-statsSlack)
		case since.Before(oldest) && !since.Before(oldest.Add(-statsSlack)):
			since = oldest // "24 h ago" a moment ago: the start of what is counted
		}
		switch {
		case since.Before(oldest):
			bad = append(bad, "since: at most 24h back (the gateway counts the last 24 hours; older calls: GET /audit)")
		case !since.Before(until):
			bad = append(bad, "since: must be before until")
		}
	}
	from, to, stepM := since.Unix()/60, until.Unix()/60, int64(step/time.Minute)
	if len(bad) == 0 && (to-from+stepM)/stepM > int64(statsMinutes) {
		bad = append(bad, "step: too many steps (at most 1441); use a larger step")
	}
	if len(bad) > 0 {
		return nil, badRequest("Invalid query: " + strings.Join(bad, "; "))
	}
	if g.opts.Cluster != nil {
		if out, ok := g.statsFanout(ctx, since, until, step, top); ok { // statsfanout.go
			return out, nil
		}
	}
	return g.localStats(since, until, step, top), nil
}

// localStats is this node's answer of GET /stats for a checked query.
func (g *Gateway) localStats(since, until time.Time, step time.Duration, top int) Stats {
	from, to, stepM := since.Unix()/60, until.Unix()/60, int64(step/time.Minute)
	out := g.stats.query(from, to, stepM, top)
	out.Since, out.Until, out.StepS = time.Unix(from*60, 0).UTC(), until.UTC(), int(step/time.Second)
	out.Ledger.HeadSeq, out.Ledger.HeadHash = g.led.Head()
	out.Ledger.LastVerification = g.lastVerify.Load()
	return out
}
