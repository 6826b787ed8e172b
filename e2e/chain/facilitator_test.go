package chain

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/toolgate/toolgate/money"
)

const facilitatorPrice money.Micros = 10_000 // $0.01

// requirementsV2 is an exact-EVM v2 PaymentRequirements for TestUSDC.
func requirementsV2(payTo common.Address, amount money.Micros) map[string]any {
	return map[string]any{
		"scheme":            "exact",
		"network":           Network,
		"amount":            strconv.FormatInt(int64(amount), 10),
		"asset":             USDCAddress.Hex(),
		"payTo":             payTo.Hex(),
		"maxTimeoutSeconds": 60,
		"extra":             map[string]any{"name": TokenName, "version": TokenVersion},
	}
}

// requirementsV1 is the same offer in v1 shape.
func requirementsV1(payTo common.Address, amount money.Micros) map[string]any {
	return map[string]any{
		"scheme":            "exact",
		"network":           NetworkV1,
		"maxAmountRequired": strconv.FormatInt(int64(amount), 10),
		"resource":          "http://127.0.0.1/v1/tools/echo",
		"description":       "echo",
		"mimeType":          "application/json",
		"payTo":             payTo.Hex(),
		"maxTimeoutSeconds": 60,
		"asset":             USDCAddress.Hex(),
		"extra":             map[string]any{"name": TokenName, "version": TokenVersion},
	}
}

func exactPayload(auth Authorization, sig []byte) map[string]any {
	return map[string]any{"signature": "0x" + hex.EncodeToString(sig), "authorization": auth.WireJSON()}
}

// paymentV2 builds the facilitator request body for a v2 payment.
func paymentV2(accepted map[string]any, auth Authorization, sig []byte) map[string]any {
	payload := map[string]any{
		"x402Version": 2,
		"resource":    map[string]any{"url": "http://127.0.0.1/v1/tools/echo", "description": "echo", "mimeType": "application/json"},
		"accepted":    accepted,
		"payload":     exactPayload(auth, sig),
	}
	return map[string]any{"x402Version": 2, "paymentPayload": payload, "paymentRequirements": accepted}
}

type verifyResponse struct {
	IsValid       bool   `json:"isValid"`
	InvalidReason string `json:"invalidReason"`
	Payer         string `json:"payer"`
}

// postJSON posts body to url and decodes the answer into out; it returns
// the HTTP status and fails the test on a transport or decoding error.
func postJSON(t *testing.T, url string, body, out any) int {
	t.Helper()
	status, err := doPost(url, body, out)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// doPost is postJSON without a testing.T, for use from server goroutines.
func doPost(url string, body, out any) (int, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(raw))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("POST %s: %w", url, err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return res.StatusCode, fmt.Errorf("POST %s: decode answer (status %d): %w", url, res.StatusCode, err)
	}
	return res.StatusCode, nil
}

func signed(t *testing.T, payer Account, to common.Address, amount money.Micros, timeout time.Duration) (Authorization, []byte) {
	t.Helper()
	auth := NewAuthorization(payer.Address, to, amount, timeout)
	sig, err := auth.Sign(payer)
	if err != nil {
		t.Fatal(err)
	}
	return auth, sig
}

func TestFacilitator_Supported(t *testing.T) {
	a := Start(t)
	DeployUSDC(t, a)
	f := StartFacilitator(t, a, FacilitatorConfig{})
	if f.RelayerAddress() != Relayer.Address {
		t.Errorf("relayer: got %s, want %s", f.RelayerAddress(), Relayer.Address)
	}
	var sup struct {
		Kinds []struct {
			X402Version int    `json:"x402Version"`
			Scheme      string `json:"scheme"`
			Network     string `json:"network"`
		} `json:"kinds"`
		Signers map[string][]string `json:"signers"`
	}
	if err := getJSON(f.URL()+"/supported", &sup); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"2 exact " + Network: false, "1 exact " + NetworkV1: false, "2 upto " + Network: false}
	for _, k := range sup.Kinds {
		key := fmt.Sprintf("%d %s %s", k.X402Version, k.Scheme, k.Network)
		if _, ok := want[key]; ok {
			want[key] = true
		}
	}
	for k, found := range want {
		if !found {
			t.Errorf("supported kinds: %q missing from %+v", k, sup.Kinds)
		}
	}
	found := false
	for _, addrs := range sup.Signers {
		for _, s := range addrs {
			found = found || common.HexToAddress(s) == Relayer.Address
		}
	}
	if !found {
		t.Errorf("supported signers: got %v, want %s among them", sup.Signers, Relayer.Address)
	}
}

