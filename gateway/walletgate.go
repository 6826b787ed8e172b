package gateway

import (
	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/policy"
)

// Unpaid calls to a priced tool are not always worth a challenge: asking a
// wallet to sign for a call its policy will refuse wastes a signature (and,
// with a client that settles eagerly, money). Before answering 402 the
// gateway asks whether any wallet may make the call at all:
//
//   - an unknown wallet (tier unknown_wallet) may: the plain 402;
//   - none may (unknown_wallet denies the tool or blocks its rate class,
//     and no wallet override allows it): the 403 the unknown wallet's paid
//     call would get, without a challenge;
//   - only wallets with an override may: the 402 stays, its error says
//     that a policy applies.
//
// What a wallet override allows is counted per tool when the state is
// built or an override changes (walletAllows), so the check is two lookups.

// PolicyApplies is the PAYMENT-REQUIRED error of a tool only some wallets
// may call.
const PolicyApplies = "Payment required; a policy applies: only wallets with a policy override may call this tool"

// walletMay reports whether a wallet under eff may call t: the policy
// allows it and its rate class is not blocked.
func walletMay(eff *policy.Effective, t *catalog.Tool) bool {
	ok, _ := eff.Decide(t)
	return ok && eff.Quota(t.RateClass) != 0
}

// countWalletAllows returns, by tool index, how many of the wallet
// overrides allow the tool.
func countWalletAllows(tools []*catalog.Tool, overrides map[string]*override) []int32 {
	n := make([]int32, len(tools))
	for principal, o := range overrides {
		if isOwedPrincipal(principal) {
			addWalletAllows(n, tools, o.eff, 1)
		}
	}
	return n
}

// addWalletAllows adds delta to the count of every tool eff lets a wallet call.
func addWalletAllows(n []int32, tools []*catalog.Tool, eff *policy.Effective, delta int32) {
	if eff == nil {
		return
	}
	for i, t := range tools {
		if walletMay(eff, t) {
			n[i] += delta
		}
	}
}

// unpaidAnswer is the answer to an unpaid call of a tool with an offer:
// nil for the plain 402, else the 403 (no wallet may call it) or the 402
// saying a policy applies.
func (g *Gateway) unpaidAnswer(c *call) *Decision {
	t := c.rt.tool
	eff := c.st.set.Tier(policy.TierUnknownWallet)
	if walletMay(eff, t) {
		return nil
	}
	if t.Index < len(c.st.walletAllows) && c.st.walletAllows[t.Index] > 0 {
		d := c.decide(402, outPaymentRequired, "no_payment", "Payment required")
		d.Offer, d.PayReason = c.rt.offer, PolicyApplies
		return d
	}
	if ok, reason := eff.Decide(t); !ok {
		return c.decide(403, outDenied, reason.String(), "Tool access denied by policy").
			str("tool", t.ID).str("reason", reason.String())
	}
	d := c.decide(403, outQuotaExceeded, "rate_class_blocked", "Policy rate class quota exceeded").
		str("rate_class", t.RateClass.String()).num("limit", 0).
		num("calls_this_minute", 0).num("reset_in_seconds", 0)
	d.RetryAfter = 1
	return d
}
