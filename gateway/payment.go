package gateway

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

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

	// Verifier, if set, verifies payments instead of the Settler: a
	// read-only chain (x402.DialReader) beside a facilitator verifies
	// locally over RPC, saving the facilitator's /verify round trip.
	Verifier interface {
		Verify(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.VerifyResult, error)
	}

	// Reconciler finds out what became of a settlement whose outcome is
	// unknown (a facilitator timeout after sending, a transaction not yet
	// mined). Nil: the Settler itself when it can (on-chain settlement).
	Reconciler Reconciler
	// ReconcileEvery is the pause between reconciliation attempts
	// (default 15 s).
	ReconcileEvery time.Duration
	// Claims, if set, hands each pending settlement to exactly one
	// gateway of a cluster (reconcile.go); nil: each follows its own.
	Claims SettlementClaims

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
		MCPPath:           MCPPath,
		Metered:           t.Metered,
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

// verifyRemote asks the settlement backend whether c's payment can be
// settled, once per payment: results (valid or not) are kept until the
// authorization expires, so a retried or replayed payment costs no second
// backend call. A backend error is not kept.
func (g *Gateway) verifyRemote(c *call) (x402.VerifyResult, error) {
	pc := c.pay
	if vr, ok := g.verified.get(pc.digest, c.start); ok {
		g.metrics.x402Verify.WithLabelValues("cached").Inc()
		return vr, nil
	}
	t0 := g.now()
	pc.verifyAt = t0.Sub(c.start)
	defer func() { pc.verifyDur = g.now().Sub(t0) }()
	vctx, cancel := context.WithTimeout(context.Background(), g.opts.X402.VerifyTimeout)
	var vr x402.VerifyResult
	var err error
	if v := g.opts.X402.Verifier; v != nil && !pc.upto { // the RPC verifier knows EIP-3009 only
		vr, err = v.Verify(vctx, pc.p, c.rt.offer)
	} else {
		vr, err = g.opts.X402.Settler.Verify(vctx, pc.p, c.rt.offer)
	}
	cancel()
	g.extensionResponses(c, vr.Extensions)
	switch {
	case err != nil:
		g.metrics.x402Verify.WithLabelValues("error").Inc()
		return vr, err
	case vr.Valid:
		g.metrics.x402Verify.WithLabelValues("remote_valid").Inc()
	default:
		g.metrics.x402Verify.WithLabelValues("remote_invalid").Inc()
	}
	g.verified.put(pc.digest, vr, pc.verified.ValidBefore, c.start)
	return vr, nil
}

// paymentInvalid is the 402 of a refused payment: the tool's requirements
// again, with the reason.
func paymentInvalid(c *call, reason string) *Decision {
	d := c.decide(402, outPaymentInvalid, reason, "Payment invalid")
	d.Offer, d.PayReason = c.rt.offer, reason
	return d
}

// paymentUnavailable: the settlement backend could not answer.
func paymentUnavailable(c *call, what string) *Decision {
	d := c.decide(503, outPaymentUnavailable, what+"_unavailable", "Payment "+what+" unavailable; nothing was charged").
		str("retry", "true")
	d.RetryAfter = 5
	return d
}

// releaseNonce frees an authorization that was not spent, so the payer may
// use it again.
func (g *Gateway) releaseNonce(c *call) {
	if c.pay == nil || !c.pay.nonceHeld {
		return
	}
	c.pay.nonceHeld = false
	if err := g.opts.X402.Nonces.Release(c.pay.verified.Key); err != nil {
		g.log.Error("release nonce", "request_id", string(c.reqID), "err", err)
	}
}

// confirm is the payment stage (6) before the upstream: a smart-wallet
// signature is verified remotely always, and in after_upstream mode every
// payment is (the payer must be able to pay before the tool runs); in
// before_upstream mode the settlement itself confirms an EOA payment, and
// runs now.
func (g *Gateway) confirm(c *call) *Decision {
	after := settlesAfter(c.rt.tool, c.pay)
	if c.pay.needsRemote || after {
		vr, err := g.verifyRemote(c)
		if err != nil {
			g.log.Warn("payment verification failed", "request_id", string(c.reqID), "err", err)
			return paymentUnavailable(c, "verification")
		}
		if !vr.Valid {
			return paymentInvalid(c, vr.Reason)
		}
	}
	if !after {
		return g.settle(c)
	}
	return nil
}

