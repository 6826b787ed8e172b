package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
)

// The stages of a tool call (DESIGN.md section 1), in the order run takes
// them. Each is a method that returns a value: nil to go on, or the
// Decision that ends the call. run is the one place that sequences them;
// a front end fills c.req, calls run, and renders what it returns in its
// protocol (respond.go for REST):
//
//	admit     space guard, method                     (this file)
//	identify  authenticators in order                 (this file, auth.go)
//	decide    policy → quota → spend/credits          (this file)
//	confirm   x402: remote verify; before_upstream settle (payment.go)
//	upstream  the tool's upstream call                (proxy.go, upstream.go;
//	          with verify_overlap beside the remote verify, overlap.go)
//	conclude  after_upstream settle, bill, record     (record.go)
//
// run returns nil when the upstream's answer (c.upResp, c.body) is to be
// passed on; otherwise the decision to render. Either way the call has
// been recorded, or the decision says it could not be.
func (g *Gateway) run(c *call) *Decision {
	g.running.Add(1)
	d := g.stages(c)
	g.running.Add(-1)
	if c.claim != nil || c.pay != nil {
		g.keepAnswer(c, d)
	}
	if c.pay != nil && c.pay.reconcile {
		g.reconcileLater(c, c.pay.result)
	}
	if c.pay != nil && c.allowed && g.log.Enabled(context.Background(), slog.LevelDebug) {
		// Where a paid call's time went (BENCHMARKS.md "## x402"):
		// durations, and offsets from the start (start_unix_us, the
		// wall clock, to line it up with the client's and the
		// facilitator's timestamps).
		pc := c.pay
		g.log.Debug("paid call phases", "request_id", string(c.reqID), "start_unix_us", c.start.UnixMicro(),
			"total_us", g.now().Sub(c.start).Microseconds(),
			"identified_at_us", pc.identAt.Microseconds(), "decided_at_us", pc.decideAt.Microseconds(),
			"verify_at_us", pc.verifyAt.Microseconds(), "verify_us", pc.verifyDur.Microseconds(),
			"upstream_at_us", c.upAt.Microseconds(), "upstream_us", c.upLatency.Microseconds(),
			"settle_at_us", pc.settleAt.Microseconds(), "settle_us", pc.settleDur.Microseconds(),
			"ledger_us", pc.ledgerDur.Microseconds())
	}
	return d
}

// stages runs the stages in order (see run).
func (g *Gateway) stages(c *call) *Decision {
	if d := g.admit(c); d != nil {
		return g.finish(c, d)
	}
	d := g.identify(c)
	if c.pay != nil {
		c.pay.identAt = g.now().Sub(c.start)
	}
	if d == nil && c.pay == nil && len(c.req.idemKey) > 0 {
		d = g.claimKey(c) // a retry is answered before it counts against quota or spend
	}
	if d == nil {
		d = g.decide(c)
	}
	decided := g.now().Sub(c.start)
	if c.pay != nil {
		c.pay.decideAt = decided
	}
	g.metrics.decision.Observe(seconds(decided))
	if d != nil {
		return g.finish(c, d)
	}
	if g.overlaps(c) { // overlap.go
		upFail, refused := g.upstreamVerifying(c)
		if refused != nil {
			return g.finish(c, refused)
		}
		return g.conclude(c, upFail)
	}
	if c.pay != nil {
		if d := g.confirm(c); d != nil {
			return g.finish(c, d)
		}
	}
	return g.conclude(c, g.upstream(c))
}

// admit refuses what cannot be served at all: a store too full to record
// (billed calls, and all calls under fail_mode strict), a method the tool
// does not take.
func (g *Gateway) admit(c *call) *Decision {
	if g.space.low.Load() {
		// Nothing can be recorded safely. Billed calls are refused;
		// free calls follow fail_mode (open: served, logged unrecorded).
		if c.rt.tool.Price > 0 || c.st.set.FailMode() == policy.ModeStrict {
			c.norecord = true
			g.log.Warn("call refused: store low on space", "request_id", string(c.reqID), "tool", c.rt.tool.ID)
			return spaceDenial
		}
		c.unrecorded = true
	}
	if !c.rt.tool.AllowsMethod(c.req.method) {
		d := c.decide(405, outMethodNotAllowed, "method_not_allowed", "Method not allowed").
			str("tool", c.rt.tool.ID).str("allow", c.rt.allow)
		d.Allow = c.rt.allow
		return d
	}
	return nil
}

