package gateway

import (
	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/x402"
)

// Verification overlapped with the upstream call (tools with
// "verify_overlap": true, after_upstream only; docs/x402.md, "Settle
// modes"). The confirm stage's remote verification runs while the
// upstream answers, and the call goes on only when both are done: the
// upstream's answer is buffered and withheld until the payment is known
// good and then settled as usual. A payment found invalid (or a backend
// that cannot verify) ends the call as confirm would have, except that
// the upstream has run unpaid: its answer is discarded, nothing is billed
// or settled, the authorization stays unspent, and the call keeps its
// quota slot (it reached the upstream). The time saved is the shorter of
// the two.

// overlaps reports whether c's payment is verified during the upstream
// call instead of before it: a verify_overlap tool's payment whose result
// is not known yet (a known one, valid or not, is applied before the
// call at no cost, so a payment already refused never runs the upstream
// again).
func (g *Gateway) overlaps(c *call) bool {
	if c.pay == nil || !c.rt.tool.VerifyOverlap || c.rt.tool.Settle != catalog.AfterUpstream {
		return false
	}
	_, known := g.verified.get(c.pay.digest, c.start)
	return !known
}

// upstreamVerifying is the upstream stage with the payment verified
// beside it. It returns what the upstream stage returns (nil: an answer
// came) when the payment is good, else the verification's decision with
// c marked as having reached the upstream.
func (g *Gateway) upstreamVerifying(c *call) (upFail, refused *Decision) {
	type verified struct {
		vr  x402.VerifyResult
		err error
	}
	done := make(chan verified, 1)
	// The goroutine touches only the payment's own fields (c.pay) and
	// reads what no stage writes any more; the upstream stage writes the
	// upstream's (c.upResp, c.body, c.upStatus, c.upLatency, c.dec). It
	// ends before this returns (verification has its own deadline), so the
	// request bytes a payment may point into outlive it.
	go func() {
		vr, err := g.verifyRemote(c)
		done <- verified{vr, err}
	}()
	upFail = g.upstream(c)
	v := <-done
	switch {
	case v.err != nil:
		g.log.Warn("payment verification failed", "request_id", string(c.reqID), "err", v.err)
		refused = paymentUnavailable(c, "verification")
	case !v.vr.Valid:
		refused = paymentInvalid(c, v.vr.Reason)
	default:
		return upFail, nil
	}
	g.metrics.overlapUnpaid.Inc()
	g.log.Warn("payment refused after its call ran (verify_overlap): the answer is discarded, nothing billed",
		"request_id", string(c.reqID), "tool", c.rt.tool.ID, "reason", refused.Reason)
	c.quotaHeld = false // it reached the upstream: the slot stays used
	return nil, refused
}
