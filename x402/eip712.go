package x402

import (
	"bytes"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/holiman/uint256"
)

var (
	domainTypeHash = crypto.Keccak256Hash([]byte("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"))
	// transferTypeHash is keccak256 of the EIP-3009 TransferWithAuthorization
	// type (0x7c7c6cdb…2267, x402-notes.md §3.2).
	transferTypeHash = crypto.Keccak256Hash([]byte("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))
	// secp256k1N is the curve order; signatures with s > N/2 are
	// rejected by USDC.
	secp256k1N     = bytes32(crypto.S256().Params().N)
	secp256k1HalfN = bytes32(new(big.Int).Rsh(crypto.S256().Params().N, 1))
)

func bytes32(x *big.Int) (b [32]byte) {
	x.FillBytes(b[:])
	return b
}

func isZero32(b []byte) bool {
	var z [32]byte
	return bytes.Equal(b, z[:])
}

// Authorization is an EIP-3009 TransferWithAuthorization message. Amounts
// and times are uint256 on the wire; ValidAfter and ValidBefore are Unix
// seconds.
type Authorization struct {
	From, To                       common.Address
	Value, ValidAfter, ValidBefore uint256.Int
	Nonce                          [32]byte
}

// DomainSeparator returns the EIP-712 domain separator of an EIP-3009 token.
func DomainSeparator(name, version string, chainID uint64, token common.Address) common.Hash {
	var buf [5 * 32]byte
	copy(buf[0:], domainTypeHash[:])
	copy(buf[32:], crypto.Keccak256([]byte(name)))
	copy(buf[64:], crypto.Keccak256([]byte(version)))
	uint256.NewInt(chainID).PutUint256(buf[96:128])
	copy(buf[128+12:], token[:])
	return crypto.Keccak256Hash(buf[:])
}

// StructHash returns hashStruct(TransferWithAuthorization) of a.
func (a *Authorization) StructHash() common.Hash {
	var buf [7 * 32]byte
	copy(buf[0:], transferTypeHash[:])
	copy(buf[32+12:], a.From[:])
	copy(buf[64+12:], a.To[:])
	a.Value.PutUint256(buf[96:128])
	a.ValidAfter.PutUint256(buf[128:160])
	a.ValidBefore.PutUint256(buf[160:192])
	copy(buf[192:], a.Nonce[:])
	return crypto.Keccak256Hash(buf[:])
}

// Digest returns the EIP-712 digest keccak256(0x1901 ‖ domain ‖ hashStruct(a))
// that the payer signed.
func (a *Authorization) Digest(domain common.Hash) common.Hash {
	var buf [2 + 2*32]byte
	buf[0], buf[1] = 0x19, 0x01
	copy(buf[2:], domain[:])
	sh := a.StructHash()
	copy(buf[34:], sh[:])
	return crypto.Keccak256Hash(buf[:])
}

// recoverEOA recovers the signer of digest from a 65-byte r‖s‖v signature
// (v 27/28 or 0/1). ok is false when the signature cannot be an EOA
// signature the token would accept (bad v, zero or high s, no recovery).
func recoverEOA(digest common.Hash, sig []byte) (signer common.Address, ok bool) {
	if len(sig) != 65 {
		return common.Address{}, false
	}
	var s65 [65]byte
	copy(s65[:], sig)
	switch v := s65[64]; v {
	case 27, 28:
		s65[64] = v - 27
	case 0, 1:
	default:
		return common.Address{}, false
	}
	// 1 ≤ r < N and 1 ≤ s ≤ N/2 (USDC rejects high s), without big.Int.
	r, s := s65[:32], s65[32:64]
	if isZero32(r) || isZero32(s) || bytes.Compare(r, secp256k1N[:]) >= 0 || bytes.Compare(s, secp256k1HalfN[:]) > 0 {
		return common.Address{}, false
	}
	pub, err := crypto.Ecrecover(digest[:], s65[:])
	if err != nil || len(pub) != 65 {
		return common.Address{}, false
	}
	copy(signer[:], crypto.Keccak256(pub[1:])[12:])
	return signer, true
}
