package gateway_test

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestGateway_SeedScenario walks the product promise end to end over real
// HTTP: a key, an allowed call, the seed policy, each denial, the status.
func TestGateway_SeedScenario(t *testing.T) {
	h := newHarness(t)

	t.Run("ManagementNeedsAdmin", func(t *testing.T) {
		resp, b := h.do("POST", "/credits/keys", "")
		if resp.StatusCode != 401 {
			t.Fatalf("got %d %s, want 401", resp.StatusCode, b)
		}
		resp, _ = h.do("GET", "/credits/keys", "", "Authorization", "Bearer wrong")
		if resp.StatusCode != 401 {
			t.Fatalf("wrong token: got %d, want 401", resp.StatusCode)
		}
	})

	k := h.createKey(`{"name":"seed agent"}`)
	if !strings.HasPrefix(k.Secret, "it-") || len(k.Secret) < 3+26 {
		t.Fatalf("secret %q: want it- and at least 128 bits", k.Secret)
	}
	if k.KeyID == "" || strings.Contains(k.Key, k.Secret[8:]) {
		t.Fatalf("key_id %q, masked %q: want an id and a masked secret", k.KeyID, k.Key)
	}

	t.Run("Allowed", func(t *testing.T) {
		resp, b := h.call(k.Secret, "extract/structured", `{"text":"hello"}`,
			"X-Forwarded-For", "6.6.6.6", "Authorization", "Bearer it-not-forwarded", "PAYMENT-SIGNATURE", "abc")
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s, want 200", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"path":"/extract","query":"","echo":{"text":"hello"}}`)
		for name, want := range map[string]string{"X-Policy-Allowed": "true", "X-Tool": "extract/structured", "X-Cost-Usd": "0.010", "X-Upstream": "yes", "X-Hop": ""} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s: got %q, want %q", name, got, want)
			}
		}
		if resp.Header.Get("X-Request-Id") == "" {
			t.Error("X-Request-Id missing")
		}
		r, _ := h.up.lastRequest()
		for _, name := range []string{"X-Api-Key", "Authorization", "Payment-Signature"} {
			if v := r.Header.Get(name); v != "" {
				t.Errorf("upstream received %s: %q", name, v)
			}
		}
		if got := r.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("upstream X-Forwarded-For: got %q, want 127.0.0.1 (client value must not be trusted)", got)
		}
		if got := r.Header.Get("X-Request-Id"); got != resp.Header.Get("X-Request-Id") {
			t.Errorf("upstream X-Request-Id %q, want %q", got, resp.Header.Get("X-Request-Id"))
		}
	})

	t.Run("QueryPassesThrough", func(t *testing.T) {
		resp, b := h.call(k.Secret, "extract/structured?lang=en&x=1", `{}`)
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		if m := decode(t, b); m["query"] != "lang=en&x=1" {
			t.Fatalf("upstream query: got %v", m["query"])
		}
	})

	resp, b := h.admin("PUT", "/credits/keys/"+k.KeyID+"/policy", seedOverride)
	if resp.StatusCode != 200 {
		t.Fatalf("PUT policy: got %d %s", resp.StatusCode, b)
	}

	t.Run("DenyTools", func(t *testing.T) {
		before := h.up.hits.Load()
		resp, b := h.call(k.Secret, "code_execute", `{"code":"rm -rf /"}`)
		if resp.StatusCode != 403 {
			t.Fatalf("got %d %s, want 403", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"error":"Tool access denied by policy","tool":"code_execute","reason":"deny_tools"}`)
		if resp.Header.Get("X-Policy-Allowed") != "false" || resp.Header.Get("X-Tool") != "code_execute" {
			t.Errorf("headers: X-Policy-Allowed %q X-Tool %q", resp.Header.Get("X-Policy-Allowed"), resp.Header.Get("X-Tool"))
		}
		if h.up.hits.Load() != before {
			t.Fatal("denied call reached the upstream")
		}
	})

	t.Run("NotInAllowTools", func(t *testing.T) {
		resp, b := h.call(k.Secret, "search/web", `{}`)
		if resp.StatusCode != 403 {
			t.Fatalf("got %d %s, want 403", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"error":"Tool access denied by policy","tool":"search/web","reason":"not_in_allow_tools"}`)
	})

	t.Run("HeavyQuota", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			if resp, b := h.call(k.Secret, "image/generate", `{}`); resp.StatusCode != 200 {
				t.Fatalf("call %d: got %d %s", i+1, resp.StatusCode, b)
			}
		}
		before := h.up.hits.Load()
		resp, b := h.call(k.Secret, "image/generate", `{}`)
		if resp.StatusCode != 403 {
			t.Fatalf("6th call: got %d %s, want 403", resp.StatusCode, b)
		}
		m := decode(t, b)
		if m["error"] != "Policy rate class quota exceeded" || m["rate_class"] != "heavy" || m["limit"] != 5.0 || m["calls_this_minute"] != 5.0 {
			t.Fatalf("body: got %s", b)
		}
		reset, ok := m["reset_in_seconds"].(float64)
		if !ok || reset < 1 || reset > 60 {
			t.Fatalf("reset_in_seconds: got %v, want 1..60", m["reset_in_seconds"])
		}
		if ra := resp.Header.Get("Retry-After"); ra != strconv.Itoa(int(reset)) {
			t.Fatalf("Retry-After: got %q, want %d", ra, int(reset))
		}
		if len(m) != 5 {
			t.Fatalf("body has fields %v, want exactly error, rate_class, limit, calls_this_minute, reset_in_seconds", m)
		}
		if h.up.hits.Load() != before {
			t.Fatal("quota-hit call reached the upstream")
		}
	})

	t.Run("Status", func(t *testing.T) {
		resp, b := h.do("GET", "/authorization/status?api_key="+k.Secret, "")
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		m := decode(t, b)
		if m["key"] != k.Key {
			t.Errorf("key: got %v, want %v", m["key"], k.Key)
		}
		pol := m["policy"].(map[string]any)
		if len(pol["allow_tools"].([]any)) != 4 || len(pol["deny_tools"].([]any)) != 2 {
			t.Errorf("policy: got %v", pol)
		}
		heavy := m["quota_window"].(map[string]any)["heavy"].(map[string]any)
		if heavy["used"] != 5.0 || heavy["limit"] != 5.0 || heavy["reset_in_s"].(float64) <= 0 {
			t.Errorf("heavy window: got %v, want used 5, limit 5, reset_in_s > 0", heavy)
		}
		// 2 extract calls at 0.01 + 5 images at 0.04.
		if m["spend_today_usd"] != 0.22 || m["spend_limit_usd"] != 50.0 {
			t.Errorf("spend: got %v of %v, want 0.22 of 50", m["spend_today_usd"], m["spend_limit_usd"])
		}
		den := m["recent_denials"].([]any)
		if len(den) < 3 {
			t.Fatalf("recent_denials: got %v, want the 3 denials", den)
		}
		first := den[0].(map[string]any) // newest first
		if first["tool"] != "image/generate" || first["reason"] != "rate_class_quota" {
			t.Errorf("newest denial: got %v", first)
		}
		last := den[len(den)-1].(map[string]any)
		if last["tool"] != "code_execute" || last["reason"] != "deny_tools" {
			t.Errorf("oldest denial: got %v", last)
		}
		if _, err := time.Parse(time.RFC3339, first["at"].(string)); err != nil {
			t.Errorf("at: %v", err)
		}
	})

	t.Run("StatusOfAnotherKeyNeedsAdmin", func(t *testing.T) {
		other := h.createKey(`{}`)
		resp, _ := h.do("GET", "/authorization/status?key_id="+other.KeyID, "", "X-API-Key", k.Secret)
		if resp.StatusCode != 401 {
			t.Fatalf("got %d, want 401", resp.StatusCode)
		}
		resp, _ = h.do("GET", "/authorization/status?key_id="+other.KeyID, "", "X-API-Key", other.Secret)
		if resp.StatusCode != 200 {
			t.Fatalf("own key_id: got %d, want 200", resp.StatusCode)
		}
		resp, _ = h.admin("GET", "/authorization/status?key_id="+other.KeyID, "")
		if resp.StatusCode != 200 {
			t.Fatalf("admin: got %d, want 200", resp.StatusCode)
		}
	})

	t.Run("Revoke", func(t *testing.T) {
		rk := h.createKey(`{}`)
		if resp, _ := h.call(rk.Secret, "extract/structured", `{}`); resp.StatusCode != 200 {
			t.Fatalf("before revoke: got %d", resp.StatusCode)
		}
		if resp, b := h.admin("DELETE", "/credits/keys/"+rk.KeyID, ""); resp.StatusCode != 200 || decode(t, b)["status"] != "revoked" {
			t.Fatalf("revoke: got %d %s", resp.StatusCode, b)
		}
		resp, b := h.call(rk.Secret, "extract/structured", `{}`)
		if resp.StatusCode != 401 {
			t.Fatalf("after revoke: got %d %s, want 401", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"error":"Invalid API key"}`)
		resp, _ = h.do("POST", "/tools/extract/structured", `{}`, "Authorization", "Bearer "+rk.Secret)
		if resp.StatusCode != 401 {
			t.Fatalf("Bearer after revoke: got %d, want 401", resp.StatusCode)
		}
	})

	t.Run("UnknownTool", func(t *testing.T) {
		resp, b := h.call(k.Secret, "nope", `{}`)
		if resp.StatusCode != 404 {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"error":"Unknown tool","path":"/tools/nope"}`)
	})
}

