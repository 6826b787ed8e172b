package gateway

import (
	"time"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// conclude is the last stage of an allowed call (after the upstream): an
// after_upstream payment is settled now for a served call; the call is
// billed only when served (the upstream answered < 400); its records are
// committed before the answer. upFail is the upstream stage's failure,
// nil when an answer came (c.upStatus).
func (g *Gateway) conclude(c *call, upFail *Decision) *Decision {
	paidAhead := c.pay != nil && c.pay.settled // before_upstream: the money has moved
	billable := c.reserved && upFail == nil && c.upStatus < 400
	var cost money.Micros
	if billable {
		cost = g.callCost(c) // a metered tool's actual cost (metered.go)
	}
	if billable && c.pay != nil && !paidAhead {
		if c.pay.upto {
			c.pay.amount = cost // upto: the payer pays what the call cost
		}
		if d := g.settle(c); d != nil { // body withheld until paid
			return g.finish(c, d)
		}
	}
	g.servedGovernance(c, billable) // governance.go
	if !billable && c.pay != nil && !paidAhead {
		g.releaseNonce(c) // not served: the authorization stays unspent
	}
	if upFail != nil && !paidAhead {
		// The call reached the upstream (or tried to): it keeps its
		// quota slot; the reservation goes back.
		c.quotaHeld = false
		return g.finish(c, upFail)
	}

	outcome, reason, status := outAllowed, "", c.upStatus
	if upFail != nil {
		outcome, reason, status = upFail.Outcome, upFail.Reason, upFail.Status
	} else if c.upStatus >= 400 && !billable {
		reason = "upstream_status_not_billed"
	}
	if c.pay != nil && c.pay.settled && c.pay.result.Pending {
		reason = "settlement_pending"
	}

	var rec *ledger.Record
	var ticket ledger.Ticket
	switch {
	case billable && !c.prepaid:
		// No balance moves: the records need no ordering against the
		// principal's other calls, so no callback (which would escape to
		// the heap through the SpendStore interface).
		c.cost = cost
		rec = g.callRecord(c, outcome, reason, status)
		g.commitGroup(c)
		if !g.commitSpend(c, nil) {
			g.log.Error("spend commit not confirmed by the shared store; billed in the ledger", "request_id", rec.RequestID,
				"principal", rec.Principal, "cost_micro_usd", int64(c.cost))
			g.metrics.sharedFailures.Inc()
		}
		c.reserved = false
		if c.pay.moved() {
			ticket = g.append(c, rec, settlementRecord(c))
		} else {
			ticket = g.append(c, rec)
		}
	case billable:
		rec, ticket = g.concludePrepaid(c, cost, outcome, reason, status)
	case paidAhead:
		// before_upstream: settled, then not served. The payer's money
		// moved for nothing: the call is not billed, and the amount is
		// owed back to the payer (ledger, metric, status).
		if c.reserved {
			g.spend.Release(c.res)
			c.reserved = false
		}
		rec = g.callRecord(c, outcome, reason, status)
		recs := []*ledger.Record{rec}
		switch {
		case c.pay.result.Success:
			recs = append(recs, settlementRecord(c), g.owe(c))
		case g.reconciler() != nil:
			// Pending: the money may not have moved. Owed once
			// reconciliation finds the settlement (reconcileLater).
			c.pay.oweOnSettle = true
		default:
			recs = append(recs, g.owe(c)) // nobody will know better: owed, as if settled
		}
		ticket = g.append(c, recs...)
	default:
		if c.reserved {
			g.spend.Release(c.res)
			c.reserved = false
		}
		rec = g.callRecord(c, outcome, reason, status)
		ticket = g.append(c, rec)
	}
	var t0 time.Time
	if c.pay != nil {
		t0 = g.now() // a paid call's phases (run's debug log)
	}
	if err := g.wait(ticket, true); err != nil {
		return g.ledgerFailed(c, err)
	}
	if c.pay != nil {
		c.pay.ledgerDur = g.now().Sub(t0)
	}
	g.observe(c, rec)
	if c.pay.moved() {
		g.stats.addRevenue(c.start, c.pay.amount) // its settlement record is committed with rec
	}
	c.allowed = true
	return upFail // nil: the upstream's answer goes back
}

// concludePrepaid commits a served call billed from prepaid credits and
// appends its records from the commit's callback (apart from conclude,
// so that the variables the callback captures live on the heap only on
// this path, not on every call's).
func (g *Gateway) concludePrepaid(c *call, cost money.Micros, outcome, reason string, status int) (rec *ledger.Record, ticket ledger.Ticket) {
	// Prepaid credits: the debit and its balance_after are appended
	// while the balance cannot change, so that records follow the
	// order of balance changes (a restart restores the latest).
	c.cost = cost
	rec = g.callRecord(c, outcome, reason, status)
	g.commitGroup(c)
	committed := g.commitSpend(c, func(cm meter.Committed) {
		switch {
		case c.pay.moved():
			ticket = g.append(c, rec, settlementRecord(c))
		case cm.HasBalance:
			bal := cm.BalanceAfter
			ticket = g.append(c, rec, &ledger.Record{
				Type: ledger.TypeTxn, At: c.start, RequestID: rec.RequestID, Principal: rec.Principal,
				Tool: rec.Tool, Kind: ledger.KindDebit, Amount: c.cost, BalanceAfter: &bal,
			})
		default:
			ticket = g.append(c, rec)
		}
	})
	if !committed {
		// Only a shared store answers false for an open reservation:
		// it could not be reached, or the reservation had expired.
		// The call was served and this node bills it in its ledger,
		// the durable record; the node's contribution in the shared
		// store is set from the ledger at the next start (Restore).
		// The balance after a credits debit is unknown here, so no
		// debit record is written.
		g.log.Error("spend commit not confirmed by the shared store; billed in the ledger", "request_id", rec.RequestID,
			"principal", rec.Principal, "cost_micro_usd", int64(c.cost))
		g.metrics.sharedFailures.Inc()
		recs := []*ledger.Record{rec}
		if c.pay.moved() {
			recs = append(recs, settlementRecord(c))
		}
		ticket = g.append(c, recs...)
	}
	c.reserved = false
	return rec, ticket
}
