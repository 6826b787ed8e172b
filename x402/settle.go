package x402

import (
	"context"
	"errors"
)

// ErrOutcomeUnknown is wrapped by Settle errors after which the payment may
// or may not have been executed (for example a timeout after the request
// reached the facilitator). Keep the nonce locked and reconcile; never ask
// the payer to sign again for the same call.
var ErrOutcomeUnknown = errors.New("x402: settlement outcome unknown")

// Settler verifies payments remotely and settles them. Both methods return
// a decision; the error is non-nil only when no decision could be obtained.
// Implementations are safe for concurrent use.
type Settler interface {
	// Verify checks that p can be settled now (signature, including smart
	// wallets; balance; nonce unused), without moving funds.
	Verify(ctx context.Context, p *Payment, o *Offer) (VerifyResult, error)
	// Settle executes the payment. The caller has verified p against o and
	// holds its nonce lock.
	Settle(ctx context.Context, p *Payment, o *Offer) (SettleResult, error)
}

// VerifyResult is a remote verification decision.
type VerifyResult struct {
	Valid bool
	// Reason is the x402 invalid reason when !Valid; Message may add detail
	// for logs (never echo it to clients verbatim).
	Reason, Message string
	Payer           string
	// Extensions is the facilitator's EXTENSION-RESPONSES (JSON), if any.
	Extensions string
}

// SettleResult is a settlement outcome.
type SettleResult struct {
	// Success: the funds moved (Transaction is the hash).
	Success bool
	// Pending: a transaction was broadcast but its outcome is not known
	// yet (Transaction is set; Reason is "settlement_pending"). Keep the
	// nonce locked and reconcile.
	Pending bool
	// Reason and Message explain a failure (neither Success nor Pending).
	Reason, Message string
	Payer           string
	Transaction     string
	// Network in the naming of the payment's protocol version.
	Network string
	// Extensions is the facilitator's EXTENSION-RESPONSES (JSON), if any.
	Extensions string
	// Amount is the amount charged in atomic units, for an upto payment
	// (the actual cost); "" otherwise.
	Amount string
}

// Response returns the PAYMENT-RESPONSE / X-PAYMENT-RESPONSE object of r.
// A pending settlement is reported as success:false with errorReason
// "settlement_pending" and the transaction hash.
func (r SettleResult) Response() SettleResponse {
	s := SettleResponse{Success: r.Success, Payer: r.Payer, Network: r.Network, Transaction: r.Transaction, Amount: r.Amount}
	if !r.Success {
		s.ErrorReason = r.Reason
		if r.Pending && s.ErrorReason == "" {
			s.ErrorReason = ReasonSettlementPending
		}
	}
	return s
}
