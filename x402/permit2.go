package x402

import (
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/holiman/uint256"
)

// The x402 `upto` scheme (specs/schemes/upto/scheme_upto_evm.md): the payer
// signs a Permit2 PermitWitnessTransferFrom for at most the price, naming
// the upto proxy as spender and, in the witness, the payee and the one
// facilitator allowed to settle; the facilitator settles the actual amount
// (at most the signed one) through the proxy.

// SchemeUpto is the usage-priced scheme.
const SchemeUpto = "upto"

var (
	// Permit2Address is the canonical Permit2 contract (the same on every
	// EVM chain).
	Permit2Address = common.HexToAddress("0x000000000022D473030F116dDEE9F6B43aC78BA3")
	// UptoProxyAddress is the x402UptoPermit2Proxy, the spender every upto
	// authorization names (the same on every EVM chain).
	UptoProxyAddress = common.HexToAddress("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002")
)

// upto reason strings (the reference facilitator's vocabulary).
const (
	ReasonUptoScheme         = "invalid_upto_evm_scheme"
	ReasonUptoNetwork        = "invalid_upto_evm_network_mismatch"
	ReasonUptoPayload        = "invalid_upto_evm_payload"
	ReasonUptoFacilitator    = "upto_facilitator_mismatch"
	ReasonUptoExceedsAmount  = "invalid_upto_evm_payload_settlement_exceeds_amount"
	ReasonPermit2Spender     = "invalid_permit2_spender"
	ReasonPermit2Recipient   = "invalid_permit2_recipient_mismatch"
	ReasonPermit2Deadline    = "permit2_deadline_expired"
	ReasonPermit2NotYetValid = "permit2_not_yet_valid"
	ReasonPermit2Amount      = "permit2_amount_mismatch"
	ReasonPermit2Token       = "permit2_token_mismatch"
	ReasonPermit2Signature   = "invalid_permit2_signature"
	ReasonPermit2NonceUsed   = "permit2_invalid_nonce"
)

var (
	permit2DomainTypeHash     = crypto.Keccak256Hash([]byte("EIP712Domain(string name,uint256 chainId,address verifyingContract)"))
	permit2NameHash           = crypto.Keccak256Hash([]byte("Permit2"))
	tokenPermissionsHash      = crypto.Keccak256Hash([]byte("TokenPermissions(address token,uint256 amount)"))
	uptoWitnessTypeHash       = crypto.Keccak256Hash([]byte("Witness(address to,address facilitator,uint256 validAfter)"))
	uptoPermitWitnessTypeHash = crypto.Keccak256Hash([]byte("PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)" +
		"TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)"))
)

// Permit2Authorization is the message of an upto payment: Permit2's
// PermitWitnessTransferFrom with the upto witness. Amounts, the nonce and
// times are uint256 on the wire; Deadline and ValidAfter are Unix seconds.
type Permit2Authorization struct {
	From            common.Address // the owner who signed
	Token           common.Address // permitted.token
	Amount          uint256.Int    // permitted.amount: the most that can be settled
	Spender         common.Address // the upto proxy
	Nonce           uint256.Int    // Permit2 unordered nonce
	Deadline        uint256.Int
	To, Facilitator common.Address // witness
	ValidAfter      uint256.Int    // witness
}

// Permit2DomainSeparator returns Permit2's EIP-712 domain separator on a
// chain: {name "Permit2", chainId, verifyingContract Permit2Address}, no
// version.
func Permit2DomainSeparator(chainID uint64) common.Hash {
	var buf [4 * 32]byte
	copy(buf[0:], permit2DomainTypeHash[:])
	copy(buf[32:], permit2NameHash[:])
	uint256.NewInt(chainID).PutUint256(buf[64:96])
	copy(buf[96+12:], Permit2Address[:])
	return crypto.Keccak256Hash(buf[:])
}

// WitnessHash returns hashStruct(Witness) of a.
func (a *Permit2Authorization) WitnessHash() common.Hash {
	var buf [4 * 32]byte
	copy(buf[0:], uptoWitnessTypeHash[:])
	copy(buf[32+12:], a.To[:])
	copy(buf[64+12:], a.Facilitator[:])
	a.ValidAfter.PutUint256(buf[96:128])
	return crypto.Keccak256Hash(buf[:])
}

// StructHash returns hashStruct(PermitWitnessTransferFrom) of a.
func (a *Permit2Authorization) StructHash() common.Hash {
	var tp [3 * 32]byte
	copy(tp[0:], tokenPermissionsHash[:])
	copy(tp[32+12:], a.Token[:])
	a.Amount.PutUint256(tp[64:96])
	var buf [6 * 32]byte
	copy(buf[0:], uptoPermitWitnessTypeHash[:])
	copy(buf[32:], crypto.Keccak256(tp[:]))
	copy(buf[64+12:], a.Spender[:])
	a.Nonce.PutUint256(buf[96:128])
	a.Deadline.PutUint256(buf[128:160])
	w := a.WitnessHash()
	copy(buf[160:], w[:])
	return crypto.Keccak256Hash(buf[:])
}

// Digest returns the EIP-712 digest the payer signed (domain: see
// Permit2DomainSeparator).
func (a *Permit2Authorization) Digest(domain common.Hash) common.Hash {
	var buf [2 + 2*32]byte
	buf[0], buf[1] = 0x19, 0x01
	copy(buf[2:], domain[:])
	sh := a.StructHash()
	copy(buf[34:], sh[:])
	return crypto.Keccak256Hash(buf[:])
}
