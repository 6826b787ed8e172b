package chain

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/toolgate/toolgate/money"
)

// paidEcho is a minimal x402 resource server for testing the client
// scripts: one priced route that echoes the request body. Its 402 carries
// the v2 PAYMENT-REQUIRED header and a v1 body, as x402-notes §1.8
// suggests; it verifies and settles through the facilitator with its own
// requirements, never the client's.
type paidEcho struct {
	facilitator string
	payTo       common.Address
	price       money.Micros
	url         string
}

func startPaidEcho(t *testing.T, f *Facilitator, payTo common.Address, price money.Micros) *paidEcho {
	t.Helper()
	p := &paidEcho{facilitator: f.URL(), payTo: payTo, price: price}
	srv := httptest.NewUnstartedServer(p)
	p.url = "http://" + srv.Listener.Addr().String() + "/v1/tools/echo"
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

func b64JSON(v any) string {
	raw, _ := json.Marshal(v)
	return base64.StdEncoding.EncodeToString(raw)
}

func (p *paidEcho) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	v2 := requirementsV2(p.payTo, p.price)
	v1 := requirementsV1(p.payTo, p.price)
	v1["resource"] = p.url
	w.Header().Set("Content-Type", "application/json")

	unpaid := func(reason string) {
		w.Header().Set("PAYMENT-REQUIRED", b64JSON(map[string]any{
			"x402Version": 2,
			"error":       reason,
			"resource":    map[string]any{"url": p.url, "description": "echo", "mimeType": "application/json"},
			"accepts":     []any{v2},
		}))
		w.WriteHeader(http.StatusPaymentRequired)
		_ = json.NewEncoder(w).Encode(map[string]any{"x402Version": 1, "error": reason, "accepts": []any{v1}})
	}

	var (
		header, respHeader string
		reqs               map[string]any
		version            int
	)
	switch {
	case r.Header.Get("PAYMENT-SIGNATURE") != "":
		header, respHeader, reqs, version = r.Header.Get("PAYMENT-SIGNATURE"), "PAYMENT-RESPONSE", v2, 2
	case r.Header.Get("X-PAYMENT") != "":
		header, respHeader, reqs, version = r.Header.Get("X-PAYMENT"), "X-PAYMENT-RESPONSE", v1, 1
	default:
		unpaid("Payment required")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(header)
	var payload map[string]any
	if err != nil || json.Unmarshal(raw, &payload) != nil {
		http.Error(w, `{"error":"malformed payment header"}`, http.StatusBadRequest)
		return
	}
	req := map[string]any{"x402Version": version, "paymentPayload": payload, "paymentRequirements": reqs}
	var v verifyResponse
	if _, err := doPost(p.facilitator+"/verify", req, &v); err != nil {
		http.Error(w, `{"error":"facilitator unavailable"}`, http.StatusBadGateway)
		return
	}
	if !v.IsValid {
		unpaid(v.InvalidReason)
		return
	}
	var s map[string]any
	if _, err := doPost(p.facilitator+"/settle", req, &s); err != nil {
		http.Error(w, `{"error":"facilitator unavailable"}`, http.StatusBadGateway)
		return
	}
	w.Header().Set(respHeader, b64JSON(s))
	if s["success"] != true {
		unpaid("settlement failed")
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"echo": string(body), "method": r.Method})
}

// clientChain is a chain with TestUSDC, a funded Payer and a facilitator.
func clientChain(t *testing.T) (*Anvil, *Facilitator) {
	t.Helper()
	a := Start(t)
	DeployUSDC(t, a)
	Mint(t, a, Payer.Address, 10*money.PerUSD)
	return a, StartFacilitator(t, a, FacilitatorConfig{})
}

