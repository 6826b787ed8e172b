package toolgate_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

const (
	network      = "eip155:84532"
	reasonNonce  = "invalid_exact_evm_nonce_already_used"
	extractInput = `{"text":"Invoice 42 from ACME, total $120"}`
)

// TestGateway_PaymentRequired checks the unpaid answer of a priced tool:
// the v2 PAYMENT-REQUIRED header, the v1 body (checked with x402-fetch's own
// zod schema), cache and CORS headers, and the preflight.
func TestGateway_PaymentRequired(t *testing.T) {
	t.Parallel()
	d := chain.RequireDeps(t)
	up := startUpstream(t)
	// No payment reaches a facilitator here: an unreachable URL is enough.
	g := startGateway(t, up.url, "--x402-facilitator", "http://127.0.0.1:9")

	t.Run("EmptyBody402", func(t *testing.T) {
		r := do(t, "POST", g.url+"/tools/extract/structured", nil, nil)
		if r.Status != 402 {
			t.Fatalf("status: got %d, want 402: %s", r.Status, r.Body)
		}
		if got := r.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control: got %q, want no-store", got)
		}
		expose := r.Header.Get("Access-Control-Expose-Headers")
		for _, h := range []string{"PAYMENT-REQUIRED", "PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"} {
			if !strings.Contains(expose, h) {
				t.Errorf("Access-Control-Expose-Headers %q: missing %s", expose, h)
			}
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("Access-Control-Allow-Origin: got %q, want *", got)
		}
		var pr paymentRequired
		decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
		if pr.X402Version != 2 || len(pr.Accepts) != 1 {
			t.Fatalf("PAYMENT-REQUIRED: got version %d with %d accepts, want 2 with 1", pr.X402Version, len(pr.Accepts))
		}
		if pr.Resource.URL != g.url+"/tools/extract/structured" {
			t.Errorf("resource.url: got %q, want %q", pr.Resource.URL, g.url+"/tools/extract/structured")
		}
		var req requirements
		if err := json.Unmarshal(pr.Accepts[0], &req); err != nil {
			t.Fatal(err)
		}
		want := requirements{Scheme: "exact", Network: network, Amount: "10000",
			Asset: chain.USDCAddress.Hex(), PayTo: chain.PayTo.Address.Hex()}
		want.Extra.Name, want.Extra.Version = "USDC", "2"
		want.MaxTimeoutSeconds = req.MaxTimeoutSeconds
		if req != want {
			t.Errorf("accepts[0]: got %+v, want %+v", req, want)
		}
		if req.MaxTimeoutSeconds < 35 {
			t.Errorf("maxTimeoutSeconds: got %d, want ≥ 35 (5 s tool + 30 s settlement)", req.MaxTimeoutSeconds)
		}
		var bz struct {
			Info struct {
				Input struct {
					Type, Method, BodyType string
					Body                   map[string]any
				}
				Output struct {
					Type    string
					Example any
				}
			}
			Schema map[string]any
		}
		raw, ok := pr.Extensions["bazaar"]
		if !ok {
			t.Fatalf("extensions.bazaar missing: %v", pr.Extensions)
		}
		if err := json.Unmarshal(raw, &bz); err != nil {
			t.Fatal(err)
		}
		in := bz.Info.Input
		if in.Type != "http" || in.Method != "POST" || in.BodyType != "json" || in.Body["text"] != "Invoice 42 from ACME, total $120" {
			t.Errorf("bazaar info.input: got %+v, want http POST json with the catalog example", in)
		}
		if bz.Info.Output.Type != "json" || bz.Schema["$schema"] == nil {
			t.Errorf("bazaar: got output %+v schema %v, want a json output example and a JSON schema", bz.Info.Output, bz.Schema)
		}

		// v1 body, validated by the legacy client's own schema.
		var v1 struct {
			X402Version int               `json:"x402Version"`
			Accepts     []json.RawMessage `json:"accepts"`
		}
		if err := json.Unmarshal(r.Body, &v1); err != nil || v1.X402Version != 1 || len(v1.Accepts) != 1 {
			t.Fatalf("v1 body: got %s (%v), want x402Version 1 with one accepts entry", r.Body, err)
		}
		check := exec.Command(d.Node, "--input-type=module", "-e", `
import { PaymentRequirementsSchema } from "x402/types";
// What x402-fetch 1.2.0 does with a 402 body: every accepts item must parse.
const body = JSON.parse(process.argv[1]);
if (body.x402Version !== 1 || !Array.isArray(body.accepts)) throw new Error("not a v1 body");
for (const a of body.accepts) PaymentRequirementsSchema.parse(a);
`, string(r.Body))
		check.Dir = d.Dir
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("v1 body fails x402-fetch's schema: %v\n%s", err, out)
		}
		var a1 struct {
			Network           string `json:"network"`
			MaxAmountRequired string `json:"maxAmountRequired"`
			PayTo             string `json:"payTo"`
			Asset             string `json:"asset"`
		}
		_ = json.Unmarshal(v1.Accepts[0], &a1)
		if a1.Network != "base-sepolia" || a1.MaxAmountRequired != "10000" || a1.PayTo != chain.PayTo.Address.Hex() || a1.Asset != chain.USDCAddress.Hex() {
			t.Errorf("v1 accepts[0]: got %+v, want base-sepolia 10000 to %s in %s", a1, chain.PayTo.Address.Hex(), chain.USDCAddress.Hex())
		}
	})

	t.Run("Preflight", func(t *testing.T) {
		r := do(t, "OPTIONS", g.url+"/tools/extract/structured", nil, map[string]string{
			"Origin": "https://agent.example", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "payment-signature,access-control-expose-headers,content-type",
		})
		if r.Status != 204 && r.Status != 200 {
			t.Fatalf("OPTIONS: got status %d, want 204", r.Status)
		}
		allow := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers"))
		for _, h := range []string{"payment-signature", "x-payment", "access-control-expose-headers", "x-api-key", "content-type"} {
			if !strings.Contains(allow, h) {
				t.Errorf("Access-Control-Allow-Headers %q: missing %s", allow, h)
			}
		}
		if up.Hits("/extract") != 0 {
			t.Errorf("upstream hits: got %d, want 0", up.Hits("/extract"))
		}
	})

	t.Run("Discovery", func(t *testing.T) {
		r := do(t, "GET", g.url+"/discovery/resources", nil, nil)
		if r.Status != 200 {
			t.Fatalf("GET /discovery/resources: got %d, want 200", r.Status)
		}
		var lst struct {
			Items []struct {
				Resource string `json:"resource"`
				Type     string `json:"type"`
				Metadata struct {
					Tool string `json:"tool"`
				} `json:"metadata"`
			} `json:"items"`
		}
		if err := json.Unmarshal(r.Body, &lst); err != nil {
			t.Fatal(err)
		}
		// Each of the 5 priced tools as an HTTP endpoint and as an MCP tool.
		found, foundMCP := false, false
		for _, it := range lst.Items {
			found = found || it.Type == "http" && it.Resource == g.url+"/tools/extract/structured"
			foundMCP = foundMCP || it.Type == "mcp" && it.Resource == g.url+"/mcp" && it.Metadata.Tool == "extract/structured"
		}
		if !found || !foundMCP || len(lst.Items) != 10 {
			t.Errorf("discovery: got %d items (extract listed: %t, as MCP tool: %t), want 10 with both", len(lst.Items), found, foundMCP)
		}
	})

	t.Run("Ledger", func(t *testing.T) {
		if got := g.outcomes(t, "")["payment_required"]; got < 1 {
			t.Errorf("payment_required records: got %d, want ≥ 1", got)
		}
	})
}