func TestFacilitator_VerifySettle(t *testing.T) {
	a := Start(t)
	DeployUSDC(t, a)
	Mint(t, a, Payer.Address, 10*money.PerUSD)
	f := StartFacilitator(t, a, FacilitatorConfig{})
	payTo := NewAccount(t).Address
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	auth, sig := signed(t, Payer, payTo, facilitatorPrice, time.Minute)
	body := paymentV2(requirementsV2(payTo, facilitatorPrice), auth, sig)
	payerBefore := BalanceOf(t, a, Payer.Address)
	payerETH, err := a.Client().BalanceAt(ctx, Payer.Address, nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Verify", func(t *testing.T) {
		var v verifyResponse
		if status := postJSON(t, f.URL()+"/verify", body, &v); status != http.StatusOK {
			t.Errorf("status: got %d, want 200", status)
		}
		if !v.IsValid {
			t.Fatalf("isValid: got false (%s), want true", v.InvalidReason)
		}
		if common.HexToAddress(v.Payer) != Payer.Address {
			t.Errorf("payer: got %s, want %s", v.Payer, Payer.Address)
		}
		if got := BalanceOf(t, a, payTo); got != 0 {
			t.Errorf("payee balance after verify: got %d, want 0 (verify must not move funds)", got)
		}
	})

	t.Run("Settle", func(t *testing.T) {
		var s SettleResponse
		if status := postJSON(t, f.URL()+"/settle", body, &s); status != http.StatusOK {
			t.Errorf("status: got %d, want 200", status)
		}
		if !s.Success {
			t.Fatalf("success: got false (%s), want true", s.ErrorReason)
		}
		if s.Network != Network {
			t.Errorf("network: got %q, want %q", s.Network, Network)
		}
		if common.HexToAddress(s.Payer) != Payer.Address {
			t.Errorf("payer: got %s, want %s", s.Payer, Payer.Address)
		}
		if got := BalanceOf(t, a, payTo); got != facilitatorPrice {
			t.Errorf("payee balance: got %d, want %d", got, facilitatorPrice)
		}
		if got, want := BalanceOf(t, a, Payer.Address), payerBefore-facilitatorPrice; got != want {
			t.Errorf("payer balance: got %d, want %d", got, want)
		}
		if !AuthorizationState(t, a, Payer.Address, auth.Nonce) {
			t.Error("authorizationState: got false, want true")
		}
		tx, _, err := a.Client().TransactionByHash(ctx, common.HexToHash(s.Transaction))
		if err != nil {
			t.Fatalf("settlement tx %s: %v", s.Transaction, err)
		}
		if *tx.To() != USDCAddress {
			t.Errorf("settlement tx to: got %s, want %s", tx.To(), USDCAddress)
		}
		r, err := a.Client().TransactionReceipt(ctx, tx.Hash())
		if err != nil {
			t.Fatal(err)
		}
		checkAuthorizationUsedLog(t, r, Payer.Address, auth.Nonce)
		eth, err := a.Client().BalanceAt(ctx, Payer.Address, nil)
		if err != nil {
			t.Fatal(err)
		}
		if eth.Cmp(payerETH) != 0 {
			t.Errorf("payer ETH: got %s, want %s (the relayer pays gas)", eth, payerETH)
		}
	})

	t.Run("ReplayVerify", func(t *testing.T) {
		var v verifyResponse
		postJSON(t, f.URL()+"/verify", body, &v)
		if v.IsValid {
			t.Fatal("isValid for a used authorization: got true, want false")
		}
		// Explained through Multicall3: without it the reason would be the
		// generic invalid_exact_evm_transaction_simulation_failed.
		if want := "invalid_exact_evm_nonce_already_used"; v.InvalidReason != want {
			t.Errorf("invalidReason: got %q, want %q", v.InvalidReason, want)
		}
	})

	t.Run("ReplaySettle", func(t *testing.T) {
		var s SettleResponse
		postJSON(t, f.URL()+"/settle", body, &s)
		if s.Success {
			t.Fatalf("success for a replayed authorization: got true (tx %s), want false", s.Transaction)
		}
		if want := "invalid_exact_evm_nonce_already_used"; s.ErrorReason != want {
			t.Errorf("errorReason: got %q, want %q", s.ErrorReason, want)
		}
		if got := BalanceOf(t, a, payTo); got != facilitatorPrice {
			t.Errorf("payee balance after replay: got %d, want %d", got, facilitatorPrice)
		}
	})

	t.Run("V1", func(t *testing.T) {
		auth, sig := signed(t, Payer, payTo, facilitatorPrice, time.Minute)
		req := requirementsV1(payTo, facilitatorPrice)
		v1 := map[string]any{
			"x402Version":         1,
			"paymentPayload":      map[string]any{"x402Version": 1, "scheme": "exact", "network": NetworkV1, "payload": exactPayload(auth, sig)},
			"paymentRequirements": req,
		}
		var v verifyResponse
		postJSON(t, f.URL()+"/verify", v1, &v)
		if !v.IsValid {
			t.Fatalf("v1 isValid: got false (%s), want true", v.InvalidReason)
		}
		var s SettleResponse
		postJSON(t, f.URL()+"/settle", v1, &s)
		if !s.Success {
			t.Fatalf("v1 success: got false (%s), want true", s.ErrorReason)
		}
		if s.Network != NetworkV1 {
			t.Errorf("v1 network: got %q, want %q", s.Network, NetworkV1)
		}
		if got := BalanceOf(t, a, payTo); got != 2*facilitatorPrice {
			t.Errorf("payee balance: got %d, want %d", got, 2*facilitatorPrice)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		got := f.Stats(t)
		if got.Verify != 3 || got.Settle != 3 || got.Connections < 1 {
			t.Errorf("got %+v, want 3 verify, 3 settle and the connections it accepted", got)
		}
	})
}

