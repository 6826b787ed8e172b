package chain

import (
	"context"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/toolgate/toolgate/money"
)

// Known-answer values from x402-notes.md §3.2, computed there with
// go-ethereum's apitypes.
const (
	baseSepoliaUSDCDomainSeparator = "0x71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818"
	vectorDigest                   = "0x5c80a531986e344baf32e086580dd6f14396febfae3b651251219a75f93a5351"
	vectorSignature                = "0x70e8bd32960802b0ce8baf6a5cad7e015e51de2a9b7b276a9163c9f5fb99d3f5367a6902f1ae4681336ee4056f3c8c5c83d0b7e8fb7de440ddcb49151eaef2501c"
)

func TestAuthorization_Sign(t *testing.T) {
	// The x402-notes §1.9 vector: a throwaway key, keccak256("x402-test-key-do-not-fund").
	key := MustAccount(hex.EncodeToString(crypto.Keccak256([]byte("x402-test-key-do-not-fund"))))
	if got, want := key.Address, common.HexToAddress("0x680a3d384acf515f0fC5FaE2eE41A95b6905deF7"); got != want {
		t.Fatalf("vector key address: got %s, want %s", got, want)
	}
	auth := Authorization{
		From:        key.Address,
		To:          common.HexToAddress("0x209693Bc6afc0C5328bA36FaF03C514EF312287C"),
		Value:       10000,
		ValidAfter:  1740671489,
		ValidBefore: 1740672149,
		Nonce:       common.HexToHash("0x9c6230254ac733f54ec47298f0a5ddaf93dc9efe6e05fb726dcb6faf10ddece2"),
	}
	t.Run("DomainSeparator", func(t *testing.T) {
		got := DomainSeparatorFor(TokenName, TokenVersion, ChainID, USDCAddress)
		if got.Hex() != baseSepoliaUSDCDomainSeparator {
			t.Errorf("got %s, want %s", got.Hex(), baseSepoliaUSDCDomainSeparator)
		}
	})
	t.Run("Digest", func(t *testing.T) {
		got := auth.Digest(DomainSeparatorFor(TokenName, TokenVersion, ChainID, USDCAddress))
		if got.Hex() != vectorDigest {
			t.Errorf("got %s, want %s", got.Hex(), vectorDigest)
		}
	})
	t.Run("Signature", func(t *testing.T) {
		sig, err := auth.Sign(key)
		if err != nil {
			t.Fatal(err)
		}
		if got := "0x" + hex.EncodeToString(sig); got != vectorSignature {
			t.Errorf("got %s, want %s", got, vectorSignature)
		}
	})
}

// newTokenChain starts a chain with TestUSDC and 10 USDC minted to Payer.
func newTokenChain(t *testing.T) *Anvil {
	t.Helper()
	a := Start(t)
	DeployUSDC(t, a)
	Mint(t, a, Payer.Address, 10*money.PerUSD)
	return a
}

func TestTestUSDC_Metadata(t *testing.T) {
	a := newTokenChain(t)
	t.Run("DomainSeparator", func(t *testing.T) {
		got := common.Hash(DomainSeparator(t, a))
		if got.Hex() != baseSepoliaUSDCDomainSeparator {
			t.Errorf("on-chain DOMAIN_SEPARATOR: got %s, want %s", got.Hex(), baseSepoliaUSDCDomainSeparator)
		}
	})
	tests := []struct {
		name   string
		method string
		want   any
	}{
		{name: "Name", method: "name", want: "USDC"},
		{name: "Symbol", method: "symbol", want: "USDC"},
		{name: "Version", method: "version", want: "2"},
		{name: "Decimals", method: "decimals", want: uint8(6)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			switch want := tc.want.(type) {
			case string:
				var got string
				callToken(t, a, &got, tc.method)
				if got != want {
					t.Errorf("%s(): got %q, want %q", tc.method, got, want)
				}
			case uint8:
				var got uint8
				callToken(t, a, &got, tc.method)
				if got != want {
					t.Errorf("%s(): got %d, want %d", tc.method, got, want)
				}
			}
		})
	}
	t.Run("Mint", func(t *testing.T) {
		if got, want := BalanceOf(t, a, Payer.Address), 10*money.PerUSD; got != want {
			t.Errorf("payer balance: got %d, want %d", got, want)
		}
		var supply *big.Int
		callToken(t, a, &supply, "totalSupply")
		if supply.Int64() != int64(10*money.PerUSD) {
			t.Errorf("totalSupply: got %s, want %d", supply, 10*money.PerUSD)
		}
	})
}

