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

// governance is the gateway's local governance state. The counts are this
// node's: in a cluster each node caps its own calls (docs/cluster.md),
// except group budgets, which are reserved in the shared SpendStore.
type governance struct {
	inFlight *meter.InFlight
	windows  *meter.Windows
	breakers *meter.Breakers
	seed     maphash.Seed // of the loop breaker's call hashes
}

func newGovernance() governance {
	return governance{inFlight: meter.NewInFlight(), windows: meter.NewWindows(),
		breakers: meter.NewBreakers(), seed: maphash.MakeSeed()}
}

// sweep evicts idle governance state.
func (gv *governance) sweep(now time.Time) {
	gv.inFlight.Sweep()
	gv.windows.Sweep(now)
	gv.breakers.Sweep(now, 25*time.Hour) // longer than any breaker window or cool-down
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

// admitLoop refuses the next identical call of a principal that repeats
// itself (loop_breaker) with 429 until the cool-down ends.
func (g *Gateway) admitLoop(c *call) *Decision {
	repeats, within, cooldown := c.eff.LoopBreaker()
	if repeats == 0 {
		return nil
	}
	h := g.callHash(c)
	r := g.gov.breakers.Loop(c.principal(), h, repeats, within, cooldown, c.start)
	if !r.OK {
		left := ceilSeconds(int64(r.CooldownLeft))
		d := c.decide(429, outBreakerTripped, "loop_detected", "Repeated identical calls").
			str("reason", "loop_detected").num("repeats", int64(repeats)).num("cooldown_seconds", int64(left))
		d.RetryAfter = max(left, 1)
		return d
	}
	c.loopHash, c.loopAt = h, r.At
	return nil
}

// admitBurst holds the call's price against the spend_burst window, or
// refuses it with 429.
func (g *Gateway) admitBurst(c *call) *Decision {
	price := c.rt.tool.Price
	usd, within, ok := c.eff.SpendBurst()
	if !ok || price <= 0 {
		return nil
	}
	r := g.gov.breakers.Burst(c.principal(), price, usd, within, c.start)
	if !r.OK {
		reset := ceilSeconds(int64(r.ResetIn))
		d := c.decide(429, outBreakerTripped, "spend_burst", "Spend burst limit exceeded").
			str("reason", "spend_burst").usd("spent_usd", r.Spent).usd("limit_usd", usd).
			usd("cost_usd", price).num("within_s", int64(within/time.Second)).num("reset_in_seconds", int64(reset))
		d.RetryAfter = max(reset, 1)
		return d
	}
	c.burstID = r.ID
	return nil
}

// releaseUnbilled gives back what a call holds against its spend
// (spend_burst) when it is not billed; conclude calls it for a served
// call that is not billable, releaseGovernance for a refused one.
func (g *Gateway) releaseUnbilled(c *call) {
	g.releaseGroup(c)
	if c.burstID != 0 {
		g.gov.breakers.BurstUndo(c.principal(), c.burstID)
		c.burstID = 0
	}
}

// admitWindows counts c in the policy's quota windows (quotas), or
// refuses it with 403 naming the window that is full.
func (g *Gateway) admitWindows(c *call) *Decision {
	rules, ix := c.eff.Windows(c.rt.tool)
	if len(rules) == 0 {
		return nil
	}
	r := g.gov.windows.Admit(c.principal(), rules, c.start)
	if !r.OK {
		w, _ := c.eff.Window(ix[r.Rule])
		k, v := w.Label()
		reset := ceilSeconds(int64(r.ResetIn))
		reason := "quota_window"
		if w.Limit == 0 {
			reason = "quota_window_blocked"
		}
		d := c.decide(403, outQuotaExceeded, reason, "Policy quota exceeded").
			str("window", w.PerLabel()).str(k, v).num("limit", int64(w.Limit)).
			num("calls_in_window", int64(r.Used)).num("reset_in_seconds", int64(reset))
		d.RetryAfter = max(reset, 1)
		return d
	}
	c.winRules, c.winAt = rules, r.At
	return nil
}

// keepGovernance is called when a call reached its upstream: like the
// quota slot, its place in the quota windows is kept whatever the
// upstream answered.
func (g *Gateway) keepGovernance(c *call) {
	c.winRules, c.winAt = nil, 0
	c.loopAt = 0
}

// admitInFlight takes a concurrency slot (max_in_flight,
// max_in_flight_class) for c, or refuses it at once with 429.
func (g *Gateway) admitInFlight(c *call) *Decision {
	class := int(c.rt.tool.RateClass)
	all, perClass := c.eff.MaxInFlight(c.rt.tool.RateClass)
	r := g.gov.inFlight.Acquire(c.principal(), class, all, perClass)
	if !r.OK {
		reason := "max_in_flight"
		if r.PerClass {
			reason = "max_in_flight_class"
		}
		d := c.decide(429, outConcurrencyExceeded, reason, "Concurrency limit exceeded").
			num("limit", int64(r.Limit)).num("in_flight", int64(r.InFlight))
		d.RetryAfter = 1
		return d
	}
	c.inFlight = r.Held
	return nil
}

// releaseInFlight gives back c's concurrency slot, once: when the call is
// refused (releaseHolds) or its upstream exchange has ended, whatever its
// result (conclude).
func (g *Gateway) releaseInFlight(c *call) {
	if c.inFlight {
		g.gov.inFlight.Release(c.principal(), int(c.rt.tool.RateClass))
		c.inFlight = false
	}
}

// releaseGovernance gives back every governance hold of a call that was
// not served.
func (g *Gateway) releaseGovernance(c *call) {
	g.releaseInFlight(c)
	if c.winAt != 0 {
		g.gov.windows.Undo(c.principal(), c.winRules, c.winAt)
		c.winRules, c.winAt = nil, 0
	}
	if c.loopAt != 0 {
		g.gov.breakers.LoopUndo(c.principal(), c.loopHash, c.loopAt)
		c.loopAt = 0
	}
	g.releaseUnbilled(c)
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
		all, n := g.gov.inFlight.Count(principal, int(c))
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
		out["spend_burst"] = map[string]any{"spent_usd": g.gov.breakers.BurstSpent(principal, within, now),
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
	out := make([]windowView, 0, eff.NumWindows())
	for i := 0; i < eff.NumWindows(); i++ {
		w, rule := eff.Window(i)
		used, reset := g.gov.windows.Peek(principal, rule, now)
		v := windowView{Tool: w.Tool, Window: w.PerLabel(), Used: used, Limit: w.Limit, ResetInS: ceilSeconds(int64(reset))}
		if w.Tool == "" {
			v.Class = w.Class.String()
		}
		out = append(out, v)
	}
	return out
}
