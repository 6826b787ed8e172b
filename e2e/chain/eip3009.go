package chain

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/toolgate/toolgate/money"
)

// EIP-712 type hashes used by EIP-3009.
var (
	domainTypeHash = crypto.Keccak256Hash([]byte(
		"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"))
	// TransferWithAuthorizationTypeHash is
	// keccak256("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)").
	TransferWithAuthorizationTypeHash = crypto.Keccak256Hash([]byte(
		"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))
)

// Authorization is an EIP-3009 TransferWithAuthorization message. The zero
// value is an authorization of nothing that no chain accepts.
type Authorization struct {
	From        common.Address
	To          common.Address
	Value       money.Micros
	ValidAfter  int64 // unix seconds; the chain requires block time > ValidAfter
	ValidBefore int64 // unix seconds; the chain requires block time < ValidBefore
	Nonce       [32]byte
}

// NewAuthorization returns an authorization of value from `from` to `to`
// with a random nonce and the validity window the reference clients use:
// ValidAfter = now-600 s, ValidBefore = now+timeout.
func NewAuthorization(from, to common.Address, value money.Micros, timeout time.Duration) Authorization {
	now := time.Now().Unix()
	auth := Authorization{
		From:        from,
		To:          to,
		Value:       value,
		ValidAfter:  now - 600,
		ValidBefore: now + int64(timeout/time.Second),
	}
	if _, err := rand.Read(auth.Nonce[:]); err != nil {
		panic("chain: crypto/rand: " + err.Error())
	}
	return auth
}

// DomainSeparatorFor computes the EIP-712 domain separator of a token with
// the given domain name and version on chainID at verifyingContract.
func DomainSeparatorFor(name, version string, chainID int64, verifyingContract common.Address) common.Hash {
	return crypto.Keccak256Hash(
		domainTypeHash[:],
		crypto.Keccak256([]byte(name)),
		crypto.Keccak256([]byte(version)),
		common.LeftPadBytes(big.NewInt(chainID).Bytes(), 32),
		common.LeftPadBytes(verifyingContract[:], 32),
	)
}

// Digest returns the EIP-712 digest of the authorization under the domain
// separator sep: keccak256(0x1901 ‖ sep ‖ hashStruct(auth)).
func (au Authorization) Digest(sep common.Hash) common.Hash {
	structHash := crypto.Keccak256(
		TransferWithAuthorizationTypeHash[:],
		common.LeftPadBytes(au.From[:], 32),
		common.LeftPadBytes(au.To[:], 32),
		common.LeftPadBytes(big.NewInt(int64(au.Value)).Bytes(), 32),
		common.LeftPadBytes(big.NewInt(au.ValidAfter).Bytes(), 32),
		common.LeftPadBytes(big.NewInt(au.ValidBefore).Bytes(), 32),
		au.Nonce[:],
	)
	return crypto.Keccak256Hash([]byte{0x19, 0x01}, sep[:], structHash)
}

// Sign signs the authorization for TestUSDC on the local chain (domain
// "USDC", "2", 84532, USDCAddress) and returns the 65-byte r‖s‖v signature
// with v = 27 or 28, as wallets produce it.
func (au Authorization) Sign(key Account) ([]byte, error) {
	return au.SignFor(key, DomainSeparatorFor(TokenName, TokenVersion, ChainID, USDCAddress))
}

// SignFor is Sign under an arbitrary domain separator.
func (au Authorization) SignFor(key Account, sep common.Hash) ([]byte, error) {
	digest := au.Digest(sep)
	sig, err := crypto.Sign(digest[:], key.Key)
	if err != nil {
		return nil, fmt.Errorf("sign authorization: %w", err)
	}
	sig[64] += 27
	return sig, nil
}

// WireJSON returns the authorization as the x402 exact-EVM payload carries
// it: every number a decimal string, the nonce 0x-prefixed hex.
func (au Authorization) WireJSON() map[string]string {
	return map[string]string{
		"from":        au.From.Hex(),
		"to":          au.To.Hex(),
		"value":       strconv.FormatInt(int64(au.Value), 10),
		"validAfter":  strconv.FormatInt(au.ValidAfter, 10),
		"validBefore": strconv.FormatInt(au.ValidBefore, 10),
		"nonce":       "0x" + hex.EncodeToString(au.Nonce[:]),
	}
}

// TransferWithAuthorization settles auth on chain directly, from the sender
// account, through the (v, r, s) overload of TestUSDC. Gas 0 estimates it
// (a failing call then returns the revert reason without a transaction);
// pass a fixed gas to force a mined, reverted transaction instead.
func TransferWithAuthorization(ctx context.Context, t testing.TB, a *Anvil, sender Account, auth Authorization, sig []byte, gas uint64) (*types.Receipt, error) {
	t.Helper()
	if len(sig) != 65 {
		return nil, fmt.Errorf("signature length: got %d, want 65", len(sig))
	}
	var r, s [32]byte
	copy(r[:], sig[:32])
	copy(s[:], sig[32:64])
	data, err := PackBySignature(TokenABI(t),
		"transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
		auth.From, auth.To, big.NewInt(int64(auth.Value)),
		big.NewInt(auth.ValidAfter), big.NewInt(auth.ValidBefore), auth.Nonce,
		sig[64], r, s)
	if err != nil {
		return nil, fmt.Errorf("pack transferWithAuthorization: %w", err)
	}
	return Transact(ctx, a, sender, USDCAddress, data, gas)
}