func TestTestUSDC_TransferWithAuthorization(t *testing.T) {
	a := newTokenChain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const price = 10_000 // $0.01

	t.Run("OK", func(t *testing.T) {
		payTo := NewAccount(t).Address
		before := BalanceOf(t, a, Payer.Address)
		auth := NewAuthorization(Payer.Address, payTo, price, time.Minute)
		sig, err := auth.Sign(Payer)
		if err != nil {
			t.Fatal(err)
		}
		if AuthorizationState(t, a, Payer.Address, auth.Nonce) {
			t.Fatal("authorizationState before settlement: got true, want false")
		}
		r, err := TransferWithAuthorization(ctx, t, a, Relayer, auth, sig, 0)
		if err != nil {
			t.Fatalf("transferWithAuthorization: %v", err)
		}
		if got := BalanceOf(t, a, payTo); got != price {
			t.Errorf("payee balance: got %d, want %d", got, price)
		}
		if got, want := BalanceOf(t, a, Payer.Address), before-price; got != want {
			t.Errorf("payer balance: got %d, want %d", got, want)
		}
		if !AuthorizationState(t, a, Payer.Address, auth.Nonce) {
			t.Error("authorizationState after settlement: got false, want true")
		}
		checkAuthorizationUsedLog(t, r, Payer.Address, auth.Nonce)

		t.Run("Replay", func(t *testing.T) {
			_, err := TransferWithAuthorization(ctx, t, a, Relayer, auth, sig, 0)
			wantRevert(t, err, "authorization is used or canceled")
			if got := BalanceOf(t, a, payTo); got != price {
				t.Errorf("payee balance after replay: got %d, want %d", got, price)
			}
		})
		t.Run("ReplayMined", func(t *testing.T) {
			// Forced past gas estimation: the transaction is mined and reverts.
			r, err := TransferWithAuthorization(ctx, t, a, Relayer, auth, sig, 200_000)
			if !errors.Is(err, ErrReverted) {
				t.Fatalf("got %v, want ErrReverted", err)
			}
			if r == nil || r.Status != types.ReceiptStatusFailed {
				t.Errorf("receipt: got %+v, want a failed receipt", r)
			}
		})
	})

	t.Run("BytesSignatureOverload", func(t *testing.T) {
		payTo := NewAccount(t).Address
		auth := NewAuthorization(Payer.Address, payTo, price, time.Minute)
		sig, err := auth.Sign(Payer)
		if err != nil {
			t.Fatal(err)
		}
		data, err := PackBySignature(TokenABI(t),
			"transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)",
			auth.From, auth.To, big.NewInt(price), big.NewInt(auth.ValidAfter), big.NewInt(auth.ValidBefore), auth.Nonce, sig)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Transact(ctx, a, Relayer, USDCAddress, data, 0); err != nil {
			t.Fatalf("transferWithAuthorization(bytes): %v", err)
		}
		if got := BalanceOf(t, a, payTo); got != price {
			t.Errorf("payee balance: got %d, want %d", got, price)
		}
	})

	now := time.Now().Unix()
	stranger := NewAccount(t)
	tests := []struct {
		name   string
		mutate func(*Authorization) // applied after signing: the signed message differs
		auth   func() Authorization
		signer Account
		want   string
	}{
		{
			name: "Expired",
			auth: func() Authorization {
				au := NewAuthorization(Payer.Address, PayTo.Address, price, 0)
				au.ValidBefore = now - 1
				return au
			},
			signer: Payer,
			want:   "authorization is expired",
		},
		{
			name: "NotYetValid",
			auth: func() Authorization {
				au := NewAuthorization(Payer.Address, PayTo.Address, price, time.Hour)
				au.ValidAfter = now + 600
				return au
			},
			signer: Payer,
			want:   "authorization is not yet valid",
		},
		{
			name:   "WrongSigner",
			auth:   func() Authorization { return NewAuthorization(Payer.Address, PayTo.Address, price, time.Minute) },
			signer: stranger,
			want:   "invalid signature",
		},
		{
			name:   "TamperedValue",
			auth:   func() Authorization { return NewAuthorization(Payer.Address, PayTo.Address, price, time.Minute) },
			mutate: func(au *Authorization) { au.Value = 2 * price },
			signer: Payer,
			want:   "invalid signature",
		},
		{
			name:   "TamperedRecipient",
			auth:   func() Authorization { return NewAuthorization(Payer.Address, PayTo.Address, price, time.Minute) },
			mutate: func(au *Authorization) { au.To = stranger.Address },
			signer: Payer,
			want:   "invalid signature",
		},
		{
			name:   "InsufficientBalance",
			auth:   func() Authorization { return NewAuthorization(stranger.Address, PayTo.Address, price, time.Minute) },
			signer: stranger,
			want:   "transfer amount exceeds balance",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			auth := tc.auth()
			sig, err := auth.Sign(tc.signer)
			if err != nil {
				t.Fatal(err)
			}
			if tc.mutate != nil {
				tc.mutate(&auth)
			}
			before := BalanceOf(t, a, PayTo.Address)
			_, err = TransferWithAuthorization(ctx, t, a, Relayer, auth, sig, 0)
			wantRevert(t, err, tc.want)
			if got := BalanceOf(t, a, PayTo.Address); got != before {
				t.Errorf("payee balance: got %d, want %d (unchanged)", got, before)
			}
			if AuthorizationState(t, a, auth.From, auth.Nonce) {
				t.Error("authorizationState: got true, want false after a rejected transfer")
			}
		})
	}

	t.Run("HighS", func(t *testing.T) {
		auth := NewAuthorization(Payer.Address, PayTo.Address, price, time.Minute)
		sig, err := auth.Sign(Payer)
		if err != nil {
			t.Fatal(err)
		}
		// (r, n-s, v^1) is the same signature in malleated form; EIP-2 forbids it.
		n := crypto.S256().Params().N
		s := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:64]))
		copy(sig[32:64], common.LeftPadBytes(s.Bytes(), 32))
		sig[64] = 27 + 28 - sig[64]
		_, err = TransferWithAuthorization(ctx, t, a, Relayer, auth, sig, 0)
		wantRevert(t, err, "invalid signature")
	})
}

