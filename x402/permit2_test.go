package x402

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/toolgate/toolgate/money"
)

// A known-answer vector for the upto scheme's Permit2 signature, computed
// with viem 2.57 (hashTypedData, signTypedData) and @x402/evm 2.27's
// uptoPermit2WitnessTypes and PERMIT2_ADDRESS, with the throwaway key
// keccak256("x402-test-key-do-not-fund") of x402-notes.md §1.9.
const (
	uptoVecPayer     = "0x680a3d384acf515f0fC5FaE2eE41A95b6905deF7"
	uptoVecPayTo     = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
	uptoVecFac       = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
	uptoVecNonce     = "110046381620463812936158591034302930519396612826233542512917218960547349975840"
	uptoVecDeadline  = 1740672154
	uptoVecDomain    = "0x010f27a92fb9a32622f44f001dc4d15706a85b33499cfc2ce9033113ab26592c"
	uptoVecDigest    = "0x3b133939db6ddfa4490834a31b35b6f0b65b90c436d80bcc619bc033dea1e062"
	uptoVecSignature = "0x7f25a04d3f4bcf94a7dd3856a573036df32c4cadf540cb386c8594066cf5bc6c2e39f3104259582df9854f3512b791448a5a80d229c488d5fbcec73e2f4123b21c"
)

