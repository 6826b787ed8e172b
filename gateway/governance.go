package gateway

import (
	"hash/maphash"
	"time"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/policy"
)

// Agent governance in the decide stage (docs/policies.md, "Agent
// governance"): the concurrency cap, more quota windows, the loop and
// spend breakers, group budgets, shadow policies and human approval. Each
// check is a step of decide that returns nil or the Decision that refuses
// the call, and each hold it takes is given back by releaseHolds (every
// refused call) or at the end of the call (conclude), like the quota slot
// and the spend reservation.

// Ledger outcomes of the governance checks (docs/ledger.md).
const (
	outConcurrencyExceeded = "concurrency_exceeded" // max_in_flight (429)
	outPendingApproval     = "pending_approval"     // held for a human decision (202)
)

// governance is the gateway's local governance state: one Governor
// entry per principal holds its concurrency slots, quota windows and
// breakers. The counts are this node's: in a cluster each node caps its
// own calls (docs/cluster.md), except group budgets, which are
// reservations in the shared SpendStore.
type governance struct {
	g    *meter.Governor
	seed maphash.Seed  // of the loop breaker's call hashes
	pair groupReserver // the spend store, when it reserves a member's and its group's cost in one call
}

func newGovernance() governance {
	return governance{g: meter.NewGovernor(), seed: maphash.MakeSeed()}
}

// sweep evicts idle governance state.
func (gv *governance) sweep(now time.Time) {
	gv.g.Sweep(now, 25*time.Hour) // longer than any breaker window or cool-down
}

// Ledger outcome of a tripped breaker (reasons loop_detected, spend_burst).
const outBreakerTripped = "breaker_tripped"

// callHash identifies "the same call" for the loop breaker: the tool, the
// query and the body.
func (g *Gateway) callHash(c *call) uint64 {
	h := maphash.String(g.gov.seed, c.rt.tool.ID)
	h ^= maphash.Bytes(g.gov.seed, c.req.body) * 0x9e3779b97f4a7c15
	h ^= maphash.Bytes(g.gov.seed, c.req.query) * 0xc2b2ae3d27d4eb4f
	return h
}

// admitGoverned runs the checks the Governor keeps for c, in one step
// after the rate-class quota: the loop breaker (429), the concurrency
// caps (429), the quota windows (403) and the spend burst (429). An
// admitted call holds its places in c.gov until it ends.
func (g *Gateway) admitGoverned(c *call) *Decision {
	t, eff := c.rt.tool, c.eff
	gc := meter.GovCall{Class: int(t.RateClass)}
	gc.InFlightAll, gc.InFlightClass = eff.MaxInFlight(t.RateClass)
	rules, ix := eff.Windows(t)
	gc.Windows = rules
	if gc.LoopRepeats, gc.LoopWithin, gc.Cooldown = eff.LoopBreaker(); gc.LoopRepeats > 0 {
		gc.LoopHash = g.callHash(c)
	}
	gc.Burst, gc.BurstWithin, gc.BurstOn = eff.SpendBurst()
	gc.Cost = t.Price
	shadowGov(c, &gc)
	r := g.gov.g.Admit(c.principal(), &gc, c.start, &c.gov)
	g.shadowGovResult(c, r.Shadow)
	switch r.Refused {
	case meter.GovLoop:
		left := ceilSeconds(int64(r.Loop.CooldownLeft))
		d := c.decide(429, outBreakerTripped, "loop_detected", "Repeated identical calls").
			str("reason", "loop_detected").num("repeats", int64(gc.LoopRepeats)).num("cooldown_seconds", int64(left))
		d.RetryAfter = max(left, 1)
		return d
	case meter.GovInFlight:
		reason := "max_in_flight"
		if r.InFlight.PerClass {
			reason = "max_in_flight_class"
		}
		d := c.decide(429, outConcurrencyExceeded, reason, "Concurrency limit exceeded").
			num("limit", int64(r.InFlight.Limit)).num("in_flight", int64(r.InFlight.InFlight))
		d.RetryAfter = 1
		return d
	case meter.GovWindow:
		w, _ := eff.Window(ix[r.Window.Rule])
		k, v := w.Label()
		reset := ceilSeconds(int64(r.Window.ResetIn))
		reason := "quota_window"
		if w.Limit == 0 {
			reason = "quota_window_blocked"
		}
		d := c.decide(403, outQuotaExceeded, reason, "Policy quota exceeded").
			str("window", w.PerLabel()).str(k, v).num("limit", int64(w.Limit)).
			num("calls_in_window", int64(r.Window.Used)).num("reset_in_seconds", int64(reset))
		d.RetryAfter = max(reset, 1)
		return d
	case meter.GovBurst:
		reset := ceilSeconds(int64(r.Burst.ResetIn))
		d := c.decide(429, outBreakerTripped, "spend_burst", "Spend burst limit exceeded").
			str("reason", "spend_burst").usd("spent_usd", r.Burst.Spent).usd("limit_usd", gc.Burst).
			usd("cost_usd", t.Price).num("within_s", int64(gc.BurstWithin/time.Second)).num("reset_in_seconds", int64(reset))
		d.RetryAfter = max(reset, 1)
		return d
	}
	return nil
}