var (
	bodyMissingKey = fixed(401, outUnauthenticated, "missing_api_key", "API key required").
			str("hint", "send X-API-Key: it-… or Authorization: Bearer it-…")
	bodyKeyRequired402 = fixed(402, outPaymentRequired, "no_payment", "Payment required").
				str("hint", "this gateway takes API keys for this tool (X-API-Key: it-…)")
)

// identify resolves the caller to a principal (stage 2): the first
// authenticator whose kind the credentials are decides. Without any, a
// priced tool asks for a payment (before any input validation) and a free
// tool for a key.
func (g *Gateway) identify(c *call) *Decision {
	for _, a := range g.auths {
		id, mine, d, err := a.authenticate(c)
		if !mine && err == nil {
			continue
		}
		c.who, c.tier, c.pay = id.who, id.tier, id.pay
		if err != nil {
			g.log.Error("identify", "request_id", string(c.reqID), "err", err)
			var se *storeError
			if errors.As(err, &se) {
				return se.d
			}
			return fixed(503, outPaymentUnavailable, "store_unavailable", "Gateway store unavailable; nothing was charged")
		}
		if d != nil {
			return d
		}
		c.eff = id.eff
		if c.eff == nil {
			c.eff = c.st.effective(c.tier, c.principal())
		}
		return nil
	}
	switch {
	case c.rt.offer != nil:
		if d := g.unpaidAnswer(c); d != nil {
			return d
		}
		d := c.decide(402, outPaymentRequired, "no_payment", "Payment required")
		d.Offer = c.rt.offer
		return d
	case c.rt.tool.Price > 0:
		return bodyKeyRequired402
	}
	if c.st.auth != nil {
		return c.st.missingCredential
	}
	return bodyMissingKey
}

