package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/policy"
)

// POST /policies/simulate (docs/policies.md, "Simulation"): a candidate
// policy document, or one principal's candidate override, replayed against
// the ledger's call records of the last hours: what the decide stage would
// have answered under it, counted per outcome and reason, with sample
// calls whose outcome flips. The replay runs on fresh meters of its own
// (quota windows and spend counted from the start of the period); it never
// touches the live ones.

// simulated outcomes: those the decide stage produces, which a replay can
// re-decide.
var simDecidable = map[string]bool{
	outAllowed: true, outDenied: true, outQuotaExceeded: true, outSpendCapExceeded: true,
	outInsufficientCredits: true, outConcurrencyExceeded: true, outBreakerTripped: true,
	outPendingApproval: true, outUpstreamError: true, outSettleFailed: true,
}

// simRefusals are the decide-stage refusals a replay re-decides; other
// refusals (credits, concurrency, breakers) depend on what the replay does
// not know (balances, durations, bodies) and stay as recorded.
var simRefusals = map[string]bool{outDenied: true, outQuotaExceeded: true, outSpendCapExceeded: true, outPendingApproval: true}

type simOutcome struct {
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
}

type simSample struct {
	Seq       uint64     `json:"seq"`
	At        time.Time  `json:"at"`
	Principal string     `json:"principal"`
	Tool      string     `json:"tool"`
	Current   simOutcome `json:"current"`
	Candidate simOutcome `json:"candidate"`
}

type simResult struct {
	Since     time.Time      `json:"since"`
	Until     time.Time      `json:"until"`
	Principal string         `json:"principal,omitempty"`
	Records   int            `json:"records"`
	Evaluated int            `json:"evaluated"`
	Current   map[string]int `json:"current"`
	Candidate map[string]int `json:"candidate"`
	CurReason map[string]int `json:"current_reasons"`
	CanReason map[string]int `json:"candidate_reasons"`
	Changed   int            `json:"changed"`
	Flips     map[string]int `json:"flips"`
	Samples   []simSample    `json:"samples"`
	ElapsedMS float64        `json:"elapsed_ms"`
}

// simRequest is the body of POST /policies/simulate.
type simRequest struct {
	hours       int
	samples     int
	doc         *policy.Document // nil: the current policies.json
	principal   string
	override    *policy.Policy
	hasOverride bool
}

func (g *Gateway) apiSimulate(ctx *fasthttp.RequestCtx) (any, *Decision) {
	if !ctx.IsPost() {
		return nil, errBadMethod
	}
	f, aerr := readObject(ctx, false)
	if aerr != nil {
		return nil, aerr
	}
	req := simRequest{hours: 24, samples: 20}
	var ps catalog.Problems
	for k, raw := range f {
		switch k {
		case "hours":
			if err := json.Unmarshal(raw, &req.hours); err != nil || req.hours < 1 || req.hours > 24*31 {
				ps.Add("hours", "must be an integer from 1 to 744")
			}
		case "samples":
			if err := json.Unmarshal(raw, &req.samples); err != nil || req.samples < 0 || req.samples > 1000 {
				ps.Add("samples", "must be an integer from 0 to 1000")
			}
		case "policies":
			doc, err := policy.DecodeDocument(raw)
			if err != nil {
				addProblems(&ps, "policies", err)
			}
			req.doc = doc
		case "principal":
			var s string
			p, ok := identity.Principal{}, false
			if json.Unmarshal(raw, &s) == nil {
				var err error
				p, err = identity.ParsePrincipal(s)
				ok = err == nil
			}
			if !ok {
				ps.Add("principal", `must be a principal ("key:<key_id>", "wallet:0x…")`)
			}
			req.principal = p.String()
		case "override":
			req.hasOverride = true
			if string(bytes.TrimSpace(raw)) != "null" {
				p, err := policy.DecodePolicyAt(raw, "override")
				if err != nil {
					addProblems(&ps, "", err)
				}
				req.override = p
			}
		default:
			ps.Add(k, "unknown field")
		}
	}
	if req.hasOverride && req.principal == "" {
		ps.Add("principal", "required with override")
	}
	if req.doc == nil && !req.hasOverride {
		ps.Add("$", "give a candidate: policies (a policies.json document) or principal and override")
	}
	if err := ps.Err(); err != nil {
		return nil, invalidBody(err)
	}
	res, err := g.simulate(g.state.Load(), req)
	if err != nil {
		var ve *catalog.ValidationError
		if errors.As(err, &ve) {
			return nil, invalidBody(err)
		}
		g.log.Error("simulate", "err", err)
		return nil, apiErr(503, "Ledger unavailable")
	}
	return res, nil
}

