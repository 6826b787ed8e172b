package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// X402Options turns on per-call payments with x402.
type X402Options struct {
	Config  x402.Config
	Settler x402.Settler // facilitator or on-chain; required
	Nonces  NonceStore   // an *x402.NonceLock, or a shared store; required

	// Reconciler finds out what became of a settlement whose outcome is
	// unknown (a facilitator timeout after sending, a transaction not yet
	// mined). Nil: the Settler itself when it can (on-chain settlement).
	Reconciler Reconciler
	// ReconcileEvery is the pause between reconciliation attempts
	// (default 15 s).
	ReconcileEvery time.Duration

	// VerifyTimeout bounds a remote verification (default 10 s);
	// SettleTimeout bounds a settlement (default 30 s). Both are separate
	// from each tool's upstream timeout.
	VerifyTimeout, SettleTimeout time.Duration
}

// Reconciler reads the chain to settle the fate of an authorization:
// used (success, with the transaction when found), our transaction
// reverted (failure), or still pending. *x402.Chain implements it.
type Reconciler interface {
	ReconcileTx(ctx context.Context, k x402.NonceKey, txHex string) (x402.SettleResult, error)
}

var (
	hdrPaymentRequired  = []byte(x402.HeaderPaymentRequired)
	hdrPaymentResponse  = []byte(x402.HeaderPaymentResponse)
	hdrXPaymentResponse = []byte(x402.HeaderXPaymentResponse)
)

// newOffer precomputes a priced tool's payment requirements.
func (g *Gateway) newOffer(t *catalog.Tool) (*x402.Offer, error) {
	o := g.opts.X402
	method := "POST"
	if len(t.Methods) > 0 {
		method = t.Methods[0]
	}
	budget := t.Timeout + o.SettleTimeout
	res := x402.Resource{
		ToolID: t.ID, Path: t.Path, Method: method, Description: t.Description,
		Price:             t.Price,
		MaxTimeoutSeconds: int(math.Ceil(budget.Seconds())) + 60,
		MimeType:          "application/json",
		Discovery:         t.Discovery,
	}
	offer, err := x402.NewOffer(o.Config, res)
	if err != nil {
		return nil, err
	}
	switch {
	case t.Price > money.PerUSD:
		g.log.Warn("price above $1: default x402 clients refuse to pay it", "tool", t.ID, "price_usd", t.Price.String())
	case t.Price < 1000:
		g.log.Warn("price below $0.001: the hosted CDP facilitator refuses it", "tool", t.ID, "price_usd", t.Price.String())
	}
	return offer, nil
}

// minValidFor is how long an authorization must stay valid to cover the
// tool's call and its settlement.
func (g *Gateway) minValidFor(t *catalog.Tool) time.Duration {
	return t.Timeout + g.opts.X402.SettleTimeout
}

// identifyPayment identifies an x402 payer (stage 2 for callers without a
// key): decode, match against our own requirements, verify locally, lock
// the nonce. A signature only the settlement backend can check (a smart
// wallet's) names its claimed payer here and is verified remotely in the
// confirm stage (confirmPayment), after the nonce lock, policy and quota:
// a denied, replayed or over-quota payment never reaches the backend.
func (g *Gateway) identifyPayment(ctx *fasthttp.RequestCtx, c *call) *denial {
	offer := c.rt.offer
	rh := &ctx.Request.Header
	hdr, version := rh.Peek(x402.HeaderPaymentSignature), 2
	if len(hdr) == 0 {
		hdr, version = rh.Peek(x402.HeaderXPayment), 1
	}
	if len(hdr) == 0 {
		return &denial{status: 402, outcome: outPaymentRequired, reason: "no_payment",
			body: offer.Body402(), payRequired: offer.PaymentRequiredHeader()}
	}
	p, err := x402.Decode(hdr, version)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "x402: ")
		return &denial{status: 400, outcome: outPaymentInvalid, reason: "malformed_payment",
			body: jsonError2("Malformed payment header", "reason", msg)}
	}
	v, err := offer.Verify(p, c.start, g.minValidFor(c.rt.tool))
	if err != nil {
		return &denial{status: 400, outcome: outPaymentInvalid, reason: "malformed_payment", body: errorBody("Malformed payment header")}
	}
	c.pay, c.payVersion, c.verified = p, version, v
	switch v.Status {
	case x402.StatusValid:
		g.metrics.x402Verify.WithLabelValues("valid").Inc()
	case x402.StatusNeedsRemote:
		c.needsRemote = true
	default:
		g.metrics.x402Verify.WithLabelValues("invalid").Inc()
		return g.paymentInvalid(c, v.Reason)
	}
	if c.needsRemote || c.rt.tool.Settle == catalog.AfterUpstream {
		c.payDigest = sha256.Sum256(hdr) // the remote verification's cache key
	}
	// The payment names its payer: whatever happens next is this
	// wallet's call (for a smart wallet, its claimed call until verified).
	c.principal = "wallet:" + v.Payer
	c.tier = tierOf(c.principal, c.st)
	ok, err := g.opts.X402.Nonces.Lock(v.Key, v.ValidBefore)
	if err != nil {
		g.log.Error("nonce lock", "request_id", string(c.reqID), "err", err)
		return &denial{status: 503, outcome: outPaymentUnavailable, reason: "nonce_store_unavailable",
			body: errorBody("Payment store unavailable; nothing was charged")}
	}
	if !ok {
		return g.paymentInvalid(c, x402.ReasonNonceUsed)
	}
	c.nonceHeld = true
	c.eff = c.st.effective(c.tier, c.principal)
	return nil
}

