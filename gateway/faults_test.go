package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestGateway_UpstreamFaults(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{}`)

	t.Run("Unreachable502", func(t *testing.T) {
		resp, b := h.call(k.Secret, "dead", `{}`)
		if resp.StatusCode != 502 {
			t.Fatalf("got %d %s, want 502", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"error":"Upstream unreachable"}`)
	})
	t.Run("Reset502", func(t *testing.T) {
		resp, b := h.call(k.Secret, "reset", `{}`)
		if resp.StatusCode != 502 || resp.Header.Get("X-Cost-Usd") != "0.000" {
			t.Fatalf("got %d %s cost %q, want 502 at cost 0.000", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
		}
	})
	t.Run("Timeout504", func(t *testing.T) {
		h.up.delay.Store(int64(time.Second))
		defer h.up.delay.Store(0)
		start := time.Now()
		resp, b := h.call(k.Secret, "slow", `{}`)
		if resp.StatusCode != 504 {
			t.Fatalf("got %d %s, want 504", resp.StatusCode, b)
		}
		if el := time.Since(start); el > 900*time.Millisecond {
			t.Fatalf("504 after %v, want near the tool's 150 ms timeout", el)
		}
	})
	t.Run("UpstreamErrorNotBilled", func(t *testing.T) {
		resp, b := h.call(k.Secret, "extract/structured?fail=1", `{}`)
		if resp.StatusCode != 500 || resp.Header.Get("X-Cost-Usd") != "0.000" {
			t.Fatalf("got %d %s cost %q, want the upstream's 500 at cost 0.000", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
		}
		_, sb := h.do("GET", "/authorization/status?api_key="+k.Secret, "")
		if m := decode(t, sb); m["spend_today_usd"] != 0.0 {
			t.Fatalf("spend after failures: got %v, want 0", m["spend_today_usd"])
		}
	})
}

// TestGateway_BadInput: bad input gets a clear 4xx, never a 500.
func TestGateway_BadInput(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{}`)
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		want                     int
		contains                 string
	}{
		{"MalformedJSON", "POST", "/credits/keys", `{"name":`, nil, 400, "JSON"},
		{"NotAnObject", "POST", "/credits/keys", `[1,2]`, nil, 400, "JSON object"},
		{"UnknownField", "POST", "/credits/keys", `{"nme":"x"}`, nil, 400, "unknown field"},
		{"BadExpiry", "POST", "/credits/keys", `{"expires_at":"tomorrow"}`, nil, 400, "expires_at"},
		{"PastExpiry", "POST", "/credits/keys", `{"expires_at":"2001-01-01T00:00:00Z"}`, nil, 400, "future"},
		{"BadCredits", "POST", "/credits/keys", `{"credits_usd":"1e3"}`, nil, 400, "credits_usd"},
		{"CreditsTooLarge", "POST", "/credits/keys", `{"credits_usd":"9000000000000"}`, nil, 400, "more than 1000000"},
		{"BadPolicyInCreate", "POST", "/credits/keys", `{"policy":{"rate_class_quota":{"huge":1}}}`, nil, 400, "policy.rate_class_quota"},
		{"PolicyUnknownField", "PUT", "/credits/keys/" + k.KeyID + "/policy", `{"allow":["x"]}`, nil, 400, "allow"},
		{"PolicyEveryProblem", "PUT", "/credits/keys/" + k.KeyID + "/policy", `{"deny_tools":["a*b"],"rate_class_quota":{"heavy":-1},"mode":"lax"}`, nil, 400, "mode"},
		{"PolicyNotJSON", "PUT", "/credits/keys/" + k.KeyID + "/policy", `nope`, nil, 400, ""},
		{"UnknownKey", "GET", "/credits/keys/k_NOPE", ``, nil, 404, "Unknown API key"},
		{"WrongMethodMgmt", "PATCH", "/credits/keys", ``, nil, 405, ""},
		{"WrongMethodTool", "GET", "/tools/extract/structured", ``, []string{"X-API-Key", k.Secret}, 405, "Method not allowed"},
		{"BadKeyFormat", "POST", "/tools/extract/structured", `{}`, []string{"X-API-Key", "not-a-key"}, 401, "Invalid API key"},
		{"KeyLikeButUnknown", "POST", "/tools/extract/structured", `{}`, []string{"X-API-Key", "it-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA"}, 401, "Invalid API key"},
		{"FreeToolNoKey", "POST", "/tools/time/now", `{}`, nil, 401, "API key required"},
		{"PricedToolNoKeyEmptyBody", "POST", "/tools/extract/structured", ``, nil, 402, ""},
		{"HugeAdminBody", "POST", "/credits/keys", `{"name":"` + strings.Repeat("x", 2<<20) + `"}`, nil, 413, ""},
		{"TopUpZero", "POST", "/credits/keys/" + k.KeyID + "/credits", `{"amount_usd":0}`, nil, 400, "greater than zero"},
		{"TopUpMissing", "POST", "/credits/keys/" + k.KeyID + "/credits", `{}`, nil, 400, "amount_usd"},
		{"TopUpTooLarge", "POST", "/credits/keys/" + k.KeyID + "/credits", `{"amount_usd":"1000000.000001"}`, nil, 400, "at most 1000000"},
		{"StatusNoSelector", "GET", "/authorization/status", ``, nil, 400, "required"},
		{"StatusBadKey", "GET", "/authorization/status?api_key=zzz", ``, nil, 400, "api_key"},
		{"WalletBadAddress", "PUT", "/wallets/0x123/policy", `{}`, nil, 400, "address"},
		{"AuditBadSince", "GET", "/audit?since=yesterday", ``, nil, 400, "since"},
		{"AuditUnknownParam", "GET", "/audit?foo=1", ``, nil, 400, "foo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := tt.hdr
			if hdr == nil {
				hdr = []string{"Authorization", "Bearer " + adminToken}
			}
			resp, b := h.do(tt.method, tt.path, tt.body, hdr...)
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d %.300s, want %d", resp.StatusCode, b, tt.want)
			}
			if tt.contains != "" && !strings.Contains(string(b), tt.contains) {
				t.Fatalf("body %.300s does not name %q", b, tt.contains)
			}
		})
	}
	t.Run("HugeBody", func(t *testing.T) {
		// Announce 9 MiB; the gateway refuses from the headers alone.
		conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /tools/extract/structured HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Length: %d\r\n\r\n", k.Secret, 9<<20)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 413 {
			t.Fatalf("got %d, want 413", resp.StatusCode)
		}
	})
	// Nothing recorded was lost: the chain still verifies.
	resp, b := h.admin("GET", "/audit/verify", "")
	if resp.StatusCode != 200 || decode(t, b)["ok"] != true {
		t.Fatalf("verify: %d %s", resp.StatusCode, b)
	}
}