func addProblems(ps *catalog.Problems, prefix string, err error) {
	var ve *catalog.ValidationError
	if !errors.As(err, &ve) {
		ps.Add(prefix, "invalid")
		return
	}
	for _, p := range ve.Problems {
		if prefix == "" {
			ps.Add(p.Path, p.Message)
		} else {
			ps.Add(joinPath(prefix, p.Path), p.Message)
		}
	}
}

// simulator replays records under a candidate configuration.
type simulator struct {
	set       *policy.Set
	overrides map[string]*policy.Policy
	tools     map[string]*catalog.Tool
	effs      map[string]*policy.Effective
	quotas    *meter.Quotas
	windows   *meter.Windows
	spend     *meter.Spend
}

func (g *Gateway) simulate(st *state, req simRequest) (*simResult, error) {
	t0 := time.Now()
	doc := st.doc
	if req.doc != nil {
		doc = req.doc
	}
	set, err := policy.Compile(withGroups(doc, st.groups), st.cat)
	if err != nil {
		return nil, err
	}
	sim := &simulator{set: set, overrides: make(map[string]*policy.Policy, len(st.overrides)),
		tools: make(map[string]*catalog.Tool, len(st.cat.Tools)), effs: map[string]*policy.Effective{},
		quotas: meter.NewQuotas(0), windows: meter.NewWindows(), spend: meter.NewSpend()}
	for p, o := range st.overrides {
		sim.overrides[p] = o.raw
	}
	if req.hasOverride {
		if req.override == nil {
			delete(sim.overrides, req.principal)
		} else {
			sim.overrides[req.principal] = req.override
		}
	}
	// Every override must compile under the candidate: a candidate that
	// drops a tier or group still in use is refused like a reload.
	for p, raw := range sim.overrides {
		eff, err := set.Effective(st.overrideTier(p, raw), raw)
		if err != nil {
			return nil, fmt.Errorf("override of %s: %w", p, err)
		}
		sim.effs[p] = eff
	}
	for _, t := range st.cat.Tools {
		sim.tools[t.ID] = t
	}
	now := g.now()
	res := &simResult{Since: now.Add(-time.Duration(req.hours) * time.Hour).UTC(), Until: now.UTC(), Principal: req.principal,
		Current: map[string]int{}, Candidate: map[string]int{}, CurReason: map[string]int{}, CanReason: map[string]int{},
		Flips: map[string]int{}, Samples: []simSample{}}
	q := ledger.Query{Since: res.Since, Until: now, Type: ledger.TypeCall, Principal: req.principal}
	err = g.led.Query(q, func(r *ledger.Record) error {
		res.Records++
		tool := sim.tools[r.Tool]
		if tool == nil || r.Principal == "" || !simDecidable[r.Outcome] {
			return nil
		}
		eff := sim.effective(r.Principal)
		cand := sim.replay(r, tool, eff)
		cur := simOutcome{r.Outcome, r.Reason}
		res.Evaluated++
		res.Current[cur.Outcome]++
		res.Candidate[cand.Outcome]++
		res.CurReason[cur.Outcome+"/"+cur.Reason]++
		res.CanReason[cand.Outcome+"/"+cand.Reason]++
		if cand != cur {
			res.Changed++
			res.Flips[cur.Outcome+"/"+cur.Reason+" → "+cand.Outcome+"/"+cand.Reason]++
			if len(res.Samples) < req.samples {
				res.Samples = append(res.Samples, simSample{Seq: r.Seq, At: r.At.UTC(), Principal: r.Principal, Tool: r.Tool, Current: cur, Candidate: cand})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.ElapsedMS = float64(time.Since(t0).Microseconds()) / 1000
	return res, nil
}

// effective is the candidate policy of principal (cached).
func (s *simulator) effective(principal string) *policy.Effective {
	if e, ok := s.effs[principal]; ok {
		return e
	}
	tier := policy.TierAPIKey
	if p, _ := identity.ParsePrincipal(principal); p.Kind == identity.KindWallet {
		tier = policy.TierUnknownWallet
	}
	e := s.set.Tier(tier)
	s.effs[principal] = e
	return e
}

// replay decides r again under eff on the simulator's meters.
func (s *simulator) replay(r *ledger.Record, t *catalog.Tool, eff *policy.Effective) simOutcome {
	if ok, reason := eff.Decide(t); !ok {
		return simOutcome{outDenied, reason.String()}
	}
	class := int(t.RateClass)
	q := s.quotas.Admit(r.Principal, class, eff.Quota(t.RateClass), r.At, r.Seq)
	undo := func() {
		if !q.At.IsZero() {
			s.quotas.Undo(r.Principal, class, r.Seq)
		}
	}
	if !q.Allowed {
		if q.Limit == 0 {
			return simOutcome{outQuotaExceeded, "rate_class_blocked"}
		}
		return simOutcome{outQuotaExceeded, "rate_class_quota"}
	}
	rules, ix := eff.Windows(t)
	w := s.windows.Admit(r.Principal, rules, r.At)
	if !w.OK {
		undo()
		reason := "quota_window"
		if win, _ := eff.Window(ix[w.Rule]); win.Limit == 0 {
			reason = "quota_window_blocked"
		}
		return simOutcome{outQuotaExceeded, reason}
	}
	undo2 := func() { undo(); s.windows.Undo(r.Principal, rules, w.At) }
	price := t.Price
	var res, gres meter.Reservation
	if price > 0 {
		day, _ := meter.DayOf(r.At, eff.Location())
		capUSD, hasCap := eff.SpendCap()
		var sr meter.SpendResult
		res, sr = s.spend.Reserve(r.Principal, day, price, capUSD, hasCap)
		if !sr.OK {
			undo2()
			return simOutcome{outSpendCapExceeded, "daily_spend_cap"}
		}
		if b, ok := eff.GroupBudget(); ok {
			gday, _ := meter.DayOf(r.At, b.Loc)
			gres, sr = s.spend.Reserve(b.Key, gday, price, b.Limit, true)
			if !sr.OK {
				s.spend.Release(res)
				undo2()
				return simOutcome{outSpendCapExceeded, "group_daily_spend_cap"}
			}
		}
	}
	release := func() { s.spend.Release(res); s.spend.Release(gres); undo2() }
	if eff.NeedsApproval(t) && !bytes.Contains(r.State, []byte(`"approval_id"`)) {
		release()
		return simOutcome{outPendingApproval, "approval_required"}
	}
	cur := simOutcome{r.Outcome, r.Reason}
	switch {
	case simRefusals[r.Outcome]:
		// Refused then, passes now: it would have run (and been billed).
		s.spend.Commit(res, nil)
		s.spend.Commit(gres, nil)
		return simOutcome{Outcome: outAllowed}
	case r.Outcome == outAllowed && r.Cost > 0:
		s.spend.Commit(res, nil)
		s.spend.Commit(gres, nil)
	case r.Outcome == outAllowed || r.Outcome == outUpstreamError || r.Outcome == outSettleFailed:
		// Ran, not billed: keeps its quota places.
		s.spend.Release(res)
		s.spend.Release(gres)
	default:
		release() // refused by what the replay does not re-decide
	}
	return cur
}