// TestGateway_Pay pays with the real npm clients through both settlement
// backends and both settle modes, and checks the money on chain and the
// ledger.
func TestGateway_Pay(t *testing.T) {
	t.Parallel()
	for _, b := range []backend{viaFacilitator, viaChain} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			cases := []struct {
				name  string
				v1    bool
				tool  string
				path  string
				price money.Micros
			}{
				{name: "V2AfterUpstream", tool: "extract/structured", path: "/extract", price: priceExtract},
				{name: "V2BeforeUpstream", tool: "email/send", path: "/email", price: priceEmail},
				{name: "V1AfterUpstream", v1: true, tool: "extract/structured", path: "/extract", price: priceExtract},
				{name: "V1BeforeUpstream", v1: true, tool: "email/send", path: "/email", price: priceEmail},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
					payer0 := chain.BalanceOf(t, e.a, chain.Payer.Address)
					hits0 := e.up.Hits(tc.path)
					opts := chain.PayOptions{RPC: e.a.RPC(), JSON: extractInput}
					var res []chain.PayResult
					hdr := "payment-response"
					if tc.v1 {
						res, hdr = chain.PayV1(t, e.gw.url+"/tools/"+tc.tool, opts), "x-payment-response"
					} else {
						res = chain.PayV2(t, e.gw.url+"/tools/"+tc.tool, opts)
					}
					r := res[0]
					if r.Error != "" || r.Status != 200 {
						t.Fatalf("paid call: got status %d error %q body %s, want 200", r.Status, r.Error, r.Body)
					}
					var body struct {
						OK            bool   `json:"ok"`
						Principal     string `json:"principal"`
						LeakedPayment bool   `json:"leaked_payment"`
					}
					_ = json.Unmarshal(r.JSON, &body)
					if !body.OK || body.Principal != "wallet:"+chain.Payer.Address.Hex() || body.LeakedPayment {
						t.Errorf("upstream saw: got %s, want ok from wallet:%s without payment headers", r.Body, chain.Payer.Address.Hex())
					}
					s, ok := r.Settlement()
					if !ok || !s.Success || !strings.HasPrefix(s.Transaction, "0x") || len(s.Transaction) != 66 ||
						!strings.EqualFold(s.Payer, chain.Payer.Address.Hex()) {
						t.Fatalf("settlement: got %+v (present %t), want success with a tx hash and the payer", s, ok)
					}
					if r.PaymentResponseHeader != "" && !strings.EqualFold(r.PaymentResponseHeader, hdr) {
						t.Errorf("payment response header: got %q, want %q", r.PaymentResponseHeader, hdr)
					}
					wantNet := network
					if tc.v1 {
						wantNet = "base-sepolia"
					}
					if s.Network != wantNet {
						t.Errorf("settlement network: got %q, want %q", s.Network, wantNet)
					}
					if got := r.Headers["x-cost-usd"]; got != "" {
						if m, err := money.Parse(got); err != nil || m != tc.price {
							t.Errorf("X-Cost-Usd: got %q, want %s", got, tc.price)
						}
					}
					if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payTo0; got != tc.price {
						t.Errorf("payTo balance rose by %d, want %d", got, tc.price)
					}
					if got := payer0 - chain.BalanceOf(t, e.a, chain.Payer.Address); got != tc.price {
						t.Errorf("payer balance fell by %d, want %d", got, tc.price)
					}
					if got := e.up.Hits(tc.path) - hits0; got != 1 {
						t.Errorf("upstream hits: got %d, want 1", got)
					}
					reqID := r.Headers["x-request-id"]
					e.gw.wantSettledInLedger(t, chain.Payer.Address, tc.tool, reqID, s.Transaction, tc.price)
					nonce := ledgerNonce(t, e.gw, chain.Payer.Address, reqID)
					if !chain.AuthorizationState(t, e.a, chain.Payer.Address, nonce) {
						t.Errorf("authorizationState(payer, %x): got false, want true", nonce)
					}
				})
			}
			if e.fac != nil {
				if s := e.fac.Stats(t); s.Settle != len(cases) {
					t.Errorf("facilitator /settle calls: got %d, want %d", s.Settle, len(cases))
				}
			}
		})
	}
}

