package x402

import (
	"errors"
	"math"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/holiman/uint256"

	"github.com/toolgate/toolgate/money"
)

// x402 reason strings (the reference Go facilitator's vocabulary, see
// x402-notes.md §3.4; clients must not switch on them). ReasonAssetMismatch
// is toolgate's own: the references fold it into "no matching requirements".
const (
	ReasonScheme            = "invalid_exact_evm_scheme"
	ReasonNetworkMismatch   = "invalid_exact_evm_network_mismatch"
	ReasonInvalidPayload    = "invalid_exact_evm_payload"
	ReasonMissingSignature  = "invalid_exact_evm_payload_missing_signature"
	ReasonSignatureFormat   = "invalid_exact_evm_signature_format"
	ReasonRecipientMismatch = "invalid_exact_evm_recipient_mismatch"
	ReasonAssetMismatch     = "invalid_exact_evm_asset_mismatch"
	ReasonValueMismatch     = "invalid_exact_evm_payload_authorization_value_mismatch"
	ReasonValidBefore       = "invalid_exact_evm_payload_authorization_valid_before"
	ReasonValidAfter        = "invalid_exact_evm_payload_authorization_valid_after"
	ReasonSignature         = "invalid_exact_evm_signature"
	ReasonNonceUsed         = "invalid_exact_evm_nonce_already_used"
	ReasonInsufficientFunds = "invalid_exact_evm_insufficient_balance"
	ReasonNotEIP3009        = "invalid_exact_evm_eip3009_not_supported"
	ReasonSimulationFailed  = "invalid_exact_evm_transaction_simulation_failed"
	ReasonTransferFailed    = "invalid_exact_evm_failed_to_execute_transfer"
	ReasonTransactionFailed = "invalid_exact_evm_transaction_failed"
	ReasonSettlementPending = "settlement_pending"
)

// ErrNilPayment is returned by Verify for a nil payment.
var ErrNilPayment = errors.New("x402: nil payment")

// Status is the outcome of a local verification. The zero value is
// StatusInvalid, so an unset result fails closed.
type Status uint8

const (
	// StatusInvalid: the payment must be rejected (402 with Reason).
	StatusInvalid Status = iota
	// StatusValid: every local check passed and the EOA signature
	// recovers to the payer.
	StatusValid
	// StatusNeedsRemote: every check passed except that the signature is
	// not an EOA signature by `from`; it may be a smart-wallet
	// (EIP-1271 / ERC-6492) signature that only a facilitator or an RPC
	// node can check. Reason holds the local verdict, to use when no remote
	// verifier is configured.
	StatusNeedsRemote
)

// String returns "invalid", "valid" or "needs_remote".
func (s Status) String() string {
	switch s {
	case StatusValid:
		return "valid"
	case StatusNeedsRemote:
		return "needs_remote"
	}
	return "invalid"
}

// Verified is the decision of Offer.Verify. Payer, From, Key, Amount and
// ValidBefore are filled whenever the authorization decoded, also for an
// invalid payment (as a claim, for logging).
type Verified struct {
	Status Status
	// Reason is an x402 reason string ("" when Status is StatusValid).
	Reason string
	// Payer is From, EIP-55 checksummed.
	Payer string
	From  common.Address
	// Key identifies the authorization for the NonceLock.
	Key NonceKey
	// Amount is the authorized value (equal to the price when valid).
	Amount money.Micros
	// ValidBefore is the authorization's deadline.
	ValidBefore time.Time
}

// OK reports whether the payment passed every local check.
func (v Verified) OK() bool { return v.Status == StatusValid }

// Verify checks p against the offer without any I/O: scheme, network and
// (v2) the echoed amount, asset and payTo must match the offer; the
// authorization must pay exactly the price to PayTo, be valid at now and
// stay valid for at least minValidFor; and its EIP-712 signature must
// recover to `from`. The result is a decision; the error is non-nil only
// for a nil payment. Verify is safe for concurrent use; its cost is one
// secp256k1 recovery plus three Keccak hashes (the domain separator is
// cached in the offer).
func (o *Offer) Verify(p *Payment, now time.Time, minValidFor time.Duration) (Verified, error) {
	if p == nil {
		return Verified{}, ErrNilPayment
	}
	if p.Scheme == SchemeUpto && o.reqUpto != nil {
		return o.verifyUpto(p, now, minValidFor), nil
	}
	a := &p.Authorization
	v := Verified{
		From:        a.From,
		Key:         NonceKey{ChainID: o.chainID, Asset: o.cfg.Asset, From: a.From, Nonce: a.Nonce},
		ValidBefore: unixTime(&a.ValidBefore),
	}
	if p.problem == "" {
		v.Payer = a.From.Hex()
		if a.Value.IsUint64() && a.Value.Uint64() <= math.MaxInt64 {
			v.Amount = money.Micros(a.Value.Uint64())
		}
	}
	invalid := func(reason string) (Verified, error) {
		v.Status, v.Reason = StatusInvalid, reason
		return v, nil
	}
	if p.Scheme != SchemeExact {
		return invalid(ReasonScheme)
	}
	switch p.Version {
	case 1:
		if o.v1Network == "" || p.Network != o.v1Network {
			return invalid(ReasonNetworkMismatch)
		}
	default:
		if p.Network != o.cfg.Network {
			return invalid(ReasonNetworkMismatch)
		}
		acc := &p.Accepted
		if !strings.EqualFold(acc.Asset, o.assetHex) {
			return invalid(ReasonAssetMismatch)
		}
		if !strings.EqualFold(acc.PayTo, o.payToHex) {
			return invalid(ReasonRecipientMismatch)
		}
		if acc.Amount != o.amount {
			return invalid(ReasonValueMismatch)
		}
	}
	if p.problem != "" {
		return invalid(p.problem)
	}
	if a.To != o.cfg.PayTo {
		return invalid(ReasonRecipientMismatch)
	}
	if !a.Value.IsUint64() || a.Value.Uint64() != uint64(o.res.Price) {
		return invalid(ReasonValueMismatch)
	}
	// A validBefore beyond uint64 never expires.
	if a.ValidBefore.IsUint64() && a.ValidBefore.Uint64() < uint64(max(now.Add(minValidFor).Unix(), 0)) {
		return invalid(ReasonValidBefore)
	}
	if !a.ValidAfter.IsUint64() || a.ValidAfter.Uint64() > uint64(max(now.Unix(), 0)) {
		return invalid(ReasonValidAfter)
	}
	sig := p.Signature
	if len(sig) != 65 {
		// Not an ECDSA signature: perhaps a smart wallet's (EIP-1271,
		// ERC-6492); only the settlement backend can tell.
		v.Status, v.Reason = StatusNeedsRemote, ReasonSignature
		return v, nil
	}
	if sig[64] != 27 && sig[64] != 28 && sig[64] != 0 && sig[64] != 1 {
		// 65 bytes with a recovery id no wallet produces: refused here,
		// so that it answers 402 even when the backend is down.
		return invalid(ReasonSignature)
	}
	signer, ok := recoverEOA(a.Digest(o.domain), sig)
	if !ok {
		return invalid(ReasonSignature)
	}
	if signer != a.From {
		v.Status, v.Reason = StatusNeedsRemote, ReasonSignature
		return v, nil
	}
	v.Status = StatusValid
	return v, nil
}

