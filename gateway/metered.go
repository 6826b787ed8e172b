package gateway

import (
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// Metered prices (docs/x402.md, "Metered prices"). A tool with
// "price": {"max_usd": "0.10", "metered": true} reserves its maximum like
// any priced call; its upstream reports what the call cost in the
// response header X-Toolgate-Cost-Usd (dollars, "0.0042"), which the
// gateway strips before the caller sees it. An API-key call is billed
// that cost, capped at the maximum; a report that is missing or not a
// non-negative amount bills the maximum (logged). An x402 payer with the
// upto scheme (offered where Permit2 is configured) is settled that cost
// too; one paying with the exact scheme pays, and is billed, the maximum
// (docs/x402.md).

// hdrToolgateCost is the upstream's cost report.
const hdrToolgateCost = "X-Toolgate-Cost-Usd"

// callCost is what a served, billable call costs.
func (g *Gateway) callCost(c *call) money.Micros {
	t := c.rt.tool
	if !t.Metered || (c.pay != nil && !c.pay.upto) || c.upResp == nil {
		return t.Price
	}
	v := c.upResp.Header.Peek(hdrToolgateCost)
	if len(v) == 0 {
		g.log.Warn("metered tool reported no cost: billed its maximum", "request_id", string(c.reqID), "tool", t.ID)
		g.metrics.meterReports.WithLabelValues(t.ID, "missing").Inc()
		return t.Price
	}
	cost, err := money.Parse(string(v))
	if err != nil || cost < 0 {
		g.log.Warn("metered tool reported a malformed cost: billed its maximum", "request_id", string(c.reqID), "tool", t.ID)
		g.metrics.meterReports.WithLabelValues(t.ID, "malformed").Inc()
		return t.Price
	}
	if cost > t.Price {
		g.log.Warn("metered tool reported a cost above its maximum: capped", "request_id", string(c.reqID), "tool", t.ID,
			"reported_micro_usd", int64(cost), "max_micro_usd", int64(t.Price))
		g.metrics.meterReports.WithLabelValues(t.ID, "capped").Inc()
		return t.Price
	}
	g.metrics.meterReports.WithLabelValues(t.ID, "reported").Inc()
	return cost
}

// costCommitter is a SpendStore that commits less than it reserved
// (*meter.Spend is one).
type costCommitter interface {
	CommitCost(r meter.Reservation, cost money.Micros, fn func(meter.Committed)) bool
}

// commitSpend commits c's reservation at c.cost. A store that cannot
// commit less than it reserved gets the reservation back and a fresh
// reservation of the cost, uncapped (the maximum was within the cap).
func (g *Gateway) commitSpend(c *call, fn func(meter.Committed)) bool {
	if c.cost == c.rt.tool.Price {
		return g.spend.Commit(c.res, fn)
	}
	if cc, ok := g.spend.(costCommitter); ok {
		return cc.CommitCost(c.res, c.cost, fn)
	}
	g.spend.Release(c.res)
	res, sr := g.spend.Reserve(c.principal(), c.day, c.cost, 0, false)
	if sr.Err != nil || !sr.OK {
		return false
	}
	return g.spend.Commit(res, fn)
}
