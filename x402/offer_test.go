package x402

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"
)

func decodeB64JSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	if !regexp.MustCompile(`^[A-Za-z0-9+/]*={0,2}$`).Match(b) {
		t.Fatalf("header %q fails the TS client's base64 regex", b)
	}
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	return m
}

// legacyCheck applies the legacy x402-fetch zod rules (x402-notes.md §1.4)
// to one v1 accepts entry and returns every violation.
func legacyCheck(e map[string]any) []string {
	var probs []string
	str := func(k string) (string, bool) { s, ok := e[k].(string); return s, ok }
	if s, _ := str("scheme"); s != "exact" {
		probs = append(probs, "scheme")
	}
	if s, _ := str("network"); !legacyZodNetworks[s] {
		probs = append(probs, "network")
	}
	if s, ok := str("resource"); !ok {
		probs = append(probs, "resource")
	} else if u, err := url.Parse(s); err != nil || u.Scheme == "" || u.Host == "" {
		probs = append(probs, "resource url")
	}
	for _, k := range []string{"description", "mimeType"} {
		if _, ok := str(k); !ok {
			probs = append(probs, k)
		}
	}
	if v, ok := e["outputSchema"]; ok {
		if _, isObj := v.(map[string]any); !isObj {
			probs = append(probs, "outputSchema")
		}
	}
	for _, k := range []string{"payTo", "asset"} {
		if s, _ := str(k); !regexp.MustCompile(`^0x[0-9a-fA-F]{40}$`).MatchString(s) {
			probs = append(probs, k)
		}
	}
	if s, _ := str("maxAmountRequired"); !regexp.MustCompile(`^[0-9]+$`).MatchString(s) {
		probs = append(probs, "maxAmountRequired")
	}
	if n, ok := e["maxTimeoutSeconds"].(float64); !ok || n != float64(int64(n)) {
		probs = append(probs, "maxTimeoutSeconds")
	}
	if x, ok := e["extra"].(map[string]any); !ok || x["name"] == nil || x["version"] == nil {
		probs = append(probs, "extra")
	}
	return probs
}

