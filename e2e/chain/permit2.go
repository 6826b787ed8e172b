package chain

import (
	"context"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// Permit2Address is the canonical Permit2 address, where DeployPermit2
// places TestPermit2.
var Permit2Address = common.HexToAddress("0x000000000022D473030F116dDEE9F6B43aC78BA3")

// UptoProxyAddress is the x402UptoPermit2Proxy address that @x402/evm's
// upto client names as the Permit2 spender, where DeployPermit2 places
// TestUptoPermit2Proxy.
var UptoProxyAddress = common.HexToAddress("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002")

// DeployPermit2 places TestPermit2 and TestUptoPermit2Proxy at their
// canonical addresses with anvil_setCode, so that the x402 `upto` scheme
// (Permit2 witness transfers through the upto proxy) works on the chain.
// A payer must still approve Permit2 on the token (ApprovePermit2).
func DeployPermit2(t testing.TB, a *Anvil) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := a.SetCode(ctx, Permit2Address, LoadArtifact(t, "TestPermit2").DeployedBytecode); err != nil {
		t.Fatal(err)
	}
	if err := a.SetCode(ctx, UptoProxyAddress, LoadArtifact(t, "TestUptoPermit2Proxy").DeployedBytecode); err != nil {
		t.Fatal(err)
	}
}

// ApprovePermit2 has owner approve Permit2 to move amount of its TestUSDC
// (the one-time ERC-20 approval the upto scheme needs), in a transaction
// owner signs and pays for.
func ApprovePermit2(t testing.TB, a *Anvil, owner Account, amount *big.Int) {
	t.Helper()
	data, err := TokenABI(t).Pack("approve", Permit2Address, amount)
	if err != nil {
		t.Fatalf("pack approve: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := Transact(ctx, a, owner, USDCAddress, data, 0); err != nil {
		t.Fatalf("approve Permit2 for %s: %v", owner.Address, err)
	}
}

// Permit2NonceUsed reports whether Permit2 nonce of owner has been used.
func Permit2NonceUsed(t testing.TB, a *Anvil, owner common.Address, nonce *big.Int) bool {
	t.Helper()
	p2 := LoadArtifact(t, "TestPermit2").ABI
	word := new(big.Int).Rsh(nonce, 8)
	data, err := p2.Pack("nonceBitmap", owner, word)
	if err != nil {
		t.Fatalf("pack nonceBitmap: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ret, err := a.eth.CallContract(ctx, ethereum.CallMsg{To: &Permit2Address, Data: data}, nil)
	if err != nil {
		t.Fatalf("call nonceBitmap: %v", err)
	}
	bits := new(big.Int).SetBytes(ret)
	return bits.Bit(int(new(big.Int).And(nonce, big.NewInt(0xff)).Int64())) == 1
}

// SignPermit2 signs an upto authorization's Permit2 EIP-712 digest as
// owner (x402.Permit2Authorization.Digest under
// x402.Permit2DomainSeparator(ChainID): this package does not import x402,
// whose tests import it), with v 27 or 28 as wallets produce.
func SignPermit2(owner Account, digest common.Hash) ([]byte, error) {
	sig, err := crypto.Sign(digest[:], owner.Key)
	if err != nil {
		return nil, err
	}
	sig[64] += 27
	return sig, nil
}