func TestTestUSDC_ERC20(t *testing.T) {
	a := newTokenChain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tokenABI := TokenABI(t)
	spender := Accounts[3]
	dest := NewAccount(t).Address

	mustTx := func(t *testing.T, from Account, method string, args ...any) {
		t.Helper()
		data, err := tokenABI.Pack(method, args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Transact(ctx, a, from, USDCAddress, data, 0); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
	}
	t.Run("Transfer", func(t *testing.T) {
		mustTx(t, Payer, "transfer", dest, big.NewInt(1_000))
		if got := BalanceOf(t, a, dest); got != 1_000 {
			t.Errorf("balance: got %d, want 1000", got)
		}
	})
	t.Run("ApproveTransferFrom", func(t *testing.T) {
		mustTx(t, Payer, "approve", spender.Address, big.NewInt(500))
		mustTx(t, spender, "transferFrom", Payer.Address, dest, big.NewInt(300))
		if got := BalanceOf(t, a, dest); got != 1_300 {
			t.Errorf("balance: got %d, want 1300", got)
		}
		var left *big.Int
		callToken(t, a, &left, "allowance", Payer.Address, spender.Address)
		if left.Int64() != 200 {
			t.Errorf("allowance: got %s, want 200", left)
		}
		data, _ := tokenABI.Pack("transferFrom", Payer.Address, dest, big.NewInt(201))
		_, err := Transact(ctx, a, spender, USDCAddress, data, 0)
		wantRevert(t, err, "exceeds allowance")
	})
}

func checkAuthorizationUsedLog(t *testing.T, r *types.Receipt, from common.Address, nonce [32]byte) {
	t.Helper()
	topic := crypto.Keccak256Hash([]byte("AuthorizationUsed(address,bytes32)"))
	for _, l := range r.Logs {
		if l.Address == USDCAddress && len(l.Topics) == 3 && l.Topics[0] == topic &&
			common.BytesToAddress(l.Topics[1][:]) == from && l.Topics[2] == common.Hash(nonce) {
			return
		}
	}
	t.Errorf("no AuthorizationUsed(%s, %x) log in %d logs", from, nonce, len(r.Logs))
}

func wantRevert(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want a revert with %q", reason)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Fatalf("got %v, want a revert with %q", err, reason)
	}
}
