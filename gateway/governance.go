package gateway

import (
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
)

// governance is the gateway's local governance state. The counts are this
// node's: in a cluster each node caps its own calls (docs/cluster.md),
// except group budgets, which are reserved in the shared SpendStore.
type governance struct {
	inFlight *meter.InFlight
}

func newGovernance() governance {
	return governance{inFlight: meter.NewInFlight()}
}

// sweep evicts idle governance state.
func (gv *governance) sweep() {
	gv.inFlight.Sweep()
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
}
