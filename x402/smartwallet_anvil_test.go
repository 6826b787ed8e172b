package x402

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// walletPayment signs a fresh authorization from wallet to o's PayTo by
// signer (the wallet's owner, or anyone) and passes the 65-byte signature
// through wrap (nil: as is); it returns the payment decoded as a gateway
// would receive it (v2).
func walletPayment(t *testing.T, o *Offer, wallet common.Address, signer chain.Account, wrap func([]byte) []byte) (*Payment, chain.Authorization) {
	t.Helper()
	auth := chain.NewAuthorization(wallet, o.Config().PayTo, 10_000, 60*time.Second)
	sig, err := auth.Sign(signer)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		sig = wrap(sig)
	}
	return decodeSigned(t, o, auth, sig), auth
}

func randomSalt(t *testing.T) (s [32]byte) {
	t.Helper()
	if _, err := rand.Read(s[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestChain_AnvilSmartWallet settles payments of contract wallets
// (e2e/contracts TestSmartWallet, made by TestWalletFactory) on anvil:
// a deployed EIP-1271 wallet, and an undeployed one paying with an
// ERC-6492 signature that Settle deploys first.
func TestChain_AnvilSmartWallet(t *testing.T) {
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.DeployWalletFactory(t, a)
	o := anvilOffer(t)
	ctx := context.Background()
	c := NewChain(a.Client(), chain.Accounts[3].Key)
	c.PollInterval = 20 * time.Millisecond
	owner := chain.NewAccount(t)
	wrapFor := func(salt [32]byte) func([]byte) []byte {
		return func(sig []byte) []byte {
			return chain.WrapERC6492(chain.WalletFactoryAddress, chain.WalletDeployCalldata(t, owner.Address, salt), sig)
		}
	}

	// settleOK verifies and settles p from wallet and checks the chain.
	settleOK := func(t *testing.T, p *Payment, wallet common.Address, nonce [32]byte) {
		t.Helper()
		if v, _ := o.Verify(p, time.Now(), 6*time.Second); v.Status != StatusNeedsRemote {
			t.Fatalf("local verify: got %v %s, want needs_remote", v.Status, v.Reason)
		}
		vr, err := c.Verify(ctx, p, o)
		if err != nil || !vr.Valid || vr.Payer != wallet.Hex() {
			t.Fatalf("chain verify: got %+v %v, want valid from %s", vr, err, wallet.Hex())
		}
		payTo0, wallet0 := chain.BalanceOf(t, a, chain.PayTo.Address), chain.BalanceOf(t, a, wallet)
		r, err := c.Settle(ctx, p, o)
		if err != nil || !r.Success || len(r.Transaction) != 66 || r.Payer != wallet.Hex() || r.Network != chain.Network {
			t.Fatalf("settle: got %+v %v, want success with a transaction from %s", r, err, wallet.Hex())
		}
		if got := chain.BalanceOf(t, a, chain.PayTo.Address) - payTo0; got != 10_000 {
			t.Errorf("payTo received %d, want 10000", got)
		}
		if got := wallet0 - chain.BalanceOf(t, a, wallet); got != 10_000 {
			t.Errorf("wallet paid %d, want 10000", got)
		}
		if !chain.HasCode(t, a, wallet) {
			t.Error("wallet code after settlement: got none, want the wallet")
		}
		if !chain.AuthorizationState(t, a, wallet, nonce) {
			t.Error("authorizationState: got unused, want used")
		}
		vr, err = c.Verify(ctx, p, o)
		if err != nil || vr.Valid || vr.Reason != ReasonNonceUsed {
			t.Errorf("replay verify: got %+v %v, want %s", vr, err, ReasonNonceUsed)
		}
		r, err = c.Settle(ctx, p, o)
		if err != nil || r.Success || r.Reason != ReasonNonceUsed {
			t.Errorf("replay settle: got %+v %v, want %s", r, err, ReasonNonceUsed)
		}
	}

	t.Run("Deployed1271", func(t *testing.T) {
		w := chain.DeployWallet(t, a, owner.Address, randomSalt(t))
		chain.Mint(t, a, w, money.PerUSD)
		p, auth := walletPayment(t, o, w, owner, nil)
		settleOK(t, p, w, auth.Nonce)
		t.Run("NotOwner", func(t *testing.T) {
			p, _ := walletPayment(t, o, w, chain.NewAccount(t), nil)
			vr, err := c.Verify(ctx, p, o)
			if err != nil || vr.Valid || vr.Reason != ReasonSignature {
				t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonSignature)
			}
		})
		t.Run("WrappedButDeployed", func(t *testing.T) {
			// An ERC-6492 wrapper around a deployed wallet's signature:
			// the factory is not called, the inner signature is used.
			p, auth := walletPayment(t, o, w, owner, wrapFor([32]byte{0xff}))
			settleOK(t, p, w, auth.Nonce)
		})
	})

	t.Run("WrappedEOA", func(t *testing.T) {
		// An EOA's own signature in an ERC-6492 wrapper: no deployment
		// (the factory would create some other account), the inner
		// signature settles as the EOA's.
		payer := chain.NewAccount(t)
		chain.Mint(t, a, payer.Address, money.PerUSD)
		p, auth := walletPayment(t, o, payer.Address, payer, wrapFor([32]byte{0x02}))
		settleOK := func() {
			vr, err := c.Verify(ctx, p, o)
			if err != nil || !vr.Valid {
				t.Fatalf("verify: got %+v %v, want valid", vr, err)
			}
			r, err := c.Settle(ctx, p, o)
			if err != nil || !r.Success {
				t.Fatalf("settle: got %+v %v, want success", r, err)
			}
		}
		settleOK()
		if !chain.AuthorizationState(t, a, payer.Address, auth.Nonce) {
			t.Error("authorizationState: got unused, want used")
		}
		if other := chain.WalletAddress(t, a, owner.Address, [32]byte{0x02}); chain.HasCode(t, a, other) {
			t.Errorf("factory called for an EOA payment: %s has code", other)
		}
	})

	t.Run("Undeployed6492", func(t *testing.T) {
		salt := randomSalt(t)
		w := chain.WalletAddress(t, a, owner.Address, salt)
		chain.Mint(t, a, w, money.PerUSD)
		if chain.HasCode(t, a, w) {
			t.Fatal("wallet has code before the test")
		}
		t.Run("NotOwner", func(t *testing.T) {
			p, _ := walletPayment(t, o, w, chain.NewAccount(t), wrapFor(salt))
			vr, err := c.Verify(ctx, p, o)
			if err != nil || vr.Valid || vr.Reason != ReasonSignature {
				t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonSignature)
			}
			// Settle simulates before deploying: nothing is sent.
			r, err := c.Settle(ctx, p, o)
			if err != nil || r.Success || r.Pending || r.Reason != ReasonSignature || r.Transaction != "" {
				t.Errorf("settle: got %+v %v, want %s without a transaction", r, err, ReasonSignature)
			}
			if chain.HasCode(t, a, w) {
				t.Error("wallet deployed for a payment that cannot settle")
			}
		})
		t.Run("OtherWalletsDeployment", func(t *testing.T) {
			// Deployment data that creates some other wallet.
			p, _ := walletPayment(t, o, w, owner, wrapFor([32]byte{0x01}))
			vr, err := c.Verify(ctx, p, o)
			if err != nil || vr.Valid || vr.Reason != ReasonSignature {
				t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonSignature)
			}
		})
		t.Run("FactoryReverts", func(t *testing.T) {
			p, _ := walletPayment(t, o, w, owner, func(sig []byte) []byte {
				return chain.WrapERC6492(chain.WalletFactoryAddress, []byte{0xde, 0xad, 0xbe, 0xef}, sig)
			})
			vr, err := c.Verify(ctx, p, o)
			if err != nil || vr.Valid || vr.Reason != ReasonWalletDeployment {
				t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonWalletDeployment)
			}
			r, err := c.Settle(ctx, p, o)
			if err != nil || r.Success || r.Reason != ReasonWalletDeployment {
				t.Errorf("settle: got %+v %v, want %s", r, err, ReasonWalletDeployment)
			}
		})
		t.Run("DeploymentDisabled", func(t *testing.T) {
			strict := NewChain(a.Client(), chain.Accounts[4].Key)
			strict.DeployWallets = false
			p, _ := walletPayment(t, o, w, owner, wrapFor(salt))
			vr, err := strict.Verify(ctx, p, o)
			if err != nil || vr.Valid || vr.Reason != ReasonUndeployedSmartWallet {
				t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonUndeployedSmartWallet)
			}
			r, err := strict.Settle(ctx, p, o)
			if err != nil || r.Success || r.Reason != ReasonUndeployedSmartWallet || r.Transaction != "" {
				t.Errorf("settle: got %+v %v, want %s without a transaction", r, err, ReasonUndeployedSmartWallet)
			}
			if chain.HasCode(t, a, w) {
				t.Error("wallet deployed with DeployWallets off")
			}
		})
		t.Run("Malformed", func(t *testing.T) {
			p, _ := walletPayment(t, o, w, owner, func(sig []byte) []byte {
				return append(sig, ERC6492Magic[:]...) // magic without an ABI body
			})
			vr, err := c.Verify(ctx, p, o)
			if err != nil || vr.Valid || vr.Reason != ReasonSignatureFormat {
				t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonSignatureFormat)
			}
		})
		p, auth := walletPayment(t, o, w, owner, wrapFor(salt))
		if vr, err := c.Verify(ctx, p, o); err != nil || !vr.Valid {
			t.Fatalf("verify: got %+v %v, want valid", vr, err)
		}
		if chain.HasCode(t, a, w) {
			t.Fatal("Verify deployed the wallet; it must only simulate")
		}
		settleOK(t, p, w, auth.Nonce)
		t.Run("SecondPaymentAfterDeployment", func(t *testing.T) {
			// The client still wraps; the wallet exists now.
			p, auth := walletPayment(t, o, w, owner, wrapFor(salt))
			settleOK(t, p, w, auth.Nonce)
		})
	})
}