// ledgerNonce returns the authorization nonce recorded with a call.
func ledgerNonce(t testing.TB, g *gateway, payer common.Address, requestID string) [32]byte {
	t.Helper()
	for _, r := range g.audit(t, "wallet:"+payer.Hex()) {
		if r.Type == "call" && r.RequestID == requestID && r.Payment != nil {
			b := common.FromHex(r.Payment.Nonce)
			if len(b) != 32 {
				t.Fatalf("ledger nonce %q: not 32 bytes", r.Payment.Nonce)
			}
			var n [32]byte
			copy(n[:], b)
			return n
		}
	}
	t.Fatalf("no call record with a payment for request %s", requestID)
	return [32]byte{}
}

// TestGateway_AfterUpstreamFailure: an upstream error in after_upstream
// mode settles nothing and leaves the authorization usable.
func TestGateway_AfterUpstreamFailure(t *testing.T) {
	t.Parallel()
	for _, b := range []backend{viaFacilitator, viaChain} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			e.up.fail.Store(true)
			p := e.gw.validV2(t, chain.Payer, "flaky", priceFlaky)
			payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
			payer0 := chain.BalanceOf(t, e.a, chain.Payer.Address)

			r := do(t, "POST", e.gw.url+"/tools/flaky", []byte(`{}`), p.Headers())
			if r.Status != 500 {
				t.Fatalf("status: got %d, want the upstream's 500: %s", r.Status, r.Body)
			}
			if h := r.Header.Get("Payment-Response"); h != "" {
				t.Errorf("PAYMENT-RESPONSE on an unserved call: got %q, want none", h)
			}
			if got := r.Header.Get("X-Cost-Usd"); got != "0.000" {
				t.Errorf("X-Cost-Usd: got %q, want 0.000", got)
			}
			if chain.BalanceOf(t, e.a, chain.PayTo.Address) != payTo0 || chain.BalanceOf(t, e.a, chain.Payer.Address) != payer0 {
				t.Errorf("balances moved on an upstream failure")
			}
			if chain.AuthorizationState(t, e.a, chain.Payer.Address, p.Auth.Nonce) {
				t.Errorf("authorizationState: got true, want false (not settled)")
			}
			if e.fac != nil {
				if s := e.fac.Stats(t); s.Settle != 0 {
					t.Errorf("facilitator /settle calls: got %d, want 0", s.Settle)
				}
			}

			// The same authorization pays once the tool works.
			e.up.fail.Store(false)
			r = do(t, "POST", e.gw.url+"/tools/flaky", []byte(`{}`), p.Headers())
			if r.Status != 200 {
				t.Fatalf("retry with the same payment: got %d, want 200: %s", r.Status, r.Body)
			}
			s := decodeSettlement(t, r, "Payment-Response")
			if !s.Success {
				t.Fatalf("retry settlement: got %+v, want success", s)
			}
			if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payTo0; got != priceFlaky {
				t.Errorf("payTo balance rose by %d, want %d", got, priceFlaky)
			}
			if !chain.AuthorizationState(t, e.a, chain.Payer.Address, p.Auth.Nonce) {
				t.Errorf("authorizationState after the paid retry: got false, want true")
			}
			if got := e.up.Hits("/flaky"); got != 2 {
				t.Errorf("upstream hits: got %d, want 2", got)
			}
			outs := e.gw.outcomes(t, "wallet:"+chain.Payer.Address.Hex())
			if outs["allowed"] != 2 || outs["x402_settlement"] != 1 {
				t.Errorf("ledger: got %v, want 2 allowed calls (one unbilled 500) and 1 settlement", outs)
			}
		})
	}
}

