package gateway_test

import (
	"strings"
	"testing"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policy"
)

// partnerPolicies is seedPolicies with a named "partner" tier: a deny list
// and a light quota of 2 calls a minute.
const partnerPolicies = `{
  "version": 1,
  "fail_mode": "open",
  "defaults": { "rate_class_quota": { "light": 120, "medium": 30, "heavy": 10 } },
  "tiers": {
    "api_key":        { "daily_spend_cap_usd": 50 },
    "wallet":         { "daily_spend_cap_usd": 20 },
    "unknown_wallet": { "deny_tools": ["code_execute"], "daily_spend_cap_usd": 2 },
    "partner":        { "deny_tools": ["image/*"], "rate_class_quota": { "light": 2, "medium": 30, "heavy": 10 } }
  },
  "enforced": { "deny_tools": [] }
}`

// withPolicies makes newHarnessWith serve the policies.json text doc.
func withPolicies(t testing.TB, doc string) func(*gateway.Options) {
	t.Helper()
	d, err := policy.DecodeDocument([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return func(o *gateway.Options) { o.Policies = d }
}

// TestTiers_OverrideSelectsTier: an override {"tier":"partner"} on a key
// puts the partner tier's deny list and quota on that key, over HTTP.
func TestTiers_OverrideSelectsTier(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), withPolicies(t, partnerPolicies))
	partner := h.createKey(`{"name":"partner"}`)
	plain := h.createKey(`{"name":"plain"}`)

	resp, b := h.admin("PUT", "/credits/keys/"+partner.KeyID+"/policy", `{"tier":"partner"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("PUT policy: got %d %s, want 200", resp.StatusCode, b)
	}
	if m := decode(t, b); m["override"].(map[string]any)["tier"] != "partner" {
		t.Errorf("PUT answer override: got %v, want tier partner", m["override"])
	}

	t.Run("DenyTools", func(t *testing.T) {
		before := up.hits.Load()
		resp, b := h.call(partner.Secret, "image/generate", `{}`)
		if resp.StatusCode != 403 {
			t.Fatalf("got %d %s, want 403", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"error":"Tool access denied by policy","tool":"image/generate","reason":"deny_tools"}`)
		if up.hits.Load() != before {
			t.Fatal("denied call reached the upstream")
		}
		if resp, b := h.call(plain.Secret, "image/generate", `{}`); resp.StatusCode != 200 {
			t.Fatalf("key on api_key tier: got %d %s, want 200", resp.StatusCode, b)
		}
	})

	t.Run("Quota", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			if resp, b := h.call(partner.Secret, "search/web", `{}`); resp.StatusCode != 200 {
				t.Fatalf("call %d: got %d %s, want 200", i+1, resp.StatusCode, b)
			}
		}
		resp, b := h.call(partner.Secret, "search/web", `{}`)
		if resp.StatusCode != 403 {
			t.Fatalf("3rd call: got %d %s, want 403", resp.StatusCode, b)
		}
		m := decode(t, b)
		if m["error"] != "Policy rate class quota exceeded" || m["rate_class"] != "light" || m["limit"] != 2.0 {
			t.Fatalf("body: got %s, want the light quota of 2", b)
		}
		if resp, b := h.call(plain.Secret, "search/web", `{}`); resp.StatusCode != 200 {
			t.Fatalf("key on api_key tier: got %d %s, want 200", resp.StatusCode, b)
		}
	})

	t.Run("Status", func(t *testing.T) {
		resp, b := h.do("GET", "/authorization/status?api_key="+partner.Secret, "")
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		m := decode(t, b)
		if m["tier"] != "partner" {
			t.Errorf("tier: got %v, want partner", m["tier"])
		}
		if m["spend_limit_usd"] != nil {
			t.Errorf("spend_limit_usd: got %v, want null (partner has no cap, it does not inherit api_key's)", m["spend_limit_usd"])
		}
		light := m["quota_window"].(map[string]any)["light"].(map[string]any)
		if light["used"] != 2.0 || light["limit"] != 2.0 {
			t.Errorf("light window: got %v, want used 2, limit 2", light)
		}
		_, b = h.do("GET", "/authorization/status?api_key="+plain.Secret, "")
		if m := decode(t, b); m["tier"] != "api_key" {
			t.Errorf("plain key tier: got %v, want api_key", m["tier"])
		}
	})

	t.Run("UnknownTier", func(t *testing.T) {
		resp, b := h.admin("PUT", "/credits/keys/"+plain.KeyID+"/policy", `{"tier":"partnr"}`)
		if resp.StatusCode != 400 {
			t.Fatalf("got %d %s, want 400", resp.StatusCode, b)
		}
		probs, _ := decode(t, b)["problems"].([]any)
		if len(probs) != 1 || probs[0].(map[string]any)["path"] != "$.tier" ||
			!strings.Contains(probs[0].(map[string]any)["message"].(string), `unknown tier "partnr"`) {
			t.Fatalf("problems: got %v, want one at $.tier", probs)
		}
		if resp, b := h.call(plain.Secret, "image/generate", `{}`); resp.StatusCode != 200 {
			t.Fatalf("after the refused PUT: got %d %s, want 200 (no override stored)", resp.StatusCode, b)
		}
	})

	t.Run("ReloadWithoutTierRefused", func(t *testing.T) {
		cat, err := catalog.Decode([]byte(testCatalog(up.srv.URL)))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := policy.DecodeDocument([]byte(seedPolicies)) // no partner tier
		if err != nil {
			t.Fatal(err)
		}
		err = h.gw.Reload(cat, doc)
		if err == nil {
			t.Fatal("Reload without the partner tier: got nil, want an error")
		}
		for _, want := range []string{"key:" + partner.KeyID, "$.tier", `unknown tier "partner"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Reload error %q does not contain %q", err, want)
			}
		}
		// The previous configuration keeps serving.
		if resp, b := h.call(partner.Secret, "image/generate", `{}`); resp.StatusCode != 403 {
			t.Fatalf("after the refused reload: got %d %s, want 403", resp.StatusCode, b)
		}
	})
}