// verifyRemote asks the settlement backend whether c's payment can be
// settled, once per payment: results (valid or not) are kept until the
// authorization expires, so a retried or replayed payment costs no second
// backend call. A backend error is not kept.
func (g *Gateway) verifyRemote(c *call) (x402.VerifyResult, error) {
	if vr, ok := g.verified.get(c.payDigest, c.start); ok {
		g.metrics.x402Verify.WithLabelValues("cached").Inc()
		return vr, nil
	}
	vctx, cancel := context.WithTimeout(context.Background(), g.opts.X402.VerifyTimeout)
	vr, err := g.opts.X402.Settler.Verify(vctx, c.pay, c.rt.offer)
	cancel()
	switch {
	case err != nil:
		g.metrics.x402Verify.WithLabelValues("error").Inc()
		return vr, err
	case vr.Valid:
		g.metrics.x402Verify.WithLabelValues("remote_valid").Inc()
	default:
		g.metrics.x402Verify.WithLabelValues("remote_invalid").Inc()
	}
	g.verified.put(c.payDigest, vr, c.verified.ValidBefore, c.start)
	return vr, nil
}

func (g *Gateway) paymentInvalid(c *call, reason string) *denial {
	h, b := c.rt.offer.WithError(reason)
	return &denial{status: 402, outcome: outPaymentInvalid, reason: reason, body: b, payRequired: h}
}

func paymentUnavailable(what string) *denial {
	return &denial{status: 503, outcome: outPaymentUnavailable, reason: what + "_unavailable", retryAfter: 5,
		body: jsonError2("Payment "+what+" unavailable; nothing was charged", "retry", "true")}
}

func jsonError2(msg, k, v string) []byte {
	b := append([]byte(`{"error":`), appendJSONString(nil, msg)...)
	b = append(append(append(b, ','), appendJSONString(nil, k)...), ':')
	return append(appendJSONString(b, v), '}')
}

// releaseNonce frees an authorization that was not spent, so the payer may
// use it again.
func (g *Gateway) releaseNonce(c *call) {
	if !c.nonceHeld {
		return
	}
	c.nonceHeld = false
	if err := g.opts.X402.Nonces.Release(c.verified.Key); err != nil {
		g.log.Error("release nonce", "request_id", string(c.reqID), "err", err)
	}
}

// settle settles c's payment. paid reports whether the call is to be
// treated as paid: settled, or broadcast with an outcome still unknown (we
// never make the payer sign twice for one call). A definite failure
// returns a denial.
func (g *Gateway) settle(c *call) (sr x402.SettleResult, paid bool, d *denial) {
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.X402.SettleTimeout)
	defer cancel()
	sr, err := g.opts.X402.Settler.Settle(ctx, c.pay, c.rt.offer)
	g.metrics.x402Settle.WithLabelValues(settleResult(sr, err)).Inc()
	switch {
	case err != nil && errors.Is(err, x402.ErrOutcomeUnknown):
		g.log.Warn("settlement outcome unknown; nonce kept locked", "request_id", string(c.reqID), "err", err)
		sr = x402.SettleResult{Pending: true, Payer: c.verified.Payer, Network: c.rt.offer.Network(c.payVersion)}
		c.nonceHeld = false // stays locked in the store
		g.reconcileLater(c, sr)
		return sr, true, nil
	case err != nil:
		g.log.Warn("settlement failed before sending", "request_id", string(c.reqID), "err", err)
		return sr, false, paymentUnavailable("settlement")
	case sr.Success:
		c.nonceHeld = false
		if err := g.opts.X402.Nonces.MarkSettled(c.verified.Key, sr.Transaction); err != nil {
			g.log.Error("mark nonce settled", "request_id", string(c.reqID), "err", err)
		}
		return sr, true, nil
	case sr.Pending:
		c.nonceHeld = false
		g.reconcileLater(c, sr)
		return sr, true, nil
	}
	h, b := c.rt.offer.WithError(sr.Reason)
	resp := x402.AppendSettleResponse(nil, sr.Response())
	return sr, false, &denial{status: 402, outcome: outSettleFailed, reason: sr.Reason, body: b, payRequired: h, payResponse: resp}
}

