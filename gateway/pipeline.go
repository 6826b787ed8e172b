package gateway

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// Ledger outcomes (DESIGN.md section 6).
const (
	outAllowed             = "allowed"
	outDenied              = "denied"
	outQuotaExceeded       = "quota_exceeded"
	outSpendCapExceeded    = "spend_cap_exceeded"
	outInsufficientCredits = "insufficient_credits"
	outUnauthenticated     = "unauthenticated"
	outPaymentRequired     = "payment_required"
	outPaymentInvalid      = "payment_invalid"
	outSettleFailed        = "settle_failed"
	outUpstreamError       = "upstream_error"
	outUnknownTool         = "unknown_tool"
	outMethodNotAllowed    = "method_not_allowed"  // a tool's route, another method (405)
	outStoreUnavailable    = "store_unavailable"   // the data dir is low on space: nothing could be recorded safely (503)
	outPaymentUnavailable  = "payment_unavailable" // the nonce store or the settlement backend could not answer (503)
)

// call is the per-request state of one tool call. Pooled; reset before reuse.
type call struct {
	start  time.Time
	reqID  []byte
	source netip.Addr // the caller's address
	st     *state
	rt     *route

	principal string
	tier      policy.Tier
	eff       *policy.Effective

	quotaHeld bool
	quotaID   uint64 // the call id the quota slot is counted under

	reserved bool
	res      meter.Reservation
	day      meter.Day

	pay         *x402.Payment // x402 caller's payment, nil for API keys
	payVersion  int
	verified    x402.Verified
	nonceHeld   bool               // our lock on the authorization, to release if unspent
	needsRemote bool               // only the settlement backend can check the signature
	payDigest   [32]byte           // SHA-256 of the payment header: remote verification cache key
	unrecorded  bool               // store low on space: a free call served under fail_mode open
	settled     *x402.SettleResult // before_upstream: settled ahead of the call

	cost      money.Micros // billed amount (0 unless committed)
	upStatus  int
	upLatency time.Duration

	body *bodyBuf // an upstream body that outlives the upstream response; released with the call

	buf []byte // scratch for response bodies
}

var callPool = sync.Pool{New: func() any { return &call{reqID: make([]byte, 0, 24), buf: make([]byte, 0, 256)} }}

func (c *call) reset() {
	c.body.release()
	reqID, buf := c.reqID[:0], c.buf[:0]
	*c = call{reqID: reqID, buf: buf}
}

// serveTool runs the pipeline of DESIGN.md section 1 for one tool call.
func (g *Gateway) serveTool(ctx *fasthttp.RequestCtx, st *state, rt *route) {
	c := callPool.Get().(*call)
	defer func() { c.reset(); callPool.Put(c) }()
	c.start = g.now()
	c.st, c.rt = st, rt
	c.reqID = g.appendRequestID(c.reqID)
	c.source = remoteAddr(ctx)

	h := &ctx.Response.Header
	h.SetBytesKV(hdrRequestID, c.reqID)
	h.SetBytesKV(hdrACAO, strStar)
	h.SetBytesKV(hdrACEH, strExposeHeader)
	h.SetBytesK(hdrTool, rt.tool.ID)

	if g.space.low.Load() {
		// Nothing can be recorded safely. Billed calls are refused;
		// free calls follow fail_mode (open: served, logged unrecorded).
		if rt.tool.Price > 0 || st.set.FailMode() == policy.ModeStrict {
			g.refuseUnrecorded(ctx, c)
			return
		}
		c.unrecorded = true
	}
	if !rt.tool.AllowsMethod(ctx.Method()) {
		g.deny(ctx, c, g.methodNotAllowed(c))
		return
	}
	d := g.identify(ctx, c)
	if d == nil {
		d = g.decide(c)
	}
	g.metrics.decision.Observe(seconds(g.now().Sub(c.start)))
	if d != nil {
		g.deny(ctx, c, d)
		return
	}
	if c.pay != nil {
		g.forwardPaid(ctx, c)
		return
	}
	g.forward(ctx, c)
}

// identify resolves the caller to a principal (stage 2).
func (g *Gateway) identify(ctx *fasthttp.RequestCtx, c *call) *denial {
	rh := &ctx.Request.Header
	secret, present := identity.Credential(rh.Peek("X-Api-Key"), rh.Peek("Authorization"))
	if present {
		k, ok := g.keys.Authenticate(secret, c.start)
		if !ok {
			return &denial{status: 401, outcome: outUnauthenticated, reason: "invalid_api_key", body: bodyInvalidKey}
		}
		c.principal = k.Principal
		c.tier = policy.TierAPIKey
		c.eff = c.st.effective(policy.TierAPIKey, k.Principal)
		return nil
	}
	// Without a key: a priced tool takes an x402 payment (or asks for
	// one, before any input validation); a free tool needs a key.
	if c.rt.offer != nil {
		return g.identifyPayment(ctx, c)
	}
	if c.rt.tool.Price > 0 {
		return g.paymentRequired(c)
	}
	return &denial{status: 401, outcome: outUnauthenticated, reason: "missing_api_key", body: bodyMissingKey}
}

