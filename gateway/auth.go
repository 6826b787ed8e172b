package gateway

import (
	"crypto/sha256"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// authenticator identifies callers of one kind (API keys, x402 payments,
// next OIDC bearer tokens). The gateway tries its authenticators in order
// (Gateway.auths) until one says the credentials are its kind:
//
//   - not its kind: mine false; the next one tries;
//   - its kind, valid: mine true, the identity;
//   - its kind, refused: mine true and the decision that answers the call;
//   - could not decide (a store down): an error; the call answers 503 and
//     the error is logged, never shown.
type authenticator interface {
	authenticate(c *call) (id callerIdentity, mine bool, d *Decision, err error)
}

// callerIdentity is what an authenticator establishes: who, at which tier,
// and for an x402 payer the payment with its nonce held.
type callerIdentity struct {
	who  identity.Principal
	tier policy.Tier
	pay  *paidCall
	eff  *policy.Effective // set when the identity decides the policy (access tokens); else tier and override do
}

// keyAuth identifies API-key holders.
type keyAuth struct{ keys KeyStore }

var bodyInvalidKey = fixed(401, outUnauthenticated, "invalid_api_key", "Invalid API key")

func (a keyAuth) authenticate(c *call) (callerIdentity, bool, *Decision, error) {
	if !c.req.hasKey {
		return callerIdentity{}, false, nil, nil
	}
	k, ok := c.req.key, c.req.key != nil
	if !ok {
		k, ok = a.keys.Authenticate(c.req.apiKey, c.start)
	}
	if !ok {
		return callerIdentity{}, true, bodyInvalidKey, nil
	}
	who := k.Who()
	return callerIdentity{who: who, tier: c.st.tierOf(who)}, true, nil, nil
}

// paymentAuth identifies x402 payers of priced tools: decode, match against
// the tool's own requirements, verify locally, lock the nonce. A signature
// only the settlement backend can check (a smart wallet's) names its
// claimed payer here; it is verified remotely in the confirm stage, after
// the nonce lock, policy and quota, so that a denied, replayed or
// over-quota payment never reaches the backend.
type paymentAuth struct{ g *Gateway }

func (a paymentAuth) authenticate(c *call) (callerIdentity, bool, *Decision, error) {
	offer := c.rt.offer
	if offer == nil || len(c.req.payment) == 0 {
		return callerIdentity{}, false, nil, nil
	}
	g := a.g
	var p *x402.Payment
	var err error
	if c.req.paymentJSON {
		p, err = x402.DecodeJSON(c.req.payment, 0)
	} else {
		p, err = x402.Decode(c.req.payment, c.req.paymentVersion)
	}
	if err != nil {
		return callerIdentity{}, true, c.decide(400, outPaymentInvalid, "malformed_payment", "Malformed payment header").
			str("reason", x402.MalformedReason(err)), nil
	}
	v, err := offer.Verify(p, c.start, g.minValidFor(c.rt.tool))
	if err != nil {
		return callerIdentity{}, true, c.decide(400, outPaymentInvalid, "malformed_payment", "Malformed payment header"), nil
	}
	pc := &paidCall{p: p, version: p.Version, verified: v, upto: p.Scheme == x402.SchemeUpto, amount: c.rt.tool.Price}
	switch v.Status {
	case x402.StatusValid:
		g.metrics.x402Verify.WithLabelValues("valid").Inc()
	case x402.StatusNeedsRemote:
		pc.needsRemote = true
	default:
		g.metrics.x402Verify.WithLabelValues("invalid").Inc()
		return callerIdentity{pay: pc}, true, paymentInvalid(c, v.Reason), nil
	}
	if pc.needsRemote || settlesAfter(c.rt.tool, pc) {
		pc.digest = sha256.Sum256(c.req.payment)
	}
	who := identity.WalletPrincipal(v.Payer)
	id, err := p.PaymentID()
	if err != nil {
		return callerIdentity{who: who, tier: c.st.tierOf(who), pay: pc}, true,
			c.decide(400, outPaymentInvalid, "malformed_payment", "Malformed payment header").str("reason", x402.MalformedReason(err)), nil
	}
	if id != "" {
		if d := g.claimAnswer(c, pc, paymentIDAnswerKey(v.Payer, id), "payment_identifier"); d != nil {
			return callerIdentity{who: who, tier: c.st.tierOf(who), pay: pc}, true, d, nil
		}
	}
	ok, err := g.opts.X402.Nonces.Lock(v.Key, v.ValidBefore)
	if err != nil {
		return callerIdentity{who: who, pay: pc}, true, nil, &storeError{op: "nonce lock", err: err,
			d: fixed(503, outPaymentUnavailable, "nonce_store_unavailable", "Payment store unavailable; nothing was charged")}
	}
	if !ok {
		if d := g.pendingReplay(c, pc); d != nil {
			return callerIdentity{who: who, tier: c.st.tierOf(who), pay: pc}, true, d, nil
		}
		reason := x402.ReasonNonceUsed
		if pc.upto {
			reason = x402.ReasonPermit2NonceUsed
		}
		return callerIdentity{who: who, pay: pc}, true, paymentInvalid(c, reason), nil
	}
	pc.nonceHeld = true
	return callerIdentity{who: who, tier: c.st.tierOf(who), pay: pc}, true, nil, nil
}

// storeError is an authenticator's "could not decide": the error to log
// and the decision to answer with.
type storeError struct {
	op  string
	err error
	d   *Decision
}

func (e *storeError) Error() string { return e.op + ": " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }
