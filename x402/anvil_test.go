package x402

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// anvilPayment signs a fresh authorization from payer to o's PayTo and
// returns it decoded, as a gateway would receive it (v2).
func anvilPayment(t *testing.T, o *Offer, payer chain.Account, value money.Micros) (*Payment, chain.Authorization) {
	t.Helper()
	auth := chain.NewAuthorization(payer.Address, o.Config().PayTo, value, 60*time.Second)
	sig, err := auth.Sign(payer)
	if err != nil {
		t.Fatal(err)
	}
	return decodeSigned(t, o, auth, sig), auth
}

// decodeSigned builds the v2 header a client would send for auth and sig
// against o, and decodes it as the gateway does.
func decodeSigned(t *testing.T, o *Offer, auth chain.Authorization, sig []byte) *Payment {
	t.Helper()
	var acc map[string]any
	_ = json.Unmarshal(o.Requirements(2), &acc)
	raw, _ := json.Marshal(map[string]any{
		"x402Version": 2, "accepted": acc,
		"payload": map[string]any{"signature": "0x" + common.Bytes2Hex(sig), "authorization": auth.WireJSON()},
	})
	p, err := Decode([]byte(base64.StdEncoding.EncodeToString(raw)), 2)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func anvilOffer(t *testing.T) *Offer {
	t.Helper()
	o, err := NewOffer(Config{PayTo: chain.PayTo.Address, PublicURL: "http://127.0.0.1:8402"},
		Resource{ToolID: "t", Path: "/tools/t", Price: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestChain_Anvil settles against a real anvil node running the EIP-3009
// test token at Base Sepolia's USDC address (e2e/chain).
func TestChain_Anvil(t *testing.T) {
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, money.PerUSD)
	o := anvilOffer(t)
	ctx := context.Background()
	c := NewChain(a.Client(), chain.Accounts[3].Key)
	c.PollInterval = 20 * time.Millisecond

	t.Run("DomainSeparatorOnChain", func(t *testing.T) {
		if got, want := o.DomainSeparator(), common.Hash(chain.DomainSeparator(t, a)); got != want {
			t.Errorf("got %s, want on-chain %s", got.Hex(), want.Hex())
		}
	})
	t.Run("OK", func(t *testing.T) {
		p, auth := anvilPayment(t, o, chain.Payer, 10_000)
		if v, _ := o.Verify(p, time.Now(), 6*time.Second); !v.OK() {
			t.Fatalf("local verify: got %v %s, want valid", v.Status, v.Reason)
		}
		vr, err := c.Verify(ctx, p, o)
		if err != nil || !vr.Valid {
			t.Fatalf("chain verify: got %+v %v, want valid", vr, err)
		}
		before := chain.BalanceOf(t, a, chain.PayTo.Address)
		r, err := c.Settle(ctx, p, o)
		if err != nil || !r.Success || r.Transaction == "" || r.Network != "eip155:84532" || r.Payer != chain.Payer.Address.Hex() {
			t.Fatalf("settle: got %+v %v, want success", r, err)
		}
		if got := chain.BalanceOf(t, a, chain.PayTo.Address) - before; got != 10_000 {
			t.Errorf("payTo received %d, want 10000", got)
		}
		if !chain.AuthorizationState(t, a, chain.Payer.Address, auth.Nonce) {
			t.Error("authorizationState: got unused, want used")
		}
		t.Run("Replay", func(t *testing.T) {
			vr, err := c.Verify(ctx, p, o)
			if err != nil || vr.Valid || vr.Reason != ReasonNonceUsed {
				t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonNonceUsed)
			}
			r, err := c.Settle(ctx, p, o)
			if err != nil || r.Success || r.Reason != ReasonNonceUsed {
				t.Errorf("settle: got %+v %v, want %s", r, err, ReasonNonceUsed)
			}
		})
		t.Run("Reconcile", func(t *testing.T) {
			k := NonceKey{ChainID: 84532, Asset: o.Config().Asset, From: chain.Payer.Address, Nonce: auth.Nonce}
			rec, err := c.Reconcile(ctx, k, common.Hash{})
			if err != nil || !rec.Success || rec.Transaction != r.Transaction {
				t.Errorf("got %+v %v, want success with %s (found by log)", rec, err, r.Transaction)
			}
		})
	})
	t.Run("InsufficientBalance", func(t *testing.T) {
		poor := chain.NewAccount(t)
		p, _ := anvilPayment(t, o, poor, 10_000)
		vr, err := c.Verify(ctx, p, o)
		if err != nil || vr.Valid || vr.Reason != ReasonInsufficientFunds {
			t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonInsufficientFunds)
		}
		r, err := c.Settle(ctx, p, o)
		if err != nil || r.Success || r.Pending || r.Reason != ReasonInsufficientFunds {
			t.Errorf("settle: got %+v %v, want %s", r, err, ReasonInsufficientFunds)
		}
	})
	t.Run("BadSignature", func(t *testing.T) {
		p, _ := anvilPayment(t, o, chain.Payer, 10_000)
		p.Signature[10] ^= 0xff
		vr, err := c.Verify(ctx, p, o)
		if err != nil || vr.Valid || vr.Reason != ReasonSignature {
			t.Errorf("verify: got %+v %v, want %s", vr, err, ReasonSignature)
		}
	})
	t.Run("ConcurrentSettlements", func(t *testing.T) {
		const n = 8
		ps := make([]*Payment, n)
		for i := range ps {
			ps[i], _ = anvilPayment(t, o, chain.Payer, 10_000)
		}
		before := chain.BalanceOf(t, a, chain.PayTo.Address)
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r, err := c.Settle(ctx, p, o); err != nil || !r.Success {
					t.Errorf("got %+v %v, want success", r, err)
				}
			}()
		}
		wg.Wait()
		if got := chain.BalanceOf(t, a, chain.PayTo.Address) - before; got != n*10_000 {
			t.Errorf("payTo received %d, want %d", got, n*10_000)
		}
	})
	t.Run("PendingThenReconcile", func(t *testing.T) {
		if err := a.RPCClient().Call(nil, "evm_setAutomine", false); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = a.RPCClient().Call(nil, "evm_setAutomine", true) }()
		p, auth := anvilPayment(t, o, chain.Payer, 10_000)
		slow := NewChain(a.Client(), chain.Accounts[4].Key)
		slow.ReceiptTimeout, slow.PollInterval = 300*time.Millisecond, 20*time.Millisecond
		r, err := slow.Settle(ctx, p, o)
		if err != nil || !r.Pending || r.Transaction == "" || r.Reason != ReasonSettlementPending {
			t.Fatalf("got %+v %v, want pending with a transaction", r, err)
		}
		k := NonceKey{ChainID: 84532, Asset: o.Config().Asset, From: chain.Payer.Address, Nonce: auth.Nonce}
		tx := common.HexToHash(r.Transaction)
		if rec, err := slow.Reconcile(ctx, k, tx); err != nil || !rec.Pending {
			t.Errorf("before mining: got %+v %v, want pending", rec, err)
		}
		if err := a.RPCClient().Call(nil, "evm_mine"); err != nil {
			t.Fatal(err)
		}
		if rec, err := slow.Reconcile(ctx, k, tx); err != nil || !rec.Success || rec.Transaction != r.Transaction {
			t.Errorf("after mining: got %+v %v, want success %s", rec, err, r.Transaction)
		}
	})
}