// decide applies policy (stage 3), quota (4) and spend (5). On success the
// quota slot and the spend reservation are held by c.
func (g *Gateway) decide(c *call) *Decision {
	t := c.rt.tool
	if sh := c.eff.Shadow(); sh != nil {
		g.evalShadow(c, sh)
	}
	if ok, reason := c.eff.Decide(t); !ok {
		return c.decide(403, outDenied, reason.String(), "Tool access denied by policy").
			str("tool", t.ID).str("reason", reason.String())
	}
	principal := c.principal()
	limit := c.eff.Quota(t.RateClass)
	id := g.callIDs.Add(1)
	var (
		day          meter.Day
		resetAt      time.Time
		capUSD       money.Micros
		hasCap       bool
		q            meter.QuotaResult
		res          meter.Reservation
		sr           meter.SpendResult
		reservedOnce bool  // quota and spend decided in one step
		spendDown    error // the shared spend store failed: the local share decides
	)
	if t.Price > 0 {
		day, resetAt = meter.DayOf(c.start, c.eff.Location())
		capUSD, hasCap = c.eff.SpendCap()
	}
	if t.Price > 0 && g.opts.AdmitReserve != nil {
		q, res, sr = g.opts.AdmitReserve.AdmitReserve(principal, int(t.RateClass), limit, c.start, id, day, t.Price, capUSD, hasCap)
		reservedOnce = true
		if q.Err != nil {
			// A priced call is refused in either fail mode, unless an
			// open principal's call fits the node's local shares of the
			// quota (below) and of the budget (fallback.go).
			if _, isLocal := g.spend.(LocalReserver); !isLocal || c.eff.FailClosed() {
				g.log.Error("shared quota and spend store", "request_id", string(c.reqID), "err", q.Err)
				g.metrics.sharedFailures.Inc()
				return sharedUnavailable
			}
			reservedOnce, spendDown = false, q.Err
		}
	} else {
		q = g.quotas.Admit(principal, int(t.RateClass), limit, c.start, id)
	}
	if q.Err != nil {
		// The shared store could not decide. Strict principals are
		// refused; open ones are counted by this node alone.
		g.log.Error("shared quota store", "request_id", string(c.reqID), "err", q.Err)
		g.metrics.sharedFailures.Inc()
		if c.eff.FailClosed() {
			g.releaseHolds(c)
			return sharedUnavailable
		}
		q = g.localQuotas.Admit(principal, int(t.RateClass), limit, c.start, id)
		c.quotaLocal = true
	}
	if c.shadowPending {
		g.shadowQuota(c, q, limit)
	}
	if !q.Allowed {
		reset := ceilSeconds(int64(q.ResetIn))
		reason := "rate_class_quota"
		if q.Limit == 0 {
			reason = "rate_class_blocked"
		}
		d := c.decide(403, outQuotaExceeded, reason, "Policy rate class quota exceeded").
			str("rate_class", t.RateClass.String()).num("limit", int64(q.Limit)).
			num("calls_this_minute", int64(q.Used)).num("reset_in_seconds", int64(reset))
		d.RetryAfter = max(reset, 1)
		g.releaseHolds(c)
		return d
	}
	c.quotaHeld, c.quotaID = !q.At.IsZero(), id
	if d := g.admitGoverned(c); d != nil { // governance.go
		g.releaseHolds(c)
		return d
	}
	if t.Price > 0 {
		var group *groupReservation
		if !reservedOnce {
			if spendDown == nil {
				res, sr, group = g.reserveSpend(c, principal, day, capUSD, hasCap) // groups.go
				spendDown = sr.Err
			}
			if spendDown != nil {
				var ok bool
				group = nil // the group's cap is reserved on its own (admitGroup)
				if res, sr, ok = g.reserveFallback(c, day, capUSD, hasCap); !ok {
					sr.Err = spendDown
				}
			}
		}
		if sr.Err != nil {
			// Neither a cap nor a balance can be checked by this node
			// alone without risking to exceed it: refused, in either
			// fail mode.
			g.log.Error("shared spend store", "request_id", string(c.reqID), "err", sr.Err)
			g.metrics.sharedFailures.Inc()
			g.releaseHolds(c)
			return sharedUnavailable
		}
		if !sr.OK {
			g.releaseHolds(c) // a refused call costs nothing, quota included
			if sr.Reason == meter.ReasonInsufficientCredits {
				return c.decide(402, outInsufficientCredits, "insufficient_credits", "Insufficient credits").
					usd("balance_usd", sr.Balance).usd("cost_usd", t.Price)
			}
			return g.capExceeded(c, sr, resetAt)
		}
		c.reserved, c.res, c.day, c.prepaid = true, res, day, sr.HasBalance
		g.shadowSpend(c, sr.SpentToday)
		if d := g.admitGroup(c, group); d != nil {
			g.releaseHolds(c)
			return d
		}
	}
	g.shadowEnd(c)
	if d := g.admitApproval(c); d != nil {
		g.releaseHolds(c) // held: nothing is reserved or billed before approval
		return d
	}
	return nil
}

// sharedUnavailable refuses a call the cluster's shared state could not
// decide (Redis unreachable): nothing was run or charged.
var sharedUnavailable = fixed(503, outStoreUnavailable, "shared_state_unavailable", "shared state unavailable; nothing was charged")

// capExceeded is the 429 of a call the daily cap refuses. spend_today_usd
// is what was spent (committed), reserved_usd what calls in flight hold.
func (g *Gateway) capExceeded(c *call, sr meter.SpendResult, resetAt time.Time) *Decision {
	reset := ceilSeconds(int64(resetAt.Sub(c.start)))
	d := c.decide(429, outSpendCapExceeded, "daily_spend_cap", "Daily spend cap exceeded").
		usd("spend_today_usd", sr.SpentToday-sr.Reserved).usd("reserved_usd", sr.Reserved).
		usd("spend_limit_usd", sr.Limit).usd("cost_usd", c.rt.tool.Price).
		at("reset_at", resetAt).num("reset_in_seconds", int64(reset))
	d.RetryAfter = reset
	if sr.SpentToday-sr.Reserved <= sr.Limit-c.rt.tool.Price {
		// Only calls in flight hold the cap: they commit or release
		// within their timeouts, so look again soon, not tomorrow.
		d.RetryAfter = 1
	}
	return d
}

// finish ends a call refused by d: nothing reached the upstream (or what
// did was not served) and nothing is billed. It gives back the call's
// holds, records the call (unidentified callers past their burst are
// counted in aggregate, see anon.go) and returns the decision to render.
func (g *Gateway) finish(c *call, d *Decision) *Decision {
	g.releaseHolds(c)
	g.releaseNonce(c) // a refused payment is released unspent
	if c.norecord {
		return d
	}
	return g.recordRefused(c, d, c.rt.tool.ID, "")
}

