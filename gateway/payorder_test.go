package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// smartWalletSig is a signature no EOA makes (not 65 bytes): only the
// settlement backend can check it, as for EIP-1271 / ERC-6492 wallets.
func smartWalletSig() []byte {
	sig := make([]byte, 100)
	for i := range sig {
		sig[i] = byte(i + 1)
	}
	return sig
}

// paymentReason decodes the reason of a 402 answer's PAYMENT-REQUIRED.
func paymentReason(t *testing.T, hdr string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(hdr)
	if err != nil {
		t.Fatalf("PAYMENT-REQUIRED %q: %v", hdr, err)
	}
	var pr struct {
		Error string `json:"error"`
	}
	json.Unmarshal(raw, &pr)
	return pr.Error
}

// TestPayment_StageOrder: the nonce lock, policy and quota come before any
// call to the settlement backend, for every signature kind; remote
// verification results are kept per payment.
func TestPayment_StageOrder(t *testing.T) {
	up := newUpstream(t)
	settler := &fakeSettler{}
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), withX402(t, settler))
	payer := chain.Accounts[5]
	prices := map[string]money.Micros{"code_execute": 20000, "image/generate": 40000, "extract/structured": 10000}
	smart := func(tool string) string {
		auth := chain.NewAuthorization(payer.Address, chain.PayTo.Address, prices[tool], 5*time.Minute)
		return h.payWith(auth, smartWalletSig(), tool)
	}
	parallel := func(n int, hdr, tool string) map[int]int {
		var mu sync.Mutex
		got := map[int]int{}
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, _ := h.do("POST", "/tools/"+tool, `{}`, "PAYMENT-SIGNATURE", hdr)
				mu.Lock()
				got[resp.StatusCode]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return got
	}

	t.Run("DeniedNeverVerified", func(t *testing.T) {
		// unknown_wallet may not use code_execute (seed policy).
		// Concurrent copies: one holds the nonce and is denied by policy,
		// the others find the nonce locked.
		hdr := smart("code_execute")
		got := parallel(64, hdr, "code_execute")
		if got[403] < 1 || got[403]+got[402] != 64 || settler.verifies.Load() != 0 {
			t.Fatalf("statuses %v with %d backend verifications, want 403s and 402s only, and none", got, settler.verifies.Load())
		}
		for i := 0; i < 20; i++ {
			if resp, b := h.do("POST", "/tools/code_execute", `{}`, "PAYMENT-SIGNATURE", hdr); resp.StatusCode != 403 {
				t.Fatalf("sequential replay %d: got %d %s, want 403", i, resp.StatusCode, b)
			}
		}
		if n := settler.verifies.Load(); n != 0 {
			t.Fatalf("backend verifications: %d, want 0", n)
		}
	})
	t.Run("ConcurrentCopiesVerifiedOnce", func(t *testing.T) {
		settler.verifies.Store(0)
		settler.settles.Store(0)
		got := parallel(64, smart("image/generate"), "image/generate")
		if got[200] != 1 || got[402] != 63 {
			t.Fatalf("statuses %v, want one 200 and 63 × 402", got)
		}
		if settler.verifies.Load() != 1 || settler.settles.Load() != 1 {
			t.Fatalf("backend: %d verifications, %d settlements, want 1 and 1", settler.verifies.Load(), settler.settles.Load())
		}
	})
	t.Run("ReplaysOfAnInvalidPaymentVerifiedOnce", func(t *testing.T) {
		settler.verifies.Store(0)
		settler.VerifyFn = func(context.Context, *x402.Payment, *x402.Offer) (x402.VerifyResult, error) {
			return x402.VerifyResult{Reason: x402.ReasonSignature}, nil
		}
		defer func() { settler.VerifyFn = nil }()
		hdr := smart("extract/structured")
		for i := 0; i < 20; i++ {
			resp, b := h.do("POST", "/tools/extract/structured", `{}`, "PAYMENT-SIGNATURE", hdr)
			if resp.StatusCode != 402 || paymentReason(t, resp.Header.Get("PAYMENT-REQUIRED")) != x402.ReasonSignature {
				t.Fatalf("replay %d: got %d %s, want 402 %s", i, resp.StatusCode, b, x402.ReasonSignature)
			}
		}
		if n := settler.verifies.Load(); n != 1 {
			t.Fatalf("backend verifications: %d, want 1", n)
		}
	})
	t.Run("OverQuotaNeverVerified", func(t *testing.T) {
		if resp, b := h.admin("PUT", "/wallets/"+payer.Address.Hex()+"/policy", `{"rate_class_quota":{"heavy":0}}`); resp.StatusCode != 200 {
			t.Fatalf("wallet policy: %d %s", resp.StatusCode, b)
		}
		settler.verifies.Store(0)
		resp, b := h.do("POST", "/tools/image/generate", `{}`, "PAYMENT-SIGNATURE", smart("image/generate"))
		if resp.StatusCode != 403 || settler.verifies.Load() != 0 {
			t.Fatalf("got %d %s with %d verifications, want 403 and none", resp.StatusCode, b, settler.verifies.Load())
		}
	})
}