// TestGateway_Refusals sends payments that must never move money.
func TestGateway_Refusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaFacilitator)
	g, a := e.gw, e.a

	type check struct {
		payTo money.Micros
		stats chain.FacilitatorStats
		hits  map[string]int
	}
	paths := []string{"/extract", "/email", "/code", "/image", "/flaky"}
	snapshot := func() check {
		c := check{payTo: chain.BalanceOf(t, a, chain.PayTo.Address), stats: e.fac.Stats(t), hits: map[string]int{}}
		for _, p := range paths {
			c.hits[p] = e.up.Hits(p)
		}
		return c
	}
	// nothingHappened asserts no settlement, no upstream call and, if
	// noVerify, no facilitator call at all since before.
	nothingHappened := func(t *testing.T, before check, noVerify bool) {
		t.Helper()
		after := snapshot()
		if after.payTo != before.payTo {
			t.Errorf("payTo balance: got %d, want unchanged %d", after.payTo, before.payTo)
		}
		if after.stats.Settle != before.stats.Settle {
			t.Errorf("facilitator /settle calls: got %d, want unchanged %d", after.stats.Settle, before.stats.Settle)
		}
		if noVerify && after.stats.Verify != before.stats.Verify {
			t.Errorf("facilitator /verify calls: got %d, want unchanged %d", after.stats.Verify, before.stats.Verify)
		}
		for _, p := range paths {
			if after.hits[p] != before.hits[p] {
				t.Errorf("upstream %s hits: got %d, want unchanged %d", p, after.hits[p], before.hits[p])
			}
		}
	}
	want402 := func(t *testing.T, r response, reason string) {
		t.Helper()
		if r.Status != 402 {
			t.Fatalf("status: got %d, want 402: %s", r.Status, r.Body)
		}
		var pr paymentRequired
		decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
		if reason != "" && pr.Error != reason {
			t.Errorf("PAYMENT-REQUIRED error: got %q, want %q", pr.Error, reason)
		}
		if reason != "" && errorField(r.Body) != reason {
			t.Errorf("v1 body error: got %q, want %q", errorField(r.Body), reason)
		}
	}
	url := func(tool string) string { return g.url + "/tools/" + tool }
	_, accExtract := g.offer(t, "extract/structured")

	t.Run("Replay", func(t *testing.T) {
		for _, v := range []int{2, 1} {
			auth := chain.NewAuthorization(chain.Payer.Address, chain.PayTo.Address, priceExtract, 2*time.Minute)
			p := payV2(t, chain.Payer, auth, accExtract)
			hdr := "Payment-Response"
			if v == 1 {
				p, hdr = payV1(t, chain.Payer, auth), "X-Payment-Response"
			}
			r := do(t, "POST", url("extract/structured"), []byte(extractInput), p.Headers())
			if r.Status != 200 || !decodeSettlement(t, r, hdr).Success {
				t.Fatalf("v%d first use: got %d, want 200 and settled: %s", v, r.Status, r.Body)
			}
			before := snapshot()
			r = do(t, "POST", url("extract/structured"), []byte(extractInput), p.Headers())
			want402(t, r, reasonNonce)
			nothingHappened(t, before, true)
		}
	})

	t.Run("WrongAmount", func(t *testing.T) {
		before := snapshot()
		// The authorization pays less than the price it echoes.
		auth := chain.NewAuthorization(chain.Payer.Address, chain.PayTo.Address, priceExtract-1, 2*time.Minute)
		r := do(t, "POST", url("extract/structured"), []byte(extractInput), payV2(t, chain.Payer, auth, accExtract).Headers())
		want402(t, r, "invalid_exact_evm_payload_authorization_value_mismatch")
		// The echoed requirements themselves are altered to match.
		var m map[string]any
		_ = json.Unmarshal(accExtract, &m)
		m["amount"] = "9999"
		acc, _ := json.Marshal(m)
		r = do(t, "POST", url("extract/structured"), []byte(extractInput), payV2(t, chain.Payer, auth, acc).Headers())
		want402(t, r, "invalid_exact_evm_payload_authorization_value_mismatch")
		// v1 carries no requirements: only the authorization's value.
		r = do(t, "POST", url("extract/structured"), []byte(extractInput), payV1(t, chain.Payer, auth).Headers())
		want402(t, r, "invalid_exact_evm_payload_authorization_value_mismatch")
		nothingHappened(t, before, true)
		if chain.AuthorizationState(t, a, chain.Payer.Address, auth.Nonce) {
			t.Errorf("authorizationState: got true, want false")
		}
	})

	t.Run("WrongPayTo", func(t *testing.T) {
		before := snapshot()
		thief := chain.NewAccount(t).Address
		auth := chain.NewAuthorization(chain.Payer.Address, thief, priceExtract, 2*time.Minute)
		r := do(t, "POST", url("extract/structured"), []byte(extractInput), payV2(t, chain.Payer, auth, accExtract).Headers())
		want402(t, r, "invalid_exact_evm_recipient_mismatch")
		var m map[string]any
		_ = json.Unmarshal(accExtract, &m)
		m["payTo"] = thief.Hex()
		acc, _ := json.Marshal(m)
		r = do(t, "POST", url("extract/structured"), []byte(extractInput), payV2(t, chain.Payer, auth, acc).Headers())
		want402(t, r, "invalid_exact_evm_recipient_mismatch")
		nothingHappened(t, before, true)
		if got := chain.BalanceOf(t, a, thief); got != 0 {
			t.Errorf("wrong payTo balance: got %d, want 0", got)
		}
	})

	t.Run("Expired", func(t *testing.T) {
		before := snapshot()
		auth := chain.NewAuthorization(chain.Payer.Address, chain.PayTo.Address, priceExtract, 0)
		auth.ValidBefore = time.Now().Unix() - 30
		r := do(t, "POST", url("extract/structured"), []byte(extractInput), payV2(t, chain.Payer, auth, accExtract).Headers())
		want402(t, r, "invalid_exact_evm_payload_authorization_valid_before")
		// Valid for less than the tool's timeout plus settlement: refused too.
		auth = chain.NewAuthorization(chain.Payer.Address, chain.PayTo.Address, priceExtract, 10*time.Second)
		r = do(t, "POST", url("extract/structured"), []byte(extractInput), payV2(t, chain.Payer, auth, accExtract).Headers())
		want402(t, r, "invalid_exact_evm_payload_authorization_valid_before")
		nothingHappened(t, before, true)
	})

	t.Run("BadSignature", func(t *testing.T) {
		before := snapshot()
		auth := chain.NewAuthorization(chain.Payer.Address, chain.PayTo.Address, priceExtract, 2*time.Minute)
		p := payV2(t, chain.NewAccount(t), auth, accExtract) // signed by someone else
		r := do(t, "POST", url("extract/structured"), []byte(extractInput), p.Headers())
		if r.Status != 402 {
			t.Fatalf("status: got %d, want 402: %s", r.Status, r.Body)
		}
		nothingHappened(t, before, false)
	})

	t.Run("NoBalance", func(t *testing.T) {
		poor := chain.NewAccount(t)
		for _, tool := range []string{"extract/structured", "email/send"} {
			before := snapshot()
			price := money.Micros(priceExtract)
			if tool == "email/send" {
				price = priceEmail
			}
			p := g.validV2(t, poor, tool, price)
			r := do(t, "POST", url(tool), []byte(extractInput), p.Headers())
			want402(t, r, "")
			if tool == "extract/structured" {
				nothingHappened(t, before, false) // verified remotely, never settled
			} else {
				// before_upstream asks the facilitator to settle; it fails.
				after := snapshot()
				if after.payTo != before.payTo || after.hits["/email"] != before.hits["/email"] {
					t.Errorf("before_upstream without funds: payTo %d→%d, upstream %d→%d; want both unchanged",
						before.payTo, after.payTo, before.hits["/email"], after.hits["/email"])
				}
			}
			if chain.AuthorizationState(t, a, poor.Address, p.Auth.Nonce) {
				t.Errorf("%s: authorizationState: got true, want false", tool)
			}
		}
	})

	t.Run("DeniedTool", func(t *testing.T) {
		before := snapshot()
		// No wallet may call it: the unpaid call gets the 403, no challenge.
		r0 := do(t, "POST", url("code_execute"), nil, nil)
		if r0.Status != 403 || string(r0.Body) != `{"error":"Tool access denied by policy","tool":"code_execute","reason":"deny_tools"}` ||
			r0.Header.Get("Payment-Required") != "" {
			t.Fatalf("unpaid, no wallet may call it: got %d %s (PAYMENT-REQUIRED %q), want 403 without a challenge",
				r0.Status, r0.Body, r0.Header.Get("Payment-Required"))
		}
		// Some wallet may (an override): the challenge comes back, saying a
		// policy applies; the unknown payer's paid call is still refused.
		other := chain.NewAccount(t)
		if r := g.admin(t, "PUT", "/wallets/"+other.Address.Hex()+"/policy", map[string]any{}); r.Status/100 != 2 {
			t.Fatalf("PUT wallet policy: got %d: %s", r.Status, r.Body)
		}
		pr, _ := g.offer(t, "code_execute")
		if !strings.Contains(pr.Error, "a policy applies") {
			t.Errorf("PAYMENT-REQUIRED error: got %q, want it to say a policy applies", pr.Error)
		}
		p := g.validV2(t, chain.Payer, "code_execute", priceCode)
		r := do(t, "POST", url("code_execute"), []byte(`{"code":"1+1"}`), p.Headers())
		if r.Status != 403 {
			t.Fatalf("status: got %d, want 403: %s", r.Status, r.Body)
		}
		var body struct{ Error, Tool, Reason string }
		_ = json.Unmarshal(r.Body, &body)
		if body.Reason != "deny_tools" || body.Tool != "code_execute" {
			t.Errorf("body: got %s, want reason deny_tools for code_execute", r.Body)
		}
		if r.Header.Get("Payment-Response") != "" {
			t.Errorf("PAYMENT-RESPONSE on a denied call: got one, want none")
		}
		nothingHappened(t, before, true)
		if chain.AuthorizationState(t, a, chain.Payer.Address, p.Auth.Nonce) {
			t.Errorf("authorizationState: got true, want false")
		}
	})

	t.Run("QuotaHit", func(t *testing.T) {
		w := chain.NewAccount(t)
		chain.Mint(t, a, w.Address, money.PerUSD)
		if r := g.admin(t, "PUT", "/wallets/"+w.Address.Hex()+"/policy",
			map[string]any{"rate_class_quota": map[string]int{"heavy": 1}}); r.Status/100 != 2 {
			t.Fatalf("PUT wallet policy: got %d: %s", r.Status, r.Body)
		}
		p := g.validV2(t, w, "image/generate", priceImage)
		r := do(t, "POST", url("image/generate"), []byte(`{"prompt":"cat"}`), p.Headers())
		if r.Status != 200 {
			t.Fatalf("first heavy call: got %d, want 200: %s", r.Status, r.Body)
		}
		before := snapshot()
		p2 := g.validV2(t, w, "image/generate", priceImage)
		r = do(t, "POST", url("image/generate"), []byte(`{"prompt":"dog"}`), p2.Headers())
		if r.Status != 403 {
			t.Fatalf("second heavy call: got %d, want 403: %s", r.Status, r.Body)
		}
		var body struct {
			Error     string `json:"error"`
			RateClass string `json:"rate_class"`
			Limit     int    `json:"limit"`
		}
		_ = json.Unmarshal(r.Body, &body)
		if body.Error != "Policy rate class quota exceeded" || body.RateClass != "heavy" || body.Limit != 1 {
			t.Errorf("body: got %s, want the heavy quota of 1", r.Body)
		}
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("Retry-After: missing")
		}
		nothingHappened(t, before, true)
		if chain.AuthorizationState(t, a, w.Address, p2.Auth.Nonce) {
			t.Errorf("authorizationState of the refused payment: got true, want false")
		}
		outs := g.outcomes(t, "wallet:"+w.Address.Hex())
		if outs["allowed"] != 1 || outs["quota_exceeded"] != 1 || outs["x402_settlement"] != 1 {
			t.Errorf("ledger: got %v, want 1 allowed, 1 quota_exceeded, 1 settlement", outs)
		}
	})

	t.Run("SpendCapped", func(t *testing.T) {
		w := chain.NewAccount(t)
		chain.Mint(t, a, w.Address, money.PerUSD)
		if r := g.admin(t, "PUT", "/wallets/"+w.Address.Hex()+"/policy",
			map[string]any{"daily_spend_cap_usd": 0.01}); r.Status/100 != 2 {
			t.Fatalf("PUT wallet policy: got %d: %s", r.Status, r.Body)
		}
		before := snapshot()
		p := g.validV2(t, w, "image/generate", priceImage)
		r := do(t, "POST", url("image/generate"), []byte(`{"prompt":"cat"}`), p.Headers())
		if r.Status != 429 {
			t.Fatalf("status: got %d, want 429: %s", r.Status, r.Body)
		}
		if errorField(r.Body) != "Daily spend cap exceeded" || r.Header.Get("Retry-After") == "" {
			t.Errorf("body: got %s (Retry-After %q), want the daily cap error with Retry-After", r.Body, r.Header.Get("Retry-After"))
		}
		nothingHappened(t, before, true)
	})
}