func TestNewOffer(t *testing.T) {
	o := vecOffer(t)
	t.Run("PaymentRequiredHeader", func(t *testing.T) {
		got := decodeB64JSON(t, o.PaymentRequiredHeader())
		want := decodeB64JSON(t, readVector(t, "vector_payment_required.b64"))
		for _, k := range []string{"x402Version", "error", "resource", "accepts"} {
			if !reflect.DeepEqual(got[k], want[k]) {
				t.Errorf("%s: got %v, want %v", k, got[k], want[k])
			}
		}
		bz, ok := got["extensions"].(map[string]any)["bazaar"].(map[string]any)
		if !ok {
			t.Fatalf("extensions.bazaar missing in %v", got)
		}
		in := bz["info"].(map[string]any)["input"].(map[string]any)
		if in["type"] != "http" || in["method"] != "POST" || in["bodyType"] != "json" {
			t.Errorf("bazaar input: got %v, want type http, method POST, bodyType json", in)
		}
		if _, ok := bz["schema"].(map[string]any); !ok {
			t.Errorf("bazaar schema missing")
		}
	})
	t.Run("Body402", func(t *testing.T) {
		var b struct {
			X402Version int              `json:"x402Version"`
			Error       string           `json:"error"`
			Accepts     []map[string]any `json:"accepts"`
		}
		if err := json.Unmarshal(o.Body402(), &b); err != nil {
			t.Fatal(err)
		}
		if b.X402Version != 1 || b.Error != "X-PAYMENT header is required" || len(b.Accepts) != 1 {
			t.Fatalf("got %+v, want v1, error, one accept", b)
		}
		if p := legacyCheck(b.Accepts[0]); len(p) > 0 {
			t.Errorf("legacy schema violations %v in %v", p, b.Accepts[0])
		}
		e := b.Accepts[0]
		if e["network"] != "base-sepolia" || e["maxAmountRequired"] != "10000" ||
			e["resource"] != "https://gw.example.com/v1/tools/extract/structured" {
			t.Errorf("got %v", e)
		}
	})
	t.Run("LegacyCheckCatchesViolations", func(t *testing.T) {
		bad := map[string]any{"scheme": "exact", "network": "eip155:84532", "resource": "/x", "outputSchema": nil,
			"payTo": "0x1", "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "maxAmountRequired": "1.5", "maxTimeoutSeconds": 1.5}
		got := legacyCheck(bad)
		want := []string{"network", "resource url", "description", "mimeType", "outputSchema", "payTo", "maxAmountRequired", "maxTimeoutSeconds", "extra"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("DescriptionTruncated", func(t *testing.T) {
		long := strings.Repeat("é", 600)
		o2, err := NewOffer(vecConfig(), Resource{ToolID: "t", Path: "/t", Price: 1, Description: long})
		if err != nil {
			t.Fatal(err)
		}
		pr := decodeB64JSON(t, o2.PaymentRequiredHeader())
		d := pr["resource"].(map[string]any)["description"].(string)
		if n := utf8.RuneCountInString(d); n != MaxDescription || !utf8.ValidString(d) {
			t.Errorf("got %d characters (valid UTF-8 %v), want %d", n, utf8.ValidString(d), MaxDescription)
		}
		var b struct{ Accepts []map[string]any }
		_ = json.Unmarshal(o2.Body402(), &b)
		if n := utf8.RuneCountInString(b.Accepts[0]["description"].(string)); n != MaxDescription {
			t.Errorf("v1: got %d characters, want %d", n, MaxDescription)
		}
	})
	t.Run("WithError", func(t *testing.T) {
		h, body := o.WithError(ReasonNonceUsed)
		if got := decodeB64JSON(t, h)["error"]; got != ReasonNonceUsed {
			t.Errorf("v2: got %v, want %s", got, ReasonNonceUsed)
		}
		var b map[string]any
		_ = json.Unmarshal(body, &b)
		if b["error"] != ReasonNonceUsed {
			t.Errorf("v1: got %v, want %s", b["error"], ReasonNonceUsed)
		}
		h2, _ := o.WithError(`quote " and \ and <html>`)
		if got := decodeB64JSON(t, h2)["error"]; got != `quote " and \ and <html>` {
			t.Errorf("escaping: got %v", got)
		}
		if got := decodeB64JSON(t, o.PaymentRequiredHeader())["error"]; got != "Payment required" {
			t.Errorf("shared header changed: got %v", got)
		}
	})
	t.Run("Discovery", func(t *testing.T) {
		o3, err := NewOffer(vecConfig(), Resource{ToolID: "s", Path: "/s", Price: 1, Method: "get",
			Discovery: json.RawMessage(`{"input":{"q":"x"},"input_schema":{"type":"object","properties":{"q":{"type":"string"}}},"output":{"hits":[]}}`)})
		if err != nil {
			t.Fatal(err)
		}
		bz := decodeB64JSON(t, o3.PaymentRequiredHeader())["extensions"].(map[string]any)["bazaar"].(map[string]any)
		info := bz["info"].(map[string]any)
		in := info["input"].(map[string]any)
		if in["method"] != "GET" || !reflect.DeepEqual(in["queryParams"], map[string]any{"q": "x"}) {
			t.Errorf("input: got %v", in)
		}
		if out := info["output"].(map[string]any); out["type"] != "json" {
			t.Errorf("output: got %v", out)
		}
		qs := bz["schema"].(map[string]any)["properties"].(map[string]any)["input"].(map[string]any)["properties"].(map[string]any)["queryParams"]
		if qs.(map[string]any)["properties"] == nil {
			t.Errorf("queryParams schema: got %v", qs)
		}
	})
	t.Run("ErrConfig", func(t *testing.T) {
		tests := []struct {
			name string
			cfg  Config
			res  Resource
			want []string
		}{
			{"Everything", Config{Network: "solana:x"}, Resource{Path: "x", Price: 0},
				[]string{"network", "pay_to", "public_url", "asset_name"}},
			{"UnknownChainNoAsset", Config{Network: "eip155:31337", PayTo: vecPayTo, PublicURL: "http://127.0.0.1:8402"},
				Resource{Path: "/x", Price: 1}, []string{"asset: required", "asset_name", "asset_version"}},
			{"BadURL", Config{PayTo: vecPayTo, PublicURL: "gw.example.com"}, Resource{Path: "/x", Price: 1}, []string{"public_url"}},
			{"BadDiscovery", vecConfig(), Resource{Path: "/x", Price: 1, Discovery: json.RawMessage(`{"inptu":{}}`)}, []string{"discovery"}},
			{"NoPrice", vecConfig(), Resource{Path: "/x"}, []string{"price"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := NewOffer(tt.cfg, tt.res)
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("got %v, want ErrConfig", err)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("got %q, want it to mention %q", err, w)
					}
				}
			})
		}
	})
	t.Run("Defaults", func(t *testing.T) {
		c := Config{Network: "base", PayTo: vecPayTo, PublicURL: "https://gw.example.com/"}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if c.Network != "eip155:8453" || c.Asset != common.HexToAddress("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913") ||
			c.AssetName != "USD Coin" || c.AssetVersion != "2" || c.PublicURL != "https://gw.example.com" {
			t.Errorf("got %+v", c)
		}
		anvil := Config{Network: "eip155:31337", Asset: common.HexToAddress("0x1"), AssetName: "T", AssetVersion: "1", PayTo: vecPayTo, PublicURL: "http://x"}
		oa, err := NewOffer(anvil, Resource{Path: "/x", Price: 1})
		if err != nil {
			t.Fatal(err)
		}
		if oa.Requirements(1) != nil || !strings.Contains(string(oa.Body402()), `"accepts":[]`) {
			t.Errorf("no v1 name: got requirements %s body %s, want nil and empty accepts", oa.Requirements(1), oa.Body402())
		}
		if oa.DomainSeparator() != DomainSeparator("T", "1", 31337, common.HexToAddress("0x1")) {
			t.Errorf("domain separator mismatch")
		}
	})
}

func TestV1Network(t *testing.T) {
	tests := []struct {
		name     string
		id       uint64
		want     string
		legacyOK bool
	}{
		{"base", 8453, "base", true}, {"sepolia", 84532, "base-sepolia", true},
		{"ethereum", 1, "ethereum", false}, {"anvil", 31337, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := V1Network(tt.id)
			if got != tt.want || ok != tt.legacyOK {
				t.Errorf("got %q %v, want %q %v", got, ok, tt.want, tt.legacyOK)
			}
		})
	}
	if id, ok := ParseNetwork("eip155:0084532"); ok {
		t.Errorf("leading zero: got %d, want rejected", id)
	}
	_ = big.NewInt
}
