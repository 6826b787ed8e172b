package chain

import (
	"crypto/ecdsa"
	"encoding/hex"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// Account is a key pair usable as payer, payee or relayer. Account values
// are immutable and safe to share.
type Account struct {
	// Address is the checksummed account address.
	Address common.Address
	// Key is the secp256k1 private key.
	Key *ecdsa.PrivateKey
	// KeyHex is Key as 0x-prefixed hex, the form the node scripts read.
	KeyHex string
}

// anvilKeys are the first ten keys of anvil's default mnemonic
// ("test test test test test test test test test test test junk"). They are
// public and hold value on no real chain.
var anvilKeys = [10]string{
	"0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
	"0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
	"0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
	"0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
	"0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
	"0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
	"0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
	"0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
	"0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
	"0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
}

// Accounts are anvil's ten default accounts, each funded with 10 000 ETH on
// a fresh chain. The named roles below are conventions of this package;
// tests may use any account, but should not send transactions from one
// account concurrently from two processes (nonce races).
var Accounts = func() [10]Account {
	var out [10]Account
	for i, h := range anvilKeys {
		out[i] = MustAccount(h)
	}
	return out
}()

// Named roles among Accounts.
var (
	// Relayer pays gas for settlements: the facilitator's default signer.
	Relayer = Accounts[0]
	// Payer is the default x402 payer (a wallet with test USDC, no ETH needed).
	Payer = Accounts[1]
	// PayTo is the default merchant address that receives payments.
	PayTo = Accounts[2]
	// Minter sends the mint transactions of Mint; reserved for it.
	Minter = Accounts[9]
)

// MustAccount parses a 0x-prefixed hex private key; it panics on a bad key
// (for package-level test fixtures).
func MustAccount(keyHex string) Account {
	k, err := crypto.HexToECDSA(trim0x(keyHex))
	if err != nil {
		panic("chain: bad private key: " + err.Error())
	}
	return accountFromKey(k)
}

// NewAccount returns a fresh random account with no ETH and no tokens.
func NewAccount(t testing.TB) Account {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return accountFromKey(k)
}

func accountFromKey(k *ecdsa.PrivateKey) Account {
	return Account{
		Address: crypto.PubkeyToAddress(k.PublicKey),
		Key:     k,
		KeyHex:  "0x" + hex.EncodeToString(crypto.FromECDSA(k)),
	}
}

func trim0x(s string) string {
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		return s[2:]
	}
	return s
}
