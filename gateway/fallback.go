package gateway

import (
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// LocalReserver is a shared SpendStore that can reserve from what this
// node already holds in the shared store (a slice of the day's budget
// reserved there for this node), without asking the shared store: the
// fallback of an open principal's priced call while the shared store
// cannot be reached. It never passes a cap: what it hands out was held
// for this node in the shared store beforehand. ok is false when the
// node holds nothing usable for the principal (the call is then refused
// as unavailable). Optional (a SpendStore implementing it).
type LocalReserver interface {
	ReserveLocal(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) (r meter.Reservation, res meter.SpendResult, ok bool)
}

// reserveFallback reserves an open principal's priced call from the
// node's local share when the shared store failed; ok false when there
// is none (or the principal is strict).
func (g *Gateway) reserveFallback(c *call, day meter.Day, capUSD money.Micros, hasCap bool) (meter.Reservation, meter.SpendResult, bool) {
	lr, isLocal := g.spend.(LocalReserver)
	if !isLocal || c.eff.FailClosed() {
		return meter.Reservation{}, meter.SpendResult{}, false
	}
	return lr.ReserveLocal(c.principal(), day, c.rt.tool.Price, capUSD, hasCap)
}