// TestGateway_OnePaymentOneCall sends one valid payment 100 times at once:
// exactly one call runs and is paid.
func TestGateway_OnePaymentOneCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		b    backend
		tool string
		path string
		pr   money.Micros
	}{
		{name: "FacilitatorAfterUpstream", b: viaFacilitator, tool: "extract/structured", path: "/extract", pr: priceExtract},
		{name: "ChainBeforeUpstream", b: viaChain, tool: "email/send", path: "/email", pr: priceEmail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.b)
			e.up.delay.Store(int64(100 * time.Millisecond)) // keep the winner in flight
			p := e.gw.validV2(t, chain.Payer, tc.tool, tc.pr)
			payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)

			const n = 100
			ok, replay := sendAtOnce(t, n, func(int) string { return e.gw.url + "/tools/" + tc.tool }, p)
			if ok != 1 || replay != n-1 {
				t.Errorf("got %d × 200 and %d × 402 nonce used, want 1 and %d", ok, replay, n-1)
			}
			if got := e.up.Hits(tc.path); got != 1 {
				t.Errorf("upstream hits: got %d, want 1", got)
			}
			if got := chain.BalanceOf(t, e.a, chain.PayTo.Address) - payTo0; got != tc.pr {
				t.Errorf("payTo balance rose by %d, want %d", got, tc.pr)
			}
			if e.fac != nil {
				if s := e.fac.Stats(t); s.Settle != 1 {
					t.Errorf("facilitator /settle calls: got %d, want 1", s.Settle)
				}
			}
			// Refused replays are recorded before the payer is identified,
			// so count them over all principals.
			outs := e.gw.outcomes(t, "")
			if outs["allowed"] != 1 || outs["x402_settlement"] != 1 || outs["payment_invalid"] != n-1 {
				t.Errorf("ledger: got %v, want 1 allowed, 1 settlement, %d payment_invalid", outs, n-1)
			}
		})
	}
}

