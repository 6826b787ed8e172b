package gateway

import (
	"sync"
	"time"

	"github.com/toolgate/toolgate/identity"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
)

// KindX402Owed is the txn kind of a payment settled ahead of a call
// (settle: before_upstream) that was then not served: the upstream could
// not be reached, failed or answered >= 400. The call is not billed; the
// amount is owed back to the payer. BalanceAfter is the payer's total owed
// after this record, so a restart rebuilds it from the balance index.
const KindX402Owed = "x402_owed"

// owedBook is the amount owed to each payer, in micro-USD.
type owedBook struct {
	mu sync.Mutex
	m  map[string]money.Micros // by principal ("wallet:0x…")
}

func (o *owedBook) add(principal string, amount money.Micros) money.Micros {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[string]money.Micros)
	}
	total := o.m[principal] + amount
	if total < o.m[principal] { // overflow: keep the maximum, never wrap
		total = money.Micros(1<<63 - 1)
	}
	o.m[principal] = total
	return total
}

func (o *owedBook) get(principal string) money.Micros {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[principal]
}

func (o *owedBook) restore(principal string, total money.Micros) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[string]money.Micros)
	}
	o.m[principal] = total
}

// isOwedPrincipal reports whether a principal's balance index entry is an
// owed total (wallets) rather than a prepaid balance (keys).
func isOwedPrincipal(principal string) bool {
	p, _ := identity.ParsePrincipal(principal)
	return p.Kind == identity.KindWallet
}

// owe records that c's payment, settled ahead, bought nothing: it returns
// the txn record and counts it.
func (g *Gateway) owe(c *call) *ledger.Record {
	return g.oweRecord(c.principal(), c.rt.tool.ID, string(c.reqID), c.pay.verified.Payer, c.pay.result.Network, c.rt.tool.Price, c.start)
}

// oweRecord counts amount as owed to principal and returns its txn record.
func (g *Gateway) oweRecord(principal, tool, reqID, payer, network string, amount money.Micros, at time.Time) *ledger.Record {
	total := g.owed.add(principal, amount)
	g.metrics.owedMicro.Add(float64(amount))
	g.log.Warn("payment settled for a call that was not served: owed to the payer",
		"request_id", reqID, "principal", principal, "amount_micros", int64(amount))
	return &ledger.Record{Type: ledger.TypeTxn, At: at, RequestID: reqID, Principal: principal,
		Tool: tool, Kind: KindX402Owed, Amount: amount, BalanceAfter: &total, Payer: payer, Network: network}
}