func unixTime(x *uint256.Int) time.Time {
	if !x.IsUint64() || x.Uint64() > math.MaxInt64/2 {
		return time.Unix(math.MaxInt64/2, 0)
	}
	return time.Unix(int64(x.Uint64()), 0)
}

// verifyUpto is Verify for an upto payment to an offer that accepts upto
// (an offer without it refuses the scheme like any other) (x402
// specs/schemes/upto, "Verification Logic", the parts that need no
// chain): v2 only; the echoed requirements must match it; the Permit2
// authorization must name the upto proxy as spender, the payee as witness
// recipient and this offer's facilitator, permit exactly the price of the
// offer's asset, be valid now and stay valid for minValidFor; and its
// EIP-712 signature (Permit2's domain) must recover to `from`. Key names
// the Permit2 nonce (Asset is Permit2Address: Permit2 keeps the nonces).
func (o *Offer) verifyUpto(p *Payment, now time.Time, minValidFor time.Duration) Verified {
	m := &p.Permit2
	v := Verified{
		From:        m.From,
		Key:         NonceKey{ChainID: o.chainID, Asset: Permit2Address, From: m.From, Nonce: m.Nonce.Bytes32()},
		ValidBefore: unixTime(&m.Deadline),
	}
	if p.problem == "" {
		v.Payer = m.From.Hex()
		if m.Amount.IsUint64() && m.Amount.Uint64() <= math.MaxInt64 {
			v.Amount = money.Micros(m.Amount.Uint64())
		}
	}
	invalid := func(reason string) Verified {
		v.Status, v.Reason = StatusInvalid, reason
		return v
	}
	if p.Version != 2 {
		return invalid(ReasonUptoScheme)
	}
	if p.Network != o.cfg.Network {
		return invalid(ReasonUptoNetwork)
	}
	acc := &p.Accepted
	switch {
	case !strings.EqualFold(acc.Asset, o.assetHex):
		return invalid(ReasonAssetMismatch)
	case !strings.EqualFold(acc.PayTo, o.payToHex):
		return invalid(ReasonRecipientMismatch)
	case acc.Amount != o.amount:
		return invalid(ReasonPermit2Amount)
	case p.problem != "":
		return invalid(p.problem)
	case m.Spender != UptoProxyAddress:
		return invalid(ReasonPermit2Spender)
	case m.To != o.cfg.PayTo:
		return invalid(ReasonPermit2Recipient)
	case m.Facilitator != o.cfg.UptoFacilitator:
		return invalid(ReasonUptoFacilitator)
	case m.Token != o.cfg.Asset:
		return invalid(ReasonPermit2Token)
	case !m.Amount.IsUint64() || m.Amount.Uint64() != uint64(o.res.Price):
		return invalid(ReasonPermit2Amount)
	case m.Deadline.IsUint64() && m.Deadline.Uint64() < uint64(max(now.Add(minValidFor).Unix(), 0)):
		return invalid(ReasonPermit2Deadline)
	case !m.ValidAfter.IsUint64() || m.ValidAfter.Uint64() > uint64(max(now.Unix(), 0)):
		return invalid(ReasonPermit2NotYetValid)
	}
	sig := p.Signature
	if len(sig) != 65 {
		// Perhaps a smart wallet's (EIP-1271, ERC-6492): the facilitator decides.
		v.Status, v.Reason = StatusNeedsRemote, ReasonPermit2Signature
		return v
	}
	signer, ok := recoverEOA(m.Digest(o.permit2Domain), sig)
	if !ok {
		return invalid(ReasonPermit2Signature)
	}
	if signer != m.From {
		v.Status, v.Reason = StatusNeedsRemote, ReasonPermit2Signature
		return v
	}
	v.Status = StatusValid
	return v
}