// reconcileLater follows a settlement left pending (broadcast, or sent to
// a facilitator that did not answer) to its outcome and records it: an
// x402_settlement txn when the authorization was used, an
// x402_settlement_failed txn when it can no longer be (reverted, or unused
// past validBefore). Without a Reconciler the nonce simply stays locked
// until the authorization expires, and the call record says
// settlement_pending.
func (g *Gateway) reconcileLater(c *call, sr x402.SettleResult) {
	rc := g.opts.X402.Reconciler
	if rc == nil {
		rc, _ = g.opts.X402.Settler.(Reconciler)
	}
	if rc == nil {
		return
	}
	key, tx, principal, reqID := c.verified.Key, sr.Transaction, c.principal, string(c.reqID)
	amount, network, payer, deadline := c.rt.tool.Price, sr.Network, c.verified.Payer, c.verified.ValidBefore
	every := g.opts.X402.ReconcileEvery
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		record := func(kind, txHash, reason string) {
			err := g.led.Append(&ledger.Record{Type: "txn", At: g.now(), RequestID: reqID, Principal: principal,
				Kind: kind, Amount: amount, Payer: payer, Network: network, TxHash: txHash, Reason: reason}).Wait()
			if err != nil {
				g.log.Error("record reconciled settlement", "request_id", reqID, "err", err)
			}
		}
		for {
			select {
			case <-g.stop:
				return
			case <-time.After(every):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := rc.ReconcileTx(ctx, key, tx)
			cancel()
			switch {
			case err != nil:
				g.log.Warn("reconcile settlement", "request_id", reqID, "err", err)
			case res.Success:
				if err := g.opts.X402.Nonces.MarkSettled(key, res.Transaction); err != nil {
					g.log.Error("mark nonce settled", "request_id", reqID, "err", err)
				}
				g.metrics.x402Settle.WithLabelValues("reconciled").Inc()
				record("x402_settlement", res.Transaction, "")
				return
			case !res.Pending:
				g.log.Error("pending settlement failed on chain", "request_id", reqID, "tx", res.Transaction, "reason", res.Reason)
				g.metrics.x402Settle.WithLabelValues("reconciled_failed").Inc()
				record("x402_settlement_failed", res.Transaction, res.Reason)
				return
			case g.now().After(deadline.Add(2 * time.Minute)):
				// Unused past validBefore: nobody can settle it any more.
				g.log.Error("pending settlement expired unused", "request_id", reqID)
				g.metrics.x402Settle.WithLabelValues("reconciled_failed").Inc()
				record("x402_settlement_failed", "", x402.ReasonValidBefore)
				return
			}
		}
	}()
}

// forwardPaid confirms and settles an x402 caller's payment (stage 6)
// and forwards the call. It runs after policy, quota and spend.
func (g *Gateway) forwardPaid(ctx *fasthttp.RequestCtx, c *call) {
	// Confirm: a smart-wallet signature always, and in after_upstream
	// mode every payment (the payer must be able to pay before the tool
	// runs). In before_upstream mode the settlement itself confirms an
	// EOA payment.
	if c.needsRemote || c.rt.tool.Settle == catalog.AfterUpstream {
		vr, err := g.verifyRemote(c)
		if err != nil {
			g.releaseHolds(c)
			g.log.Warn("payment verification failed", "request_id", string(c.reqID), "err", err)
			g.deny(ctx, c, paymentUnavailable("verification"))
			return
		}
		if !vr.Valid {
			g.releaseHolds(c)
			g.deny(ctx, c, g.paymentInvalid(c, vr.Reason))
			return
		}
	}
	if c.rt.tool.Settle == catalog.BeforeUpstream {
		sr, paid, d := g.settle(c)
		if !paid {
			g.releaseHolds(c)
			g.deny(ctx, c, d)
			return
		}
		c.settled = &sr
	}
	g.forward(ctx, c)
}

// paymentRecord summarizes c's payment for the ledger (never the signature).
func paymentRecord(c *call) *ledger.Payment {
	return &ledger.Payment{Version: c.payVersion, Scheme: c.pay.Scheme, Network: c.rt.offer.Network(c.payVersion),
		Payer: c.verified.Payer, Amount: c.verified.Amount, Nonce: c.verified.Key.NonceHex()}
}

// settlementRecord is the txn record of a settled payment.
func settlementRecord(c *call, sr *x402.SettleResult) *ledger.Record {
	return &ledger.Record{Type: "txn", At: c.start, RequestID: string(c.reqID), Principal: c.principal,
		Tool: c.rt.tool.ID, Kind: "x402_settlement", Amount: c.rt.tool.Price,
		Payer: c.verified.Payer, Network: sr.Network, TxHash: sr.Transaction}
}

func settleResult(sr x402.SettleResult, err error) string {
	switch {
	case err != nil && errors.Is(err, x402.ErrOutcomeUnknown):
		return "unknown"
	case err != nil:
		return "error"
	case sr.Success:
		return "success"
	case sr.Pending:
		return "pending"
	}
	return "failed"
}
