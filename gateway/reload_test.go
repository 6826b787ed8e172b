package gateway_test

import (
	"strings"
	"testing"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/policy"
)

// readyzConfig returns /readyz's config_hash and reloads.
func (h *harness) readyzConfig() (hash string, reloads float64) {
	h.t.Helper()
	resp, b := h.do("GET", "/readyz", "")
	if resp.StatusCode != 200 {
		h.t.Fatalf("readyz: got %d %s", resp.StatusCode, b)
	}
	m := decode(h.t, b)
	hash, _ = m["config_hash"].(string)
	reloads, _ = m["reloads"].(float64)
	if len(hash) != 64 {
		h.t.Fatalf("readyz config_hash %q, want 64 hex digits (%s)", hash, b)
	}
	return hash, reloads
}

// metric returns the line of the admin /metrics that starts with name.
func (h *harness) metric(name string) string {
	h.t.Helper()
	_, b := h.admin("GET", "/metrics", "")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	h.t.Fatalf("no %s in /metrics", name)
	return ""
}

// TestGateway_Reload: an applied reload serves the new configuration and
// shows in /readyz (a new config_hash, reloads + 1) and the metric; a
// refused one changes neither and the old configuration keeps serving.
func TestGateway_Reload(t *testing.T) {
	h := newHarness(t)
	key := h.createKey(`{}`).Secret
	hash0, n := h.readyzConfig()
	if n != 0 {
		t.Fatalf("reloads at start: %v, want 0", n)
	}
	if resp, b := h.call(key, "extract/structured", `{}`); resp.StatusCode != 200 {
		t.Fatalf("before: got %d %s", resp.StatusCode, b)
	}
	cat, err := catalog.Decode([]byte(testCatalog(h.up.srv.URL)))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Unchanged", func(t *testing.T) {
		doc, _ := policy.DecodeDocument([]byte(seedPolicies))
		if err := h.gw.Reload(cat, doc); err != nil {
			t.Fatal(err)
		}
		if hash, n := h.readyzConfig(); hash != hash0 || n != 1 {
			t.Fatalf("readyz after reloading the same configuration: hash %s reloads %v, want %s and 1", hash, n, hash0)
		}
	})
	var hash1 string
	t.Run("Applied", func(t *testing.T) {
		doc, err := policy.DecodeDocument([]byte(strings.Replace(seedPolicies,
			`"enforced": { "deny_tools": [] }`, `"enforced": { "deny_tools": ["extract/structured"] }`, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.gw.Reload(cat, doc); err != nil {
			t.Fatal(err)
		}
		var n float64
		if hash1, n = h.readyzConfig(); hash1 == hash0 || n != 2 {
			t.Fatalf("readyz: hash %s reloads %v, want a new hash and 2", hash1, n)
		}
		if got := h.metric("toolgate_config_reloads_total"); got != "toolgate_config_reloads_total 2" {
			t.Fatalf("metric %q, want 2", got)
		}
		if resp, b := h.call(key, "extract/structured", `{}`); resp.StatusCode != 403 || !strings.Contains(string(b), "enforced_deny") {
			t.Fatalf("after the reload: got %d %s, want 403 enforced_deny", resp.StatusCode, b)
		}
	})
	t.Run("Refused", func(t *testing.T) {
		bad := &policy.Document{Version: 1, Defaults: policy.Policy{DenyTools: []string{"a*b"}}}
		if err := h.gw.Reload(cat, bad); err == nil {
			t.Fatal("invalid policies reloaded")
		}
		if hash, n := h.readyzConfig(); hash != hash1 || n != 2 {
			t.Fatalf("readyz after a refused reload: hash %s reloads %v, want %s and 2", hash, n, hash1)
		}
		if got := h.metric("toolgate_config_reloads_total"); got != "toolgate_config_reloads_total 2" {
			t.Fatalf("metric %q, want 2", got)
		}
		if resp, _ := h.call(key, "extract/structured", `{}`); resp.StatusCode != 403 {
			t.Fatalf("after a refused reload: got %d, want the applied configuration's 403", resp.StatusCode)
		}
	})
	t.Run("OverrideKeepsHash", func(t *testing.T) {
		// A per-principal override is not a configuration reload.
		if resp, b := h.admin("PUT", "/wallets/0x0000000000000000000000000000000000000001/policy", `{"daily_spend_cap_usd":1}`); resp.StatusCode != 200 {
			t.Fatalf("put override: %d %s", resp.StatusCode, b)
		}
		if hash, n := h.readyzConfig(); hash != hash1 || n != 2 {
			t.Fatalf("readyz after an override write: hash %s reloads %v, want %s and 2", hash, n, hash1)
		}
	})
}