// TestGateway_WalletSpend: paid calls count toward the wallet's daily cap,
// visible in /authorization/status, and the cap stops the next call.
func TestGateway_WalletSpend(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaFacilitator)
	w := chain.NewAccount(t)
	chain.Mint(t, e.a, w.Address, money.PerUSD)
	if r := e.gw.admin(t, "PUT", "/wallets/"+w.Address.Hex()+"/policy",
		map[string]any{"daily_spend_cap_usd": 0.025}); r.Status/100 != 2 {
		t.Fatalf("PUT wallet policy: got %d: %s", r.Status, r.Body)
	}
	url := e.gw.url + "/tools/extract/structured"
	res := chain.PayV2(t, url, chain.PayOptions{Payer: w, RPC: e.a.RPC(), JSON: extractInput, Count: 2})
	for i, r := range res {
		if r.Status != 200 {
			t.Fatalf("call %d: got %d %q, want 200: %s", i, r.Status, r.Error, r.Body)
		}
	}
	status := func() (spent, limit money.Micros, tier string) {
		r := e.gw.admin(t, "GET", "/authorization/status?wallet="+w.Address.Hex(), nil)
		if r.Status != 200 {
			t.Fatalf("GET /authorization/status: got %d: %s", r.Status, r.Body)
		}
		var s struct {
			Spend json.RawMessage `json:"spend_today_usd"`
			Limit json.RawMessage `json:"spend_limit_usd"`
			Tier  string          `json:"tier"`
		}
		if err := json.Unmarshal(r.Body, &s); err != nil {
			t.Fatal(err)
		}
		var err error
		if spent, err = money.ParseJSON(s.Spend); err != nil {
			t.Fatalf("spend_today_usd %s: %v", s.Spend, err)
		}
		if limit, err = money.ParseJSON(s.Limit); err != nil {
			t.Fatalf("spend_limit_usd %s: %v", s.Limit, err)
		}
		return spent, limit, s.Tier
	}
	spent, limit, tier := status()
	if spent != 2*priceExtract || limit != 25_000 || tier != "wallet" {
		t.Errorf("status: got spend %d limit %d tier %q, want %d, 25000, wallet", spent, limit, tier, 2*priceExtract)
	}
	payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
	settles := e.fac.Stats(t).Settle
	res = chain.PayV2(t, url, chain.PayOptions{Payer: w, RPC: e.a.RPC(), JSON: extractInput})
	if res[0].Status != 429 {
		t.Errorf("third call: got %d %q, want 429: %s", res[0].Status, res[0].Error, res[0].Body)
	}
	if got := chain.BalanceOf(t, e.a, chain.PayTo.Address); got != payTo0 {
		t.Errorf("payTo balance after the capped call: got %d, want %d", got, payTo0)
	}
	if got := e.fac.Stats(t).Settle; got != settles {
		t.Errorf("facilitator /settle calls: got %d, want %d", got, settles)
	}
	if spent, _, _ := status(); spent != 2*priceExtract {
		t.Errorf("spend after the capped call: got %d, want %d", spent, 2*priceExtract)
	}
}