// recordRefused records a refused call and returns d, or the ledger's
// failure. An unidentified caller past its burst is counted in aggregate
// instead (anon.go), under aggTool. recTool, if set, is the record's tool
// (the path or name asked for, when no tool matched).
func (g *Gateway) recordRefused(c *call, d *Decision, aggTool, recTool string) *Decision {
	if c.who.IsZero() && !c.unrecorded && g.anon.absorb(c.req.source, d.Outcome, d.Reason, aggTool, d.Status, c.start) {
		g.metrics.calls.WithLabelValues(aggTool, d.Outcome, d.Reason).Inc()
		g.stats.add(c.start, "", aggTool, d.Outcome, d.Reason, 0, 1)
		return d
	}
	rec := g.callRecord(c, d.Outcome, d.Reason, d.Status)
	if recTool != "" {
		rec.Tool = recTool
	}
	if err := g.wait(g.append(c, rec), false); err != nil {
		return g.ledgerFailed(c, err)
	}
	g.observe(c, rec)
	if g.opts.Denials != nil && !c.who.IsZero() {
		g.opts.Denials.Add(rec.Principal, Denial{At: rec.At.UTC(), Tool: rec.Tool, Reason: rec.Reason, Status: rec.Status})
	}
	return d
}

// releaseHolds gives back the quota slot, spend reservation and
// governance holds (governance.go) of a call that was not served.
func (g *Gateway) releaseHolds(c *call) {
	g.releaseGovernance(c)
	if c.reserved {
		g.spend.Release(c.res)
		c.reserved = false
	}
	if c.quotaHeld {
		q := g.quotas
		if c.quotaLocal {
			q = g.localQuotas
		}
		q.Undo(c.principal(), int(c.rt.tool.RateClass), c.quotaID)
		c.quotaHeld = false
	}
}

// callRecord builds the ledger record of this call.
func (g *Gateway) callRecord(c *call, outcome, reason string, status int) *ledger.Record {
	rec := &ledger.Record{
		Type:              ledger.TypeCall,
		At:                c.start,
		RequestID:         string(c.reqID),
		Principal:         c.principal(),
		Outcome:           outcome,
		Reason:            reason,
		Status:            status,
		Cost:              c.cost,
		LatencyUS:         g.now().Sub(c.start).Microseconds(),
		UpstreamStatus:    c.upStatus,
		UpstreamLatencyUS: c.upLatency.Microseconds(),
	}
	if c.rt != nil {
		rec.Tool = c.rt.tool.ID
		rec.RateClass = c.rt.tool.RateClass.String()
	}
	if !c.who.IsZero() {
		rec.Tier = c.tier.String()
	}
	if c.cost > 0 {
		rec.SpendDay = dayLabel(c.day)
	}
	if c.pay != nil && c.rt != nil && c.rt.offer != nil {
		rec.Payment = paymentRecord(c)
	}
	if c.req.protocol != "rest" {
		rec.Protocol = c.req.protocol
	}
	rec.State = g.callState(c)
	rec.TokenID, rec.ClientID = c.tokJTI, c.tokClient
	return rec
}

// dayLabel returns d.String() from a one-entry cache: nearly every
// call's record names the same spend day, and formatting it allocated on
// each.
func dayLabel(d meter.Day) string {
	if l := lastDayLabel.Load(); l != nil && l.day == d {
		return l.s
	}
	l := &dayLabelEntry{day: d, s: d.String()}
	lastDayLabel.Store(l)
	return l.s
}

type dayLabelEntry struct {
	day meter.Day
	s   string
}

var lastDayLabel atomic.Pointer[dayLabelEntry]

var ledgerUnavailable = fixed(503, "", "ledger_unavailable", "Audit ledger unavailable; call not recorded").flag("retry", true)

// ledgerFailed is the answer to a call whose record could not be
// committed. The call is not billed (the caller released its reservation).
func (g *Gateway) ledgerFailed(c *call, err error) *Decision {
	g.log.Error("ledger append failed", "request_id", string(c.reqID), "err", err)
	c.cost, c.allowed = 0, false
	c.body.release()
	c.body, c.upResp = nil, nil
	return ledgerUnavailable
}