var (
	bodyKeyRequired402 = []byte(`{"error":"Payment required","hint":"this gateway takes API keys for this tool (X-API-Key: it-…)"}`)
	bodyInvalidKey     = []byte(`{"error":"Invalid API key"}`)
	bodyMissingKey     = []byte(`{"error":"API key required","hint":"send X-API-Key: it-… or Authorization: Bearer it-…"}`)
)

// paymentRequired answers an unpaid call to a priced tool.
func (g *Gateway) paymentRequired(c *call) *denial {
	return &denial{status: 402, outcome: outPaymentRequired, reason: "no_payment", body: bodyKeyRequired402}
}

// decide applies policy (stage 3), quota (4) and spend (5). On success the
// quota slot and the spend reservation are held by c.
func (g *Gateway) decide(c *call) *denial {
	t := c.rt.tool
	if ok, reason := c.eff.Decide(t); !ok {
		return g.policyDenied(c, reason)
	}
	limit := c.eff.Quota(t.RateClass)
	id := g.callIDs.Add(1)
	q := g.quotas.Admit(c.principal, int(t.RateClass), limit, c.start, id)
	if !q.Allowed {
		return g.quotaExceeded(c, q)
	}
	c.quotaHeld, c.quotaID = q.Allowed && !q.At.IsZero(), id
	if t.Price > 0 {
		day, resetAt := meter.DayOf(c.start, c.eff.Location())
		capUSD, hasCap := c.eff.SpendCap()
		res, sr := g.spend.Reserve(c.principal, day, t.Price, capUSD, hasCap)
		if !sr.OK {
			g.releaseHolds(c) // a refused call costs nothing, quota included
			if sr.Reason == meter.ReasonInsufficientCredits {
				return g.insufficientCredits(c, sr)
			}
			return g.spendCapExceeded(c, sr, resetAt)
		}
		c.reserved, c.res, c.day = true, res, day
	}
	return nil
}

func (g *Gateway) policyDenied(c *call, reason policy.Reason) *denial {
	b := append(c.buf[:0], `{"error":"Tool access denied by policy","tool":`...)
	b = appendJSONString(b, c.rt.tool.ID)
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, reason.String())
	b = append(b, '}')
	c.buf = b
	return &denial{status: 403, outcome: outDenied, reason: reason.String(), body: b}
}

func (g *Gateway) quotaExceeded(c *call, q meter.QuotaResult) *denial {
	reset := ceilSeconds(int64(q.ResetIn))
	b := append(c.buf[:0], `{"error":"Policy rate class quota exceeded","rate_class":`...)
	b = appendJSONString(b, c.rt.tool.RateClass.String())
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(q.Limit), 10)
	b = append(b, `,"calls_this_minute":`...)
	b = strconv.AppendInt(b, int64(q.Used), 10)
	b = append(b, `,"reset_in_seconds":`...)
	b = strconv.AppendInt(b, int64(reset), 10)
	b = append(b, '}')
	c.buf = b
	reason := "rate_class_quota"
	if q.Limit == 0 {
		reason = "rate_class_blocked"
	}
	return &denial{status: 403, outcome: outQuotaExceeded, reason: reason, retryAfter: max(reset, 1), body: b}
}

func (g *Gateway) spendCapExceeded(c *call, sr meter.SpendResult, resetAt time.Time) *denial {
	reset := ceilSeconds(int64(resetAt.Sub(c.start)))
	// spend_today_usd is what was spent (committed); reserved_usd what
	// calls in flight hold against the cap.
	b := append(c.buf[:0], `{"error":"Daily spend cap exceeded","spend_today_usd":`...)
	b = (sr.SpentToday - sr.Reserved).AppendDecimal(b, 1)
	b = append(b, `,"reserved_usd":`...)
	b = sr.Reserved.AppendDecimal(b, 1)
	b = append(b, `,"spend_limit_usd":`...)
	b = sr.Limit.AppendDecimal(b, 1)
	b = append(b, `,"cost_usd":`...)
	b = c.rt.tool.Price.AppendDecimal(b, 1)
	b = append(b, `,"reset_at":"`...)
	b = resetAt.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, `","reset_in_seconds":`...)
	b = strconv.AppendInt(b, int64(reset), 10)
	b = append(b, '}')
	c.buf = b
	retry := reset
	if sr.SpentToday-sr.Reserved <= sr.Limit-c.rt.tool.Price {
		// Only calls in flight hold the cap: they commit or release
		// within their timeouts, so look again soon, not tomorrow.
		retry = 1
	}
	return &denial{status: 429, outcome: outSpendCapExceeded, reason: "daily_spend_cap", retryAfter: retry, body: b}
}

