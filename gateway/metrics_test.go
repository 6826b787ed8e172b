package gateway_test

import (
	"strings"
	"testing"
)

func TestGateway_Metrics(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"policy":{"deny_tools":["code_execute"]}}`)
	for i := 0; i < 3; i++ {
		h.call(k.Secret, "extract/structured", `{}`)
	}
	h.call(k.Secret, "code_execute", `{}`)
	if resp, _ := h.do("GET", "/metrics", ""); resp.StatusCode != 401 {
		t.Fatalf("/metrics without the admin token: got %d, want 401", resp.StatusCode)
	}
	resp, b := h.admin("GET", "/metrics", "")
	if resp.StatusCode != 200 {
		t.Fatalf("got %d", resp.StatusCode)
	}
	body := string(b)
	for _, want := range []string{
		`toolgate_calls_total{outcome="allowed",reason="",tool="extract/structured"} 3`,
		`toolgate_calls_total{outcome="denied",reason="deny_tools",tool="code_execute"} 1`,
		`toolgate_billed_micro_usd_total{tool="extract/structured"} 30000`,
		`toolgate_decision_seconds_count 4`,
		`toolgate_upstream_seconds_count{tool="extract/structured"} 3`,
		`toolgate_ledger_commit_wait_seconds_count`,
		`toolgate_store_lsm_bytes`,
		`toolgate_ledger_head_seq`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, k.Secret) {
		t.Fatal("metrics contain an API key")
	}
}

func TestGateway_Readyz(t *testing.T) {
	h := newHarness(t)
	resp, b := h.do("GET", "/readyz", "")
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s", resp.StatusCode, b)
	}
	m := decode(t, b)
	checks := m["checks"].(map[string]any)
	if m["ready"] != true || checks["store"] != "ok" || checks["ledger"] != "ok" {
		t.Fatalf("got %s", b)
	}
	h.led.Close() // the ledger stops committing: not ready, and calls are refused
	resp, b = h.do("GET", "/readyz", "")
	if resp.StatusCode != 503 || decode(t, b)["ready"] != false {
		t.Fatalf("after ledger close: got %d %s, want 503", resp.StatusCode, b)
	}
	k := "it-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA"
	resp, b = h.call(k, "extract/structured", `{}`)
	if resp.StatusCode != 503 {
		t.Fatalf("call with the ledger closed: got %d %s, want 503 (no answer without a record)", resp.StatusCode, b)
	}
}