// TestGateway_Restart: the nonce lock is in the store; a replay after a
// restart is refused locally, without asking the facilitator.
func TestGateway_Restart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, viaFacilitator)
	p := e.gw.validV2(t, chain.Payer, "extract/structured", priceExtract)
	r := do(t, "POST", e.gw.url+"/tools/extract/structured", []byte(extractInput), p.Headers())
	if r.Status != 200 {
		t.Fatalf("paid call: got %d, want 200: %s", r.Status, r.Body)
	}
	e.gw.restart()
	before := e.fac.Stats(t)
	payTo0 := chain.BalanceOf(t, e.a, chain.PayTo.Address)
	r = do(t, "POST", e.gw.url+"/tools/extract/structured", []byte(extractInput), p.Headers())
	if r.Status != 402 {
		t.Fatalf("replay after restart: got %d, want 402: %s", r.Status, r.Body)
	}
	var pr paymentRequired
	decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
	if pr.Error != reasonNonce {
		t.Errorf("PAYMENT-REQUIRED error: got %q, want %q", pr.Error, reasonNonce)
	}
	if after := e.fac.Stats(t); after != before {
		t.Errorf("facilitator calls for the replay: got %+v, want unchanged %+v", after, before)
	}
	if got := chain.BalanceOf(t, e.a, chain.PayTo.Address); got != payTo0 {
		t.Errorf("payTo balance: got %d, want %d", got, payTo0)
	}
	if got := e.up.Hits("/extract"); got != 1 {
		t.Errorf("upstream hits: got %d, want 1", got)
	}
	// The ledger survived too: the settlement is still there.
	if outs := e.gw.outcomes(t, "wallet:"+chain.Payer.Address.Hex()); outs["x402_settlement"] != 1 {
		t.Errorf("ledger after restart: got %v, want 1 settlement", outs)
	}
}