func (g *Gateway) insufficientCredits(c *call, sr meter.SpendResult) *denial {
	b := append(c.buf[:0], `{"error":"Insufficient credits","balance_usd":`...)
	b = sr.Balance.AppendDecimal(b, 1)
	b = append(b, `,"cost_usd":`...)
	b = c.rt.tool.Price.AppendDecimal(b, 1)
	b = append(b, '}')
	c.buf = b
	return &denial{status: 402, outcome: outInsufficientCredits, reason: "insufficient_credits", body: b}
}

func (g *Gateway) methodNotAllowed(c *call) *denial {
	b := append(c.buf[:0], `{"error":"Method not allowed","tool":`...)
	b = appendJSONString(b, c.rt.tool.ID)
	b = append(b, `,"allow":`...)
	b = appendJSONString(b, c.rt.allow)
	b = append(b, '}')
	c.buf = b
	return &denial{status: 405, outcome: outMethodNotAllowed, reason: "method_not_allowed", body: b}
}

// deny records a denial and answers it. Nothing reached the upstream and
// nothing is billed.
func (g *Gateway) deny(ctx *fasthttp.RequestCtx, c *call, d *denial) {
	h := &ctx.Response.Header
	h.SetBytesKV(hdrPolicyAllowed, strFalse)
	h.SetBytesKV(hdrCost, zeroCost)
	if d.status == 405 {
		h.SetBytesK(hdrAllow, c.rt.allow)
	}
	if d.retryAfter > 0 {
		setRetryAfter(ctx, d.retryAfter)
	}
	if d.status == 402 {
		h.SetBytesKV(hdrCacheControl, strNoStore)
	}
	if d.payRequired != nil {
		h.SetBytesKV(hdrPaymentRequired, d.payRequired)
	}
	if d.payResponse != nil {
		h.SetBytesKV(c.paymentResponseHeader(), d.payResponse)
	}
	g.releaseNonce(c) // a denied payment is released unspent
	if c.principal == "" && !c.unrecorded && g.anon.absorb(c.source, d.outcome, d.reason, c.rt.tool.ID, d.status, c.start) {
		// An unidentified caller past its burst: counted in aggregate.
		g.metrics.calls.WithLabelValues(c.rt.tool.ID, d.outcome, d.reason).Inc()
		writeJSON(ctx, d.status, d.body)
		return
	}
	rec := g.callRecord(c, d.outcome, d.reason, d.status)
	if err := g.wait(g.append(c, rec)); err != nil {
		g.ledgerFailed(ctx, c, err)
		return
	}
	g.observe(rec)
	writeJSON(ctx, d.status, d.body)
}

var zeroCost = []byte("0.000")

// callRecord builds the ledger record of this call.
func (g *Gateway) callRecord(c *call, outcome, reason string, status int) *ledger.Record {
	rec := &ledger.Record{
		Type:              "call",
		At:                c.start,
		RequestID:         string(c.reqID),
		Principal:         c.principal,
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
	if c.principal != "" {
		rec.Tier = c.tier.String()
	}
	if c.cost > 0 {
		rec.SpendDay = c.day.String()
	}
	if c.pay != nil && c.rt != nil && c.rt.offer != nil {
		rec.Payment = paymentRecord(c)
	}
	return rec
}

// ledgerFailed answers a call whose record could not be committed. The
// call is not billed (its reservation was released by the caller).
func (g *Gateway) ledgerFailed(ctx *fasthttp.RequestCtx, c *call, err error) {
	g.log.Error("ledger append failed", "request_id", string(c.reqID), "err", err)
	ctx.Response.ResetBody()
	ctx.Response.Header.Del("Content-Encoding")
	ctx.Response.Header.SetBytesKV(hdrCost, zeroCost)
	writeJSON(ctx, 503, []byte(`{"error":"Audit ledger unavailable; call not recorded","retry":true}`))
}

// releaseHolds gives back the quota slot and spend reservation of a call
// that was not served.
func (g *Gateway) releaseHolds(c *call) {
	if c.reserved {
		g.spend.Release(c.res)
		c.reserved = false
	}
	if c.quotaHeld {
		g.quotas.Undo(c.principal, int(c.rt.tool.RateClass), c.quotaID)
		c.quotaHeld = false
	}
}

// paymentResponseHeader names the settlement header for c's x402 version.
func (c *call) paymentResponseHeader() []byte {
	if c.payVersion == 1 {
		return hdrXPaymentResponse
	}
	return hdrPaymentResponse
}

// remoteAddr is the address of the connection's peer.
func remoteAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}