// TestPayment_LocalProblemsWithBackendDown: with the facilitator down,
// what can be judged locally still answers 402 with its reason.
func TestPayment_LocalProblemsWithBackendDown(t *testing.T) {
	up := newUpstream(t)
	down := errors.New("facilitator down")
	settler := &fakeSettler{
		VerifyFn: func(context.Context, *x402.Payment, *x402.Offer) (x402.VerifyResult, error) {
			return x402.VerifyResult{}, down
		},
		SettleFn: func(context.Context, *x402.Payment, *x402.Offer) (x402.SettleResult, error) {
			return x402.SettleResult{}, down
		},
	}
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), withX402(t, settler))
	payer := chain.Accounts[6]
	signed := func(auth chain.Authorization) []byte {
		sig, err := auth.Sign(payer)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	fresh := func() chain.Authorization {
		return chain.NewAuthorization(payer.Address, chain.PayTo.Address, 10000, 5*time.Minute)
	}
	expired := fresh()
	expired.ValidBefore = time.Now().Add(-time.Minute).Unix()
	badV := fresh()
	badVSig := signed(badV)
	badVSig[64] = 5
	highS := fresh()
	highSSig := signed(highS)
	flipS(highSSig)
	wrongDomain := fresh()
	wrongDomainSig, _ := wrongDomain.SignFor(payer, chain.DomainSeparatorFor("USDC", "2", 1, chain.USDCAddress))

	for _, tc := range []struct {
		name, hdr string
		want      int
		reason    string
	}{
		{"Expired", h.payWith(expired, signed(expired), "extract/structured"), 402, x402.ReasonValidBefore},
		{"BadV", h.payWith(badV, badVSig, "extract/structured"), 402, x402.ReasonSignature},
		{"HighS", h.payWith(highS, highSSig, "extract/structured"), 402, x402.ReasonSignature},
		// A valid ECDSA signature by someone else may be a smart wallet's
		// owner signing: only the backend can say; it is down.
		{"WrongChainDomain", h.payWith(wrongDomain, wrongDomainSig, "extract/structured"), 503, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := h.do("POST", "/tools/extract/structured", `{}`, "PAYMENT-SIGNATURE", tc.hdr)
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, b, tc.want)
			}
			if tc.reason != "" && paymentReason(t, resp.Header.Get("PAYMENT-REQUIRED")) != tc.reason {
				t.Fatalf("reason %q, want %q", paymentReason(t, resp.Header.Get("PAYMENT-REQUIRED")), tc.reason)
			}
		})
	}
}

// flipS replaces s by N - s (the high-s twin of a valid signature) and
// swaps v.
func flipS(sig []byte) {
	n := [32]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
		0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41}
	s := sig[32:64]
	var borrow int
	for i := 31; i >= 0; i-- {
		d := int(n[i]) - int(s[i]) - borrow
		if d < 0 {
			d += 256
			borrow = 1
		} else {
			borrow = 0
		}
		s[i] = byte(d)
	}
	sig[64] = 55 - sig[64] // 27 <-> 28
}
