package chain

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/holiman/uint256"

	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// uptoPermit is a signed upto authorization of Payer for the proxy.
type uptoPermit struct {
	m   x402.Permit2Authorization
	sig []byte
}

func signUpto(t *testing.T, owner Account, facilitator common.Address, max money.Micros, nonce uint64) uptoPermit {
	t.Helper()
	m := x402.Permit2Authorization{From: owner.Address, Token: USDCAddress, Spender: UptoProxyAddress,
		To: PayTo.Address, Facilitator: facilitator}
	m.Amount.SetUint64(uint64(max))
	m.Nonce.SetUint64(nonce)
	m.Deadline.SetUint64(uint64(time.Now().Add(time.Hour).Unix()))
	sig, err := SignPermit2(owner, m.Digest(x402.Permit2DomainSeparator(ChainID)))
	if err != nil {
		t.Fatal(err)
	}
	return uptoPermit{m: m, sig: sig}
}

// settleCall packs the proxy's settle(permit, amount, owner, witness, signature).
func settleCall(t *testing.T, p uptoPermit, amount money.Micros) []byte {
	t.Helper()
	type tokenPermissions struct {
		Token  common.Address
		Amount *big.Int
	}
	type permitTransferFrom struct {
		Permitted tokenPermissions
		Nonce     *big.Int
		Deadline  *big.Int
	}
	type witness struct {
		To          common.Address
		Facilitator common.Address
		ValidAfter  *big.Int
	}
	m := p.m
	data, err := LoadArtifact(t, "TestUptoPermit2Proxy").ABI.Pack("settle",
		permitTransferFrom{Permitted: tokenPermissions{m.Token, m.Amount.ToBig()}, Nonce: m.Nonce.ToBig(), Deadline: m.Deadline.ToBig()},
		big.NewInt(int64(amount)), m.From, witness{m.To, m.Facilitator, m.ValidAfter.ToBig()}, p.sig)
	if err != nil {
		t.Fatalf("pack settle: %v", err)
	}
	return data
}

// TestUptoProxy_Settle runs the upto proxy and Permit2 on anvil with
// authorizations signed by x402.Permit2Authorization (the gateway's own
// digest): the facilitator named in the witness moves the amount it
// chooses, at most the permitted one, once.
func TestUptoProxy_Settle(t *testing.T) {
	a := newTokenChain(t)
	DeployPermit2(t, a)
	ApprovePermit2(t, a, Payer, new(big.Int).Lsh(big.NewInt(1), 255))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("DomainSeparator", func(t *testing.T) {
		data, _ := LoadArtifact(t, "TestPermit2").ABI.Pack("DOMAIN_SEPARATOR")
		ret, err := a.Client().CallContract(ctx, ethereum.CallMsg{To: &Permit2Address, Data: data}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := common.BytesToHash(ret), x402.Permit2DomainSeparator(ChainID); got != want {
			t.Errorf("on-chain DOMAIN_SEPARATOR: got %s, want %s", got, want)
		}
	})
	t.Run("OK", func(t *testing.T) {
		p := signUpto(t, Payer, Relayer.Address, 100_000, 1)
		// Reconciliation reads the Permit2 nonce (an upto settlement left pending).
		reader, err := x402.DialReader(ctx, a.RPC())
		if err != nil {
			t.Fatal(err)
		}
		key := x402.NonceKey{ChainID: ChainID, Asset: x402.Permit2Address, From: Payer.Address, Nonce: p.m.Nonce.Bytes32()}
		if r, err := reader.ReconcileTx(ctx, key, ""); err != nil || !r.Pending {
			t.Fatalf("reconcile before settling: got %+v %v, want pending", r, err)
		}
		payer0, payee0 := BalanceOf(t, a, Payer.Address), BalanceOf(t, a, PayTo.Address)
		if _, err := Transact(ctx, a, Relayer, UptoProxyAddress, settleCall(t, p, 30_000), 0); err != nil {
			t.Fatalf("settle: %v", err)
		}
		if got := payer0 - BalanceOf(t, a, Payer.Address); got != 30_000 {
			t.Errorf("payer paid %d, want 30000", got)
		}
		if got := BalanceOf(t, a, PayTo.Address) - payee0; got != 30_000 {
			t.Errorf("payee got %d, want 30000", got)
		}
		if !Permit2NonceUsed(t, a, Payer.Address, big.NewInt(1)) {
			t.Error("nonce 1 not marked used")
		}
		if r, err := reader.ReconcileTx(ctx, key, ""); err != nil || !r.Success {
			t.Errorf("reconcile after settling: got %+v %v, want success", r, err)
		}
		_, err = Transact(ctx, a, Relayer, UptoProxyAddress, settleCall(t, p, 1), 0)
		wantCustomRevert(t, err, "InvalidNonce")
	})
	tests := []struct {
		name   string
		from   Account
		permit uptoPermit
		amount money.Micros
		want   string
	}{
		{"UnauthorizedFacilitator", Minter, signUpto(t, Payer, Relayer.Address, 100_000, 2), 10_000, "UnauthorizedFacilitator"},
		{"AmountExceedsPermitted", Relayer, signUpto(t, Payer, Relayer.Address, 100_000, 3), 100_001, "AmountExceedsPermitted"},
		{"ZeroAmount", Relayer, signUpto(t, Payer, Relayer.Address, 100_000, 4), 0, "InvalidAmount"},
		{"WrongSigner", Relayer, func() uptoPermit {
			p := signUpto(t, PayTo, Relayer.Address, 100_000, 5)
			p.m.From = Payer.Address
			return p
		}(), 10_000, "InvalidSigner"},
		{"RaisedAmount", Relayer, func() uptoPermit {
			p := signUpto(t, Payer, Relayer.Address, 100_000, 6)
			p.m.Amount = *uint256.NewInt(200_000) // signed for 100 000
			return p
		}(), 150_000, "InvalidSigner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := BalanceOf(t, a, Payer.Address)
			_, err := Transact(ctx, a, tt.from, UptoProxyAddress, settleCall(t, tt.permit, tt.amount), 0)
			wantCustomRevert(t, err, tt.want)
			if got := BalanceOf(t, a, Payer.Address); got != before {
				t.Errorf("payer balance moved: %d -> %d", before, got)
			}
		})
	}
}

// wantCustomRevert checks that err is a revert naming the custom error want
// (anvil's estimate-gas error carries its selector; the ABI names it).
func wantCustomRevert(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want revert %s", want)
	}
	sel := crypto.Keccak256([]byte(want + "()"))[:4]
	for _, art := range []string{"TestUptoPermit2Proxy", "TestPermit2"} {
		if e, ok := LoadArtifact(t, art).ABI.Errors[want]; ok {
			sel = e.ID[:4] // the proxy's, when both declare it
			break
		}
	}
	if !strings.Contains(strings.ToLower(err.Error()), common.Bytes2Hex(sel)) && !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want revert %s (0x%x)", err, want, sel)
	}
}
