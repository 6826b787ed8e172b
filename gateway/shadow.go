package gateway

import (
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/policy"
)

// evalShadow decides c under its shadow policy (policy/shadow.go) without
// enforcing or counting anything, and keeps what it would have decided
// for the call's record: the policy's allow/deny lists and approval
// tools, its concurrency caps, rate-class quota and quota windows against
// the counts the enforced policy keeps, and its daily cap against today's
// spend. The breakers and group caps are not shadowed.
func (g *Gateway) evalShadow(c *call, sh *policy.Effective) {
	c.shadowSet = true
	c.shadowOutcome, c.shadowReason = g.shadowOutcome(c, sh)
}

func (g *Gateway) shadowOutcome(c *call, sh *policy.Effective) (outcome, reason string) {
	t := c.rt.tool
	if ok, r := sh.Decide(t); !ok {
		return outDenied, r.String()
	}
	principal := c.principal()
	class := int(t.RateClass)
	all, perClass := sh.MaxInFlight(t.RateClass)
	rules, _ := sh.Windows(t)
	switch g.gov.g.ShadowFull(principal, class, all, perClass, rules, c.start) {
	case meter.GovInFlight:
		return outConcurrencyExceeded, "max_in_flight"
	case meter.GovWindow:
		return outQuotaExceeded, "quota_window"
	}
	if limit := sh.Quota(t.RateClass); limit == 0 {
		return outQuotaExceeded, "rate_class_blocked"
	} else if limit > 0 {
		if used, _ := g.quotas.Peek(principal, class, limit, c.start); used >= limit {
			return outQuotaExceeded, "rate_class_quota"
		}
	}
	if capUSD, ok := sh.SpendCap(); ok && t.Price > 0 {
		day, _ := meter.DayOf(c.start, sh.Location())
		if spent, ok := g.spend.Status(principal, day).Today().Add(t.Price); !ok || spent > capUSD {
			return outSpendCapExceeded, "daily_spend_cap"
		}
	}
	if sh.NeedsApproval(t) {
		return outPendingApproval, "approval_required"
	}
	return outAllowed, ""
}