func TestPayV2(t *testing.T) {
	a, f := clientChain(t)
	const price money.Micros = 10_000

	t.Run("PostJSON", func(t *testing.T) {
		payTo := NewAccount(t).Address
		srv := startPaidEcho(t, f, payTo, price)
		f.Timings(t) // forget earlier ops
		wallMs := func() float64 { return float64(time.Now().UnixMicro()) / 1000 }
		before := wallMs()
		res := PayV2(t, srv.url, PayOptions{RPC: a.RPC(), JSON: `{"text":"hello"}`})[0]
		after := wallMs()
		if res.Error != "" {
			t.Fatalf("client error: %s", res.Error)
		}
		// The client's and the facilitator's wall-clock stamps (what the
		// paid-latency breakdown lines up) follow the call's order.
		ops := f.Timings(t)
		if res.Phases == nil || len(res.Phases.At) != 4 || len(ops) != 2 || len(ops[0].At) != 2 || len(ops[1].At) != 2 ||
			ops[0].Op != "verify" || ops[1].Op != "settle" {
			t.Fatalf("phases %+v, facilitator ops %+v: want 4 client stamps, a verify and a settle with 2 each", res.Phases, ops)
		}
		at := res.Phases.At
		seq := []float64{before, at[0], at[1], at[2], ops[0].At[0], ops[0].At[1], ops[1].At[0], ops[1].At[1], at[3], after}
		for i := 1; i < len(seq); i++ {
			if seq[i] < seq[i-1] {
				t.Errorf("wall-clock stamps out of order at %d: %v (want run start, unpaid start, 402, paid start, /verify in, out, /settle in, out, end, run end)", i, seq)
				break
			}
		}
		if res.Status != http.StatusOK {
			t.Fatalf("status: got %d, want 200 (body %s)", res.Status, res.Body)
		}
		var echo struct{ Echo, Method string }
		if err := json.Unmarshal(res.JSON, &echo); err != nil || echo.Echo != `{"text":"hello"}` || echo.Method != "POST" {
			t.Errorf("echo: got %s, want the POSTed JSON back", res.Body)
		}
		s, ok := res.Settlement()
		if !ok || !s.Success {
			t.Fatalf("settlement: got %s, want success", res.PaymentResponse)
		}
		if res.PaymentResponseHeader != "PAYMENT-RESPONSE" || s.Network != Network {
			t.Errorf("payment response: got header %q network %q, want PAYMENT-RESPONSE %s", res.PaymentResponseHeader, s.Network, Network)
		}
		if got := BalanceOf(t, a, payTo); got != price {
			t.Errorf("payee balance: got %d, want %d", got, price)
		}
	})

	t.Run("Count", func(t *testing.T) {
		payTo := NewAccount(t).Address
		srv := startPaidEcho(t, f, payTo, price)
		results := PayV2(t, srv.url, PayOptions{RPC: a.RPC(), Count: 3})
		txs := map[string]bool{}
		for _, r := range results {
			s, ok := r.Settlement()
			if r.Status != http.StatusOK || !ok || !s.Success {
				t.Fatalf("call %d: got status %d settlement %s error %q, want 200 and success", r.I, r.Status, r.PaymentResponse, r.Error)
			}
			txs[s.Transaction] = true
			t.Logf("call %d: %.1f ms", r.I, r.Ms)
		}
		if len(txs) != 3 {
			t.Errorf("distinct settlement transactions: got %d, want 3", len(txs))
		}
		if got := BalanceOf(t, a, payTo); got != 3*price {
			t.Errorf("payee balance: got %d, want %d", got, 3*price)
		}
	})

	t.Run("DefaultSpendControlsRefuseOverOneDollar", func(t *testing.T) {
		payTo := NewAccount(t).Address
		srv := startPaidEcho(t, f, payTo, 2*money.PerUSD)
		before := f.Stats(t)
		res := PayV2(t, srv.url, PayOptions{RPC: a.RPC()})[0]
		if !strings.Contains(res.Error, "spendControls") {
			t.Fatalf("got status %d error %q, want a spendControls refusal", res.Status, res.Error)
		}
		if got := f.Stats(t); got != before {
			t.Errorf("facilitator calls: got %+v, want %+v (no paid retry)", got, before)
		}

		res = PayV2(t, srv.url, PayOptions{RPC: a.RPC(), NoSpendControls: true})[0]
		if s, ok := res.Settlement(); res.Status != http.StatusOK || !ok || !s.Success {
			t.Fatalf("without spend controls: got status %d error %q, want 200 and success", res.Status, res.Error)
		}
		if got := BalanceOf(t, a, payTo); got != 2*money.PerUSD {
			t.Errorf("payee balance: got %d, want %d", got, 2*money.PerUSD)
		}
	})
}

func TestPayV1(t *testing.T) {
	a, f := clientChain(t)
	const price money.Micros = 10_000

	t.Run("PostJSON", func(t *testing.T) {
		payTo := NewAccount(t).Address
		srv := startPaidEcho(t, f, payTo, price)
		res := PayV1(t, srv.url, PayOptions{RPC: a.RPC(), JSON: `{"n":1}`})[0]
		if res.Error != "" {
			t.Fatalf("client error: %s", res.Error)
		}
		if res.Status != http.StatusOK {
			t.Fatalf("status: got %d, want 200 (body %s)", res.Status, res.Body)
		}
		if !bytes.Contains(res.JSON, []byte(`{\"n\":1}`)) {
			t.Errorf("echo: got %s, want the POSTed JSON back", res.Body)
		}
		s, ok := res.Settlement()
		if !ok || !s.Success || res.PaymentResponseHeader != "X-PAYMENT-RESPONSE" || s.Network != NetworkV1 {
			t.Fatalf("settlement: got %s from %q, want success on %s from X-PAYMENT-RESPONSE", res.PaymentResponse, res.PaymentResponseHeader, NetworkV1)
		}
		if got := BalanceOf(t, a, payTo); got != price {
			t.Errorf("payee balance: got %d, want %d", got, price)
		}
	})

	t.Run("MaxValue", func(t *testing.T) {
		payTo := NewAccount(t).Address
		srv := startPaidEcho(t, f, payTo, 200_000) // above x402-fetch's default 0.10 USDC cap
		res := PayV1(t, srv.url, PayOptions{RPC: a.RPC()})[0]
		if !strings.Contains(res.Error, "exceeds maximum allowed") {
			t.Fatalf("got status %d error %q, want the max-value refusal", res.Status, res.Error)
		}
		res = PayV1(t, srv.url, PayOptions{RPC: a.RPC(), MaxValue: 200_000})[0]
		if s, ok := res.Settlement(); res.Status != http.StatusOK || !ok || !s.Success {
			t.Fatalf("with MaxValue: got status %d error %q, want 200 and success", res.Status, res.Error)
		}
	})
}

func TestRefServer(t *testing.T) {
	a, f := clientChain(t)
	const price money.Micros = 10_000
	payTo := NewAccount(t).Address
	ref := StartRefServer(t, f, payTo, price)

	t.Run("PayV2", func(t *testing.T) {
		results := PayV2(t, ref.URL(), PayOptions{RPC: a.RPC(), JSON: `{"x":1}`, Count: 2})
		for _, r := range results {
			s, ok := r.Settlement()
			if r.Status != http.StatusOK || !ok || !s.Success {
				t.Fatalf("call %d: got status %d settlement %s error %q body %s, want 200 and success",
					r.I, r.Status, r.PaymentResponse, r.Error, r.Body)
			}
			t.Logf("reference server call %d: %.1f ms", r.I, r.Ms)
		}
		if got := BalanceOf(t, a, payTo); got != 2*price {
			t.Errorf("payee balance: got %d, want %d", got, 2*price)
		}
	})
}