// TestGateway_FacilitatorUnavailable: a facilitator that refuses toolgate
// itself (bad CDP credentials: 401 without a decision) must not turn into
// free calls. Nothing runs, the payer is told nothing was charged, and the
// signed payment stays usable.
func TestGateway_FacilitatorUnavailable(t *testing.T) {
	t.Parallel()
	var calls sync.Map
	fac := startFake401(t, &calls)
	up := startUpstream(t)
	g := startGateway(t, up.url, "--x402-facilitator", fac)
	for _, tc := range []struct {
		name, tool, path, op string
		price                money.Micros
	}{
		{name: "AfterUpstream", tool: "extract/structured", path: "/extract", op: "/verify", price: priceExtract},
		{name: "BeforeUpstream", tool: "email/send", path: "/email", op: "/settle", price: priceEmail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := g.validV2(t, chain.Payer, tc.tool, tc.price)
			for i := range 2 { // the same payment twice: it was released
				r := do(t, "POST", g.url+"/tools/"+tc.tool, []byte(extractInput), p.Headers())
				if r.Status != 503 {
					t.Fatalf("try %d: got %d, want 503: %s", i, r.Status, r.Body)
				}
				if !strings.Contains(errorField(r.Body), "nothing was charged") || r.Header.Get("Retry-After") == "" {
					t.Errorf("try %d: got body %s Retry-After %q, want 'nothing was charged' with Retry-After", i, r.Body, r.Header.Get("Retry-After"))
				}
			}
			if got := up.Hits(tc.path); got != 0 {
				t.Errorf("upstream hits: got %d, want 0", got)
			}
			if n, _ := calls.Load(tc.op); n == nil {
				t.Errorf("facilitator %s: never called", tc.op)
			}
		})
	}
}

// TestGateway_FacilitatorDown: with the facilitator unreachable, paid
// calls answer 503 without running anything, and API-key calls are not
// affected.
func TestGateway_FacilitatorDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	up := startUpstream(t)
	g := startGateway(t, up.url, "--x402-facilitator", dead)
	p := g.validV2(t, chain.Payer, "extract/structured", priceExtract)
	r := do(t, "POST", g.url+"/tools/extract/structured", []byte(extractInput), p.Headers())
	if r.Status != 503 || !strings.Contains(errorField(r.Body), "nothing was charged") {
		t.Fatalf("paid call, facilitator down: got %d %s, want 503", r.Status, r.Body)
	}
	if got := up.Hits("/extract"); got != 0 {
		t.Fatalf("upstream hits: got %d, want 0", got)
	}
	k := g.admin(t, "POST", "/credits/keys", map[string]any{})
	var key struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(k.Body, &key); err != nil || key.Secret == "" {
		t.Fatalf("create key: %d %s", k.Status, k.Body)
	}
	r = do(t, "POST", g.url+"/tools/extract/structured", []byte(extractInput), map[string]string{"X-API-Key": key.Secret})
	if r.Status != 200 || up.Hits("/extract") != 1 {
		t.Fatalf("API-key call, facilitator down: got %d %s, want 200 from the upstream", r.Status, r.Body)
	}
}

// startFake401 serves a facilitator that answers 401 to everything and
// counts the paths asked.
func startFake401(t *testing.T, calls *sync.Map) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Store(r.URL.Path, true)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		io.WriteString(w, `{"error":"unauthorized"}`)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