// TestFacilitator_Reference runs the facilitator client against the x402
// reference facilitator (e2e/facilitator.mjs) settling on anvil.
func TestFacilitator_Reference(t *testing.T) {
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, money.PerUSD)
	fac := chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
	o := anvilOffer(t)
	f := &Facilitator{URL: fac.URL()}
	ctx := context.Background()

	t.Run("Supported", func(t *testing.T) {
		s, err := f.Supported(ctx)
		if err != nil || !s.Supports(2, "exact", "eip155:84532") {
			t.Errorf("got %+v %v, want exact on eip155:84532 (v2)", s, err)
		}
	})
	t.Run("VerifySettle", func(t *testing.T) {
		p, _ := anvilPayment(t, o, chain.Payer, 10_000)
		vr, err := f.Verify(ctx, p, o)
		if err != nil || !vr.Valid {
			t.Fatalf("verify: got %+v %v, want valid", vr, err)
		}
		before := chain.BalanceOf(t, a, chain.PayTo.Address)
		r, err := f.Settle(ctx, p, o)
		if err != nil || !r.Success || r.Transaction == "" {
			t.Fatalf("settle: got %+v %v, want success", r, err)
		}
		if got := chain.BalanceOf(t, a, chain.PayTo.Address) - before; got != 10_000 {
			t.Errorf("payTo received %d, want 10000", got)
		}
		r2, err := f.Settle(ctx, p, o)
		if err != nil || r2.Success {
			t.Errorf("second settle: got %+v %v, want failure", r2, err)
		}
	})
	t.Run("InvalidSignature", func(t *testing.T) {
		p, _ := anvilPayment(t, o, chain.Payer, 10_000)
		p.Signature[10] ^= 0xff
		// Raw still carries the original signature; rebuild it.
		var m map[string]any
		_ = json.Unmarshal(p.Raw, &m)
		m["payload"].(map[string]any)["signature"] = "0x" + common.Bytes2Hex(p.Signature)
		p.Raw, _ = json.Marshal(m)
		vr, err := f.Verify(ctx, p, o)
		if err != nil || vr.Valid || vr.Reason == "" {
			t.Errorf("got %+v %v, want isValid:false with a reason", vr, err)
		}
	})
}