func TestGateway_DailySpendCap(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"policy":{"daily_spend_cap_usd":"0.05"}}`)
	for i := 0; i < 5; i++ {
		if resp, b := h.call(k.Secret, "extract/structured", `{}`); resp.StatusCode != 200 {
			t.Fatalf("call %d: got %d %s", i+1, resp.StatusCode, b)
		}
	}
	before := h.up.hits.Load()
	resp, b := h.call(k.Secret, "extract/structured", `{}`)
	if resp.StatusCode != 429 {
		t.Fatalf("got %d %s, want 429", resp.StatusCode, b)
	}
	if h.up.hits.Load() != before {
		t.Fatal("capped call reached the upstream")
	}
	m := decode(t, b)
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	if m["error"] != "Daily spend cap exceeded" || m["spend_today_usd"] != 0.05 || m["spend_limit_usd"] != 0.05 || m["cost_usd"] != 0.01 {
		t.Fatalf("body: got %s", b)
	}
	if m["reset_at"] != midnight.Format(time.RFC3339) {
		t.Fatalf("reset_at: got %v, want %s", m["reset_at"], midnight.Format(time.RFC3339))
	}
	secs := m["reset_in_seconds"].(float64)
	if want := time.Until(midnight).Seconds(); secs < want-5 || secs > want+5 {
		t.Fatalf("reset_in_seconds: got %v, want about %v", secs, want)
	}
	if resp.Header.Get("Retry-After") != strconv.Itoa(int(secs)) {
		t.Fatalf("Retry-After: got %q, want %d", resp.Header.Get("Retry-After"), int(secs))
	}
	// A free tool still works; a denied call costs nothing.
	if resp, b := h.call(k.Secret, "time/now", ``); resp.StatusCode != 200 || resp.Header.Get("X-Cost-Usd") != "0.000" {
		t.Fatalf("free tool: got %d %s cost %q", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
	}
}

func TestGateway_SpendResetTimeZone(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"policy":{"daily_spend_cap_usd":0.01,"spend_reset_tz":"Asia/Tokyo"}}`)
	h.call(k.Secret, "extract/structured", `{}`)
	resp, b := h.call(k.Secret, "extract/structured", `{}`)
	if resp.StatusCode != 429 {
		t.Fatalf("got %d %s", resp.StatusCode, b)
	}
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	now := time.Now().In(tokyo)
	want := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, tokyo).UTC().Format(time.RFC3339)
	if got := decode(t, b)["reset_at"]; got != want {
		t.Fatalf("reset_at: got %v, want %s (next Tokyo midnight)", got, want)
	}
}