func TestFacilitator_VerifyRejects(t *testing.T) {
	a := Start(t)
	DeployUSDC(t, a)
	Mint(t, a, Payer.Address, 10*money.PerUSD)
	f := StartFacilitator(t, a, FacilitatorConfig{})
	payTo := PayTo.Address
	broke := NewAccount(t)

	tests := []struct {
		name string
		body func() map[string]any
		want string
	}{
		{
			name: "AmountMismatch",
			body: func() map[string]any {
				auth, sig := signed(t, Payer, payTo, facilitatorPrice, time.Minute)
				return paymentV2(requirementsV2(payTo, 2*facilitatorPrice), auth, sig)
			},
			want: "invalid_exact_evm_payload_authorization_value_mismatch",
		},
		{
			name: "RecipientMismatch",
			body: func() map[string]any {
				auth, sig := signed(t, Payer, broke.Address, facilitatorPrice, time.Minute)
				return paymentV2(requirementsV2(payTo, facilitatorPrice), auth, sig)
			},
			want: "invalid_exact_evm_recipient_mismatch",
		},
		{
			name: "BadSignature",
			body: func() map[string]any {
				auth, _ := signed(t, Payer, payTo, facilitatorPrice, time.Minute)
				_, sig := signed(t, Payer, payTo, facilitatorPrice, time.Minute) // another nonce
				return paymentV2(requirementsV2(payTo, facilitatorPrice), auth, sig)
			},
			want: "invalid_exact_evm_signature",
		},
		{
			name: "InsufficientBalance",
			body: func() map[string]any {
				auth, sig := signed(t, broke, payTo, facilitatorPrice, time.Minute)
				return paymentV2(requirementsV2(payTo, facilitatorPrice), auth, sig)
			},
			want: "invalid_exact_evm_insufficient_balance",
		},
		{
			name: "ExpiresTooSoon",
			body: func() map[string]any {
				auth, sig := signed(t, Payer, payTo, facilitatorPrice, 3*time.Second)
				return paymentV2(requirementsV2(payTo, facilitatorPrice), auth, sig)
			},
			want: "invalid_exact_evm_payload_authorization_valid_before",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v verifyResponse
			postJSON(t, f.URL()+"/verify", tc.body(), &v)
			if v.IsValid {
				t.Fatal("isValid: got true, want false")
			}
			if v.InvalidReason != tc.want {
				t.Errorf("invalidReason: got %q, want %q", v.InvalidReason, tc.want)
			}
		})
	}
	t.Run("InvalidStatus400", func(t *testing.T) {
		f400 := StartFacilitator(t, a, FacilitatorConfig{InvalidStatus: http.StatusBadRequest})
		var v verifyResponse
		status := postJSON(t, f400.URL()+"/verify", tests[0].body(), &v)
		if status != http.StatusBadRequest || v.IsValid {
			t.Errorf("got status %d isValid %v, want 400 and false", status, v.IsValid)
		}
	})
	if got := BalanceOf(t, a, payTo); got != 0 {
		t.Errorf("payee balance after rejected verifies: got %d, want 0", got)
	}
}