func uptoVecOffer(t testing.TB) *Offer {
	t.Helper()
	cfg := Config{Network: "eip155:84532", PayTo: common.HexToAddress(uptoVecPayTo), PublicURL: "https://gw.example",
		UptoFacilitator: common.HexToAddress(uptoVecFac)}
	o, err := NewOffer(cfg, Resource{ToolID: "llm", Path: "/tools/llm", Price: 100_000, Metered: true})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// uptoVecHeader is the vector as a v2 PAYMENT-SIGNATURE built the way the
// reference client builds it (accepted = the offer's upto requirements).
func uptoVecHeader(t testing.TB, o *Offer, edit func(auth map[string]any)) []byte {
	t.Helper()
	auth := map[string]any{
		"from":      uptoVecPayer,
		"permitted": map[string]any{"token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "amount": "100000"},
		"spender":   UptoProxyAddress.Hex(), "nonce": uptoVecNonce, "deadline": "1740672154",
		"witness": map[string]any{"to": uptoVecPayTo, "facilitator": uptoVecFac, "validAfter": "0"},
	}
	if edit != nil {
		edit(auth)
	}
	b, _ := json.Marshal(map[string]any{"x402Version": 2, "accepted": json.RawMessage(o.RequirementsFor(&Payment{Scheme: SchemeUpto})),
		"payload": map[string]any{"signature": uptoVecSignature, "permit2Authorization": auth}})
	return []byte(base64.StdEncoding.EncodeToString(b))
}

func TestPermit2Authorization_Digest(t *testing.T) {
	if got := Permit2DomainSeparator(84532).Hex(); got != uptoVecDomain {
		t.Errorf("domain separator: got %s, want %s", got, uptoVecDomain)
	}
	o := uptoVecOffer(t)
	p, err := Decode(uptoVecHeader(t, o, nil), 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Permit2.Digest(Permit2DomainSeparator(84532)).Hex(); got != uptoVecDigest {
		t.Errorf("digest: got %s, want %s", got, uptoVecDigest)
	}
	signer, ok := recoverEOA(p.Permit2.Digest(Permit2DomainSeparator(84532)), p.Signature)
	if !ok || signer != common.HexToAddress(uptoVecPayer) {
		t.Errorf("recovered %s (%t), want %s", signer.Hex(), ok, uptoVecPayer)
	}
	t.Run("HexNonce", func(t *testing.T) {
		// The spec's examples write the nonce in hex: the same authorization.
		hp, err := Decode(uptoVecHeader(t, o, func(a map[string]any) {
			a["nonce"] = "0xf34c0b73acd9a1441f8352d42dc3e6395c685e06e69ed1475101373d8bd2d320"
		}), 2)
		if err != nil || hp.problem != "" {
			t.Fatalf("decode hex nonce: %v %q", err, hp.problem)
		}
		if got := hp.Permit2.Digest(Permit2DomainSeparator(84532)).Hex(); got != uptoVecDigest {
			t.Errorf("digest with the hex nonce: got %s, want %s", got, uptoVecDigest)
		}
	})
}

func TestOffer_Upto(t *testing.T) {
	o := uptoVecOffer(t)
	if !o.Upto() {
		t.Fatal("a metered offer with UptoFacilitator does not accept upto")
	}
	t.Run("Accepts", func(t *testing.T) {
		pr := decodeB64JSON(t, o.PaymentRequiredHeader())
		acc := pr["accepts"].([]any)
		if len(acc) != 2 {
			t.Fatalf("accepts: got %d entries, want upto then exact", len(acc))
		}
		up, ex := acc[0].(map[string]any), acc[1].(map[string]any)
		extra := up["extra"].(map[string]any)
		if up["scheme"] != "upto" || up["amount"] != "100000" || extra["facilitatorAddress"] != uptoVecFac ||
			extra["assetTransferMethod"] != "permit2" || extra["name"] != "USDC" || extra["version"] != "2" {
			t.Errorf("accepts[0]: got %v", up)
		}
		if ex["scheme"] != "exact" || ex["amount"] != "100000" {
			t.Errorf("accepts[1]: got %v", ex)
		}
		var v1 struct{ Accepts []map[string]any }
		_ = json.Unmarshal(o.Body402(), &v1)
		if len(v1.Accepts) != 1 || v1.Accepts[0]["scheme"] != "exact" {
			t.Errorf("v1 body: got %s, want one exact entry", o.Body402())
		}
	})
	t.Run("Settling", func(t *testing.T) {
		up := &Payment{Scheme: SchemeUpto, Version: 2}
		var r Requirements
		_ = json.Unmarshal(o.Settling(30_000).RequirementsFor(up), &r)
		if r.Scheme != "upto" || r.Amount != "30000" {
			t.Errorf("settle requirements: got %+v, want upto 30000", r)
		}
		_ = json.Unmarshal(o.RequirementsFor(up), &r)
		if r.Amount != "100000" {
			t.Errorf("the offer changed: amount %s, want 100000", r.Amount)
		}
		if got := string(o.Settling(1).RequirementsFor(&Payment{Scheme: SchemeExact, Version: 2})); got != string(o.Requirements(2)) {
			t.Errorf("exact requirements changed by Settling: %s", got)
		}
	})
	t.Run("NotMetered", func(t *testing.T) {
		cfg := o.Config()
		fixed, err := NewOffer(cfg, Resource{ToolID: "fixed", Path: "/tools/fixed", Price: money.Micros(10_000)})
		if err != nil {
			t.Fatal(err)
		}
		if fixed.Upto() || strings.Contains(string(fixed.prTail), `"upto"`) {
			t.Error("a fixed-price tool offers upto")
		}
	})
}

func TestOffer_VerifyUpto(t *testing.T) {
	o := uptoVecOffer(t)
	now := time.Unix(uptoVecDeadline-120, 0)
	verify := func(t *testing.T, edit func(map[string]any), at time.Time) Verified {
		t.Helper()
		p, err := Decode(uptoVecHeader(t, o, edit), 2)
		if err != nil {
			t.Fatal(err)
		}
		v, err := o.Verify(p, at, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Run("OK", func(t *testing.T) {
		v := verify(t, nil, now)
		if !v.OK() || v.Payer != uptoVecPayer || v.Amount != 100_000 || v.Key.Asset != Permit2Address ||
			v.ValidBefore.Unix() != uptoVecDeadline {
			t.Fatalf("got %+v, want valid for %s, 100000, keyed on Permit2", v, uptoVecPayer)
		}
	})
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		at   time.Time
		want string
	}{
		{"Expired", nil, time.Unix(uptoVecDeadline-30, 0), ReasonPermit2Deadline},
		{"NotYetValid", func(a map[string]any) { a["witness"].(map[string]any)["validAfter"] = "1740672100" }, now, ReasonPermit2NotYetValid},
		{"Tampered", func(a map[string]any) { a["deadline"] = "1740672155" }, now, ""}, // another message: not the payer's signature
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, tc.edit, tc.at)
			if tc.want == "" {
				if v.Status != StatusNeedsRemote || v.Reason != ReasonPermit2Signature {
					t.Fatalf("got %v %q, want needs_remote (the signature is not the payer's)", v.Status, v.Reason)
				}
				return
			}
			if v.Status != StatusInvalid || v.Reason != tc.want {
				t.Fatalf("got %v %q, want invalid %q", v.Status, v.Reason, tc.want)
			}
		})
	}
}

// TestFacilitator_Upto: an upto payment is verified against the upto
// requirements at the maximum and settled with the actual amount; the
// settle answer's amount is kept; /supported names the upto address.
func TestFacilitator_Upto(t *testing.T) {
	o := uptoVecOffer(t)
	p, err := Decode(uptoVecHeader(t, o, nil), 2)
	if err != nil {
		t.Fatal(err)
	}
	s, reqs, _ := facServer(t, 200, `{"isValid":true,"success":true,"transaction":"0xabc","network":"eip155:84532","amount":"30000"}`)
	f := &Facilitator{URL: s.URL, HTTP: s.Client()}
	if _, err := f.Verify(context.Background(), p, o); err != nil {
		t.Fatal(err)
	}
	sr, err := f.Settle(context.Background(), p, o.Settling(30_000))
	if err != nil || !sr.Success || sr.Amount != "30000" || sr.Response().Amount != "30000" {
		t.Fatalf("settle: got %+v %v, want success with amount 30000", sr, err)
	}
	for i, want := range []string{"100000", "30000"} {
		var r Requirements
		_ = json.Unmarshal((*reqs)[i].PaymentRequirements, &r)
		if r.Scheme != SchemeUpto || r.Amount != want {
			t.Errorf("request %d: got %s %s, want upto %s", i, r.Scheme, r.Amount, want)
		}
	}
	sup := Supported{Kinds: []SupportedKind{
		{X402Version: 2, Scheme: "exact", Network: "eip155:84532"},
		{X402Version: 2, Scheme: "upto", Network: "eip155:84532", Extra: json.RawMessage(`{"facilitatorAddress":"` + uptoVecFac + `"}`)},
	}}
	if a, ok := sup.UptoFacilitator("eip155:84532"); !ok || a != common.HexToAddress(uptoVecFac) {
		t.Errorf("UptoFacilitator: got %s %t, want %s", a.Hex(), ok, uptoVecFac)
	}
	if _, ok := sup.UptoFacilitator("eip155:8453"); ok {
		t.Error("UptoFacilitator found an address on a network the facilitator does not list")
	}
}