// servedGovernance ends the governance holds of a call whose upstream
// exchange is over (conclude): its concurrency slot goes back; like the
// quota slot, its places in the quota windows and the loop breaker are
// kept whatever the upstream answered; what it holds against spend (the
// spend burst, the group cap) is kept for billing when billable, else
// given back.
func (g *Gateway) servedGovernance(c *call, billable bool) {
	g.gov.g.Served(c.principal(), &c.gov, billable)
	if !billable {
		g.releaseGroup(c)
	}
}

// releaseGovernance gives back every governance hold of a call that was
// not served.
func (g *Gateway) releaseGovernance(c *call) {
	g.gov.g.Release(c.principal(), &c.gov)
	g.releaseGroup(c)
}

// inFlightView is the status endpoint's "in_flight": the calls in flight
// now, in total and per class, with their caps (null: none).
type inFlightView struct {
	All     int                    `json:"all"`
	Limit   *int                   `json:"limit"`
	ByClass map[string]inFlightCap `json:"by_class"`
}

type inFlightCap struct {
	InFlight int  `json:"in_flight"`
	Limit    *int `json:"limit"`
}

func limitPtr(n int) *int {
	if n < 0 {
		return nil
	}
	return &n
}

// governanceStatus adds the governance state of principal under eff to a
// status body.
func (g *Gateway) governanceStatus(out map[string]any, principal string, eff *policy.Effective, now time.Time) {
	v := inFlightView{ByClass: make(map[string]inFlightCap, catalog.NumRateClasses)}
	for c := catalog.RateClass(0); c < catalog.NumRateClasses; c++ {
		all, n := g.gov.g.InFlight(principal, int(c))
		la, lc := eff.MaxInFlight(c)
		v.All, v.Limit = all, limitPtr(la)
		v.ByClass[c.String()] = inFlightCap{InFlight: n, Limit: limitPtr(lc)}
	}
	out["in_flight"] = v
	out["quota_windows"] = g.windowsStatus(principal, eff, now)
	if sh := eff.Shadow(); sh != nil {
		out["shadow_policy"] = sh.View()
	}
	if usd, within, ok := eff.SpendBurst(); ok {
		out["spend_burst"] = map[string]any{"spent_usd": g.gov.g.BurstSpent(principal, within, now),
			"limit_usd": usd, "within_s": int64(within / time.Second)}
	}
}

// windowView is one entry of the status endpoint's "quota_windows".
type windowView struct {
	Class    string `json:"class,omitempty"`
	Tool     string `json:"tool,omitempty"`
	Window   string `json:"window"`
	Used     int    `json:"used"`
	Limit    int    `json:"limit"`
	ResetInS int    `json:"reset_in_s"`
}

func (g *Gateway) windowsStatus(principal string, eff *policy.Effective, now time.Time) []windowView {
	n := eff.NumWindows()
	out := make([]windowView, 0, n)
	rules := make([]policy.WindowRule, n)
	for i := range rules {
		_, rules[i] = eff.Window(i)
	}
	used, resets := make([]int, n), make([]time.Duration, n)
	g.gov.g.PeekWindows(principal, rules, now, used, resets)
	for i := 0; i < n; i++ {
		w, _ := eff.Window(i)
		used, reset := used[i], resets[i]
		v := windowView{Tool: w.Tool, Window: w.PerLabel(), Used: used, Limit: w.Limit, ResetInS: ceilSeconds(int64(reset))}
		if w.Tool == "" {
			v.Class = w.Class.String()
		}
		out = append(out, v)
	}
	return out
}
