package gateway

import (
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
)

// Shadow policies (policy/shadow.go): decide evaluates c's shadow policy
// beside the enforced one, without enforcing or counting anything, and
// the call's record keeps what it would have decided. The checks run
// where the enforced ones read the same state, so that they cost no
// extra lock on the way of an admitted call: the allow/deny lists first
// (evalShadow), the rate-class quota against the count the enforced
// quota returned (shadowQuota), the concurrency caps and
// quota windows inside the Governor's admission (admitGoverned), the
// daily cap against the figure the spend reservation returned
// (shadowSpend), the approval list last (shadowEnd). The loop breaker
// and the spend burst are read inside the Governor's admission too, from
// the identical calls and held costs the enforced breakers keep (so only
// when the enforced policy has them). A call refused before some of them
// has the rest checked when it is recorded (callState), the breakers
// excepted. Group caps are not shadowed.

// evalShadow starts the shadow decision of c: the allow/deny lists.
func (g *Gateway) evalShadow(c *call, sh *policy.Effective) {
	c.shadowSet, c.shadowPending = true, true
	if ok, r := sh.Decide(c.rt.tool); !ok {
		g.shadowIs(c, outDenied, r.String())
	}
}

// shadowQuota checks the shadow's rate-class quota against the count the
// enforced quota's decision q returned (limit: the enforced limit), so
// that it costs no read of its own. A class the enforced policy leaves
// unlimited has no count: a shadow limit there is never exceeded (only
// a blocked class, limit 0, is refused).
func (g *Gateway) shadowQuota(c *call, q meter.QuotaResult, limit int) {
	c.shadowQuotaDone = true
	if !c.shadowPending {
		return
	}
	used := q.Used // the calls in the window before this one
	if q.Allowed && limit >= 0 {
		used--
	}
	g.shadowQuotaUsed(c, used, limit >= 0)
}

// shadowQuotaUsed settles the shadow's rate-class quota by used, the
// principal's calls in the window before this one (counted: whether the
// enforced policy counts the class at all).
func (g *Gateway) shadowQuotaUsed(c *call, used int, counted bool) {
	switch limit := c.eff.Shadow().Quota(c.rt.tool.RateClass); {
	case limit == 0:
		g.shadowIs(c, outQuotaExceeded, "rate_class_blocked")
	case limit > 0 && counted && used >= limit:
		g.shadowIs(c, outQuotaExceeded, "rate_class_quota")
	}
}

// shadowIs settles the shadow decision.
func (g *Gateway) shadowIs(c *call, outcome, reason string) {
	c.shadowOutcome, c.shadowReason, c.shadowPending = outcome, reason, false
}

// shadowGov fills the Governor's shadow checks of gc for c.
func shadowGov(c *call, gc *meter.GovCall) {
	if !c.shadowPending {
		return
	}
	sh := c.eff.Shadow()
	gc.Shadow = true
	gc.ShadowAll, gc.ShadowClass = sh.MaxInFlight(c.rt.tool.RateClass)
	gc.ShadowWindows, _ = sh.Windows(c.rt.tool)
	gc.ShadowLoopRepeats, gc.ShadowLoopWithin, _ = sh.LoopBreaker()
	gc.ShadowBurst, gc.ShadowBurstWithin, gc.ShadowBurstOn = sh.SpendBurst()
}

// shadowGovResult settles the shadow decision by the Governor's answer.
func (g *Gateway) shadowGovResult(c *call, r meter.GovCheck) {
	switch {
	case !c.shadowPending:
	case r == meter.GovInFlight:
		g.shadowIs(c, outConcurrencyExceeded, "max_in_flight")
	case r == meter.GovWindow:
		g.shadowIs(c, outQuotaExceeded, "quota_window")
	case r == meter.GovLoop:
		g.shadowIs(c, outBreakerTripped, "loop_detected")
	case r == meter.GovBurst:
		g.shadowIs(c, outBreakerTripped, "spend_burst")
	}
}

// shadowSpend checks the shadow's daily cap against spent, the day's
// spend before this call, as the enforced reservation saw it.
func (g *Gateway) shadowSpend(c *call, spent money.Micros) {
	if !c.shadowPending {
		return
	}
	sh := c.eff.Shadow()
	if capUSD, ok := sh.SpendCap(); ok {
		if after, ok := spent.Add(c.rt.tool.Price); !ok || after > capUSD {
			g.shadowIs(c, outSpendCapExceeded, "daily_spend_cap")
		}
	}
}

// shadowEnd settles what is left of the shadow decision at the end of
// decide: the approval list, else allowed.
func (g *Gateway) shadowEnd(c *call) {
	if !c.shadowPending {
		return
	}
	if c.eff.Shadow().NeedsApproval(c.rt.tool) {
		g.shadowIs(c, outPendingApproval, "approval_required")
		return
	}
	g.shadowIs(c, outAllowed, "")
}

// shadowRest settles the shadow decision of a call the enforced policy
// refused before its shadow was settled: the remaining checks, each with
// its own read (off the way of admitted calls).
func (g *Gateway) shadowRest(c *call) {
	if !c.shadowPending || c.eff == nil || c.eff.Shadow() == nil {
		return
	}
	sh, t := c.eff.Shadow(), c.rt.tool
	if !c.shadowQuotaDone { // refused before its quota was decided
		c.shadowQuotaDone = true
		limit := c.eff.Quota(t.RateClass)
		var used int
		if limit >= 0 && sh.Quota(t.RateClass) > 0 {
			used, _ = g.quotas.Peek(c.principal(), int(t.RateClass), limit, c.start)
		}
		if g.shadowQuotaUsed(c, used, limit >= 0); !c.shadowPending {
			return
		}
	}
	all, perClass := sh.MaxInFlight(t.RateClass)
	rules, _ := sh.Windows(t)
	g.shadowGovResult(c, g.gov.g.ShadowFull(c.principal(), int(t.RateClass), all, perClass, rules, c.start))
	if c.shadowPending && t.Price > 0 {
		if _, ok := sh.SpendCap(); ok {
			day, _ := meter.DayOf(c.start, sh.Location())
			g.shadowSpend(c, g.spend.Status(c.principal(), day).Today())
		}
	}
	g.shadowEnd(c)
}
