package toolgate_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// TestGateway_SmartWalletChain pays the real binary, settling on chain
// itself (--x402-rpc, --x402-relayer-key-file), from contract wallets
// (TestSmartWallet): a deployed EIP-1271 wallet, and an undeployed wallet
// whose owner's signature comes wrapped in ERC-6492, which the gateway's
// relayer deploys before the transfer. Both settle modes are covered.
func TestGateway_SmartWalletChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaChain)
	chain.DeployWalletFactory(t, e.a)
	owner := chain.NewAccount(t) // holds nothing; signs for its wallets

	for i, tc := range []struct {
		name     string
		deployed bool
		tool     string
		path     string
		price    money.Micros
	}{
		{name: "Deployed1271/AfterUpstream", deployed: true, tool: "extract/structured", path: "/extract", price: priceExtract},
		{name: "Deployed1271/BeforeUpstream", deployed: true, tool: "email/send", path: "/email", price: priceEmail},
		{name: "Undeployed6492/AfterUpstream", tool: "extract/structured", path: "/extract", price: priceExtract},
		{name: "Undeployed6492/BeforeUpstream", tool: "email/send", path: "/email", price: priceEmail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			salt := [32]byte{byte(i + 1)}
			var w = chain.WalletAddress(t, e.a, owner.Address, salt)
			if tc.deployed {
				w = chain.DeployWallet(t, e.a, owner.Address, salt)
			}
			chain.Mint(t, e.a, w, money.PerUSD)
			if chain.HasCode(t, e.a, w) != tc.deployed {
				t.Fatalf("wallet code before paying: got %t, want %t", !tc.deployed, tc.deployed)
			}
			_, acc := e.gw.offer(t, tc.tool)
			auth := chain.NewAuthorization(w, chain.PayTo.Address, tc.price, 2*time.Minute)
			sig, err := auth.Sign(owner) // the owner signs the token's EIP-712 digest
			if err != nil {
				t.Fatal(err)
			}
			if !tc.deployed {
				sig = chain.WrapERC6492(chain.WalletFactoryAddress, chain.WalletDeployCalldata(t, owner.Address, salt), sig)
			}
			hdr := walletPaymentV2(auth, sig, acc)
			payTo0, wallet0 := chain.BalanceOf(t, e.a, chain.PayTo.Address), chain.BalanceOf(t, e.a, w)
			hits0 := e.up.Hits(tc.path)

			r := do(t, "POST", e.gw.url+"/tools/"+tc.tool, []byte(extractInput), hdr)
			if r.Status != 200 {
				t.Fatalf("paid call: got %d, want 200: %s", r.Status, r.Body)
			}
			var body struct {
				Principal string `json:"principal"`
			}
			_ = json.Unmarshal(r.Body, &body)
			if body.Principal != "wallet:"+w.Hex() {
				t.Errorf("upstream principal: got %q, want wallet:%s", body.Principal, w.Hex())
			}
			s := decodeSettlement(t, r, "Payment-Response")
			if !s.Success || !strings.HasPrefix(s.Transaction, "0x") || len(s.Transaction) != 66 ||
				!strings.EqualFold(s.Payer, w.Hex()) || s.Network != network {
				t.Fatalf("PAYMENT-RESPONSE: got %+v, want success with a tx hash, payer %s on %s", s, w.Hex(), network)
			}
			if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payTo0; got != tc.price {
				t.Errorf("payTo balance rose by %d, want %d", got, tc.price)
			}
			if got := wallet0 - chain.BalanceOf(t, e.a, w); got != tc.price {
				t.Errorf("wallet balance fell by %d, want %d", got, tc.price)
			}
			if !chain.HasCode(t, e.a, w) {
				t.Errorf("wallet code after paying: got none, want the deployed wallet")
			}
			if !chain.AuthorizationState(t, e.a, w, auth.Nonce) {
				t.Errorf("authorizationState(wallet, nonce): got false, want true")
			}
			if got := e.up.Hits(tc.path) - hits0; got != 1 {
				t.Errorf("upstream hits: got %d, want 1", got)
			}
			e.gw.wantSettledInLedger(t, w, tc.tool, r.Header.Get("X-Request-Id"), s.Transaction, tc.price)

			// The same payment again: refused, nothing moves.
			payTo1 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
			r = do(t, "POST", e.gw.url+"/tools/"+tc.tool, []byte(extractInput), hdr)
			if r.Status != 402 {
				t.Fatalf("replay: got %d, want 402: %s", r.Status, r.Body)
			}
			var pr paymentRequired
			decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
			if pr.Error != reasonNonce {
				t.Errorf("replay PAYMENT-REQUIRED error: got %q, want %q", pr.Error, reasonNonce)
			}
			if got := chain.BalanceOf(t, e.a, chain.PayTo.Address); got != payTo1 {
				t.Errorf("payTo balance after the replay: got %d, want %d", got, payTo1)
			}
			if got := e.up.Hits(tc.path) - hits0; got != 1 {
				t.Errorf("upstream hits after the replay: got %d, want 1", got)
			}
		})
	}

	t.Run("Undeployed6492/NotOwner", func(t *testing.T) {
		salt := [32]byte{0xee}
		w := chain.WalletAddress(t, e.a, owner.Address, salt)
		chain.Mint(t, e.a, w, money.PerUSD)
		_, acc := e.gw.offer(t, "email/send")
		auth := chain.NewAuthorization(w, chain.PayTo.Address, priceEmail, 2*time.Minute)
		sig, err := auth.Sign(chain.NewAccount(t))
		if err != nil {
			t.Fatal(err)
		}
		sig = chain.WrapERC6492(chain.WalletFactoryAddress, chain.WalletDeployCalldata(t, owner.Address, salt), sig)
		payTo0, hits0 := chain.BalanceOf(t, e.a, chain.PayTo.Address), e.up.Hits("/email")
		r := do(t, "POST", e.gw.url+"/tools/email/send", []byte(extractInput), walletPaymentV2(auth, sig, acc))
		if r.Status != 402 {
			t.Fatalf("status: got %d, want 402: %s", r.Status, r.Body)
		}
		if chain.BalanceOf(t, e.a, chain.PayTo.Address) != payTo0 || e.up.Hits("/email") != hits0 {
			t.Errorf("a refused payment moved money or reached the tool")
		}
		if chain.HasCode(t, e.a, w) {
			t.Errorf("wallet deployed for a refused payment")
		}
	})
}

// walletPaymentV2 returns the PAYMENT-SIGNATURE header of auth with an
// arbitrary signature (a contract wallet's), echoing accepted.
func walletPaymentV2(auth chain.Authorization, sig []byte, accepted json.RawMessage) map[string]string {
	b, _ := json.Marshal(map[string]any{
		"x402Version": 2,
		"accepted":    accepted,
		"payload":     map[string]any{"signature": "0x" + hex.EncodeToString(sig), "authorization": auth.WireJSON()},
	})
	return map[string]string{"PAYMENT-SIGNATURE": base64.StdEncoding.EncodeToString(b)}
}