// settle settles c's payment. The call is then paid (c.pay.settled):
// settled, or broadcast with an outcome still unknown (we never make the
// payer sign twice for one call). A definite failure returns its decision.
func (g *Gateway) settle(c *call) *Decision {
	pc := c.pay
	offer := c.rt.offer
	if pc.upto {
		if pc.amount == 0 {
			return g.settleNothing(c)
		}
		offer = offer.Settling(pc.amount) // upto: the settle request carries the actual amount
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.X402.SettleTimeout)
	defer cancel()
	t0 := g.now()
	pc.settleAt = t0.Sub(c.start)
	sr, err := g.opts.X402.Settler.Settle(ctx, pc.p, offer)
	if pc.upto && sr.Amount == "" && (sr.Success || sr.Pending) {
		sr.Amount = strconv.FormatInt(int64(pc.amount), 10)
	}
	pc.settleDur = g.now().Sub(t0)
	g.metrics.x402Settle.WithLabelValues(settleResult(sr, err)).Inc()
	g.extensionResponses(c, sr.Extensions)
	switch {
	case err != nil && errors.Is(err, x402.ErrOutcomeUnknown):
		g.log.Warn("settlement outcome unknown; nonce kept locked", "request_id", string(c.reqID), "err", err)
		sr = x402.SettleResult{Pending: true, Payer: pc.verified.Payer, Network: c.rt.offer.Network(pc.version)}
		if pc.upto {
			sr.Amount = strconv.FormatInt(int64(pc.amount), 10)
		}
		pc.nonceHeld = false // stays locked in the store
		pc.settled, pc.result, pc.reconcile = true, sr, true
		return nil
	case err != nil:
		g.log.Warn("settlement failed before sending", "request_id", string(c.reqID), "err", err)
		return paymentUnavailable(c, "settlement")
	case sr.Success:
		pc.nonceHeld = false
		if err := g.opts.X402.Nonces.MarkSettled(pc.verified.Key, sr.Transaction); err != nil {
			g.log.Error("mark nonce settled", "request_id", string(c.reqID), "err", err)
		}
		pc.settled, pc.result = true, sr
		return nil
	case sr.Pending:
		pc.nonceHeld = false
		pc.settled, pc.result, pc.reconcile = true, sr, true
		return nil
	}
	d := c.decide(402, outSettleFailed, sr.Reason, "Settlement failed")
	d.Offer, d.PayReason = c.rt.offer, sr.Reason
	d.PayResponse = x402.AppendSettleResponse(nil, sr.Response())
	return d
}

// settleNothing concludes an upto payment whose call cost nothing: the
// upto scheme settles a zero amount with no transaction (the authorization
// expires unused, specs/schemes/upto "Zero Settlement"). The nonce stays
// locked as settled until the authorization expires, so that it pays for
// no other call.
func (g *Gateway) settleNothing(c *call) *Decision {
	pc := c.pay
	pc.nonceHeld = false
	if err := g.opts.X402.Nonces.MarkSettled(pc.verified.Key, ""); err != nil {
		g.log.Error("mark nonce settled", "request_id", string(c.reqID), "err", err)
	}
	g.metrics.x402Settle.WithLabelValues("zero").Inc()
	pc.settled, pc.zero = true, true
	pc.result = x402.SettleResult{Success: true, Payer: pc.verified.Payer, Network: c.rt.offer.Network(pc.version), Amount: "0"}
	return nil
}

// reconcileLater follows a settlement left pending (broadcast, or sent to
// a facilitator that did not answer) to its outcome and records it: an
// x402_settlement txn when the authorization was used, an
// x402_settlement_failed txn when it can no longer be (reverted, or unused
// past validBefore). Without a Reconciler the nonce simply stays locked
// until the authorization expires, and the call record says
// settlement_pending.
func (g *Gateway) reconcileLater(c *call, sr x402.SettleResult) {
	if g.reconciler() == nil {
		return
	}
	p := PendingSettlement{Key: c.pay.verified.Key, Tx: sr.Transaction, Principal: c.principal(), RequestID: string(c.reqID),
		Tool: c.rt.tool.ID, Payer: c.pay.verified.Payer, Network: sr.Network, Amount: c.pay.amount,
		Deadline: c.pay.verified.ValidBefore, OweOnSettle: c.pay.oweOnSettle, AnswerKeys: []string{nonceAnswerKey(c.pay.verified.Key)}}
	if c.claim != nil && c.claim.kind == "payment_identifier" {
		p.AnswerKeys = append(p.AnswerKeys, c.claim.keys[0])
	}
	g.followSettlement(p, true) // reconcile.go
}

// paymentRecord summarizes c's payment for the ledger (never the signature).
func paymentRecord(c *call) *ledger.Payment {
	pc := c.pay
	return &ledger.Payment{Version: pc.version, Scheme: pc.p.Scheme, Network: c.rt.offer.Network(pc.version),
		Payer: pc.verified.Payer, Amount: pc.verified.Amount, Nonce: pc.verified.Key.NonceHex()}
}

// settlementRecord is the txn record of a settled payment.
func settlementRecord(c *call) *ledger.Record {
	sr := &c.pay.result
	return &ledger.Record{Type: ledger.TypeTxn, At: c.start, RequestID: string(c.reqID), Principal: c.principal(),
		Tool: c.rt.tool.ID, Kind: ledger.KindX402Settlement, Amount: c.pay.amount,
		Payer: c.pay.verified.Payer, Network: sr.Network, TxHash: sr.Transaction, Reason: c.pay.extNote}
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

// extensionResponses records a facilitator's EXTENSION-RESPONSES: counted
// by extension and status; a rejection (a Bazaar listing refused) is
// logged and noted on the settlement's txn record ("bazaar_rejected: …").
func (g *Gateway) extensionResponses(c *call, raw string) {
	for _, e := range x402.ParseExtensionResponses(raw) {
		g.metrics.extResponses.WithLabelValues(e.Extension, e.Status).Inc()
		if e.Status == "rejected" {
			g.log.Warn("facilitator rejected an extension of the payment", "request_id", string(c.reqID),
				"tool", c.rt.tool.ID, "extension", e.Extension, "reason", e.Reason)
			note := e.Extension + "_rejected"
			if e.Reason != "" {
				note += ": " + e.Reason
			}
			if len(note) > 200 {
				note = note[:200]
			}
			c.pay.extNote = note
		}
	}
}

// reconciler is what follows pending settlements: the configured
// Reconciler, else the Settler when it can (on-chain settlement), else nil.
func (g *Gateway) reconciler() Reconciler {
	if rc := g.opts.X402.Reconciler; rc != nil {
		return rc
	}
	rc, _ := g.opts.X402.Settler.(Reconciler)
	return rc
}
