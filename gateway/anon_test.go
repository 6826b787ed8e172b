package gateway_test

import (
	"encoding/json"
	"testing"

	"github.com/toolgate/toolgate/ledger"
)

// TestAnonymous_FloodBounded: a flood of unidentified failures from one
// address costs a bounded number of records (a burst, then one aggregate
// per outcome and reason carrying the count), while an identified caller's
// calls stay one record each; nothing is lost from the counts.
func TestAnonymous_FloodBounded(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{}`)
	const n = 300
	for i := 0; i < n; i++ {
		if resp, _ := h.do("POST", "/no/such/tool", `{}`); resp.StatusCode != 404 {
			t.Fatalf("404 flood: got %d", resp.StatusCode)
		}
		if resp, _ := h.call("it-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA", "time/now", `{}`); resp.StatusCode != 401 {
			t.Fatalf("401 flood: got %d", resp.StatusCode)
		}
	}
	for i := 0; i < 50; i++ {
		if resp, b := h.call(k.Secret, "time/now", `{}`); resp.StatusCode != 200 {
			t.Fatalf("identified call: got %d %s", resp.StatusCode, b)
		}
	}
	h.gw.Close() // ends the interval: its aggregates are appended

	var single, aggregates int
	counts := map[string]int64{}
	err := h.led.Query(ledger.Query{Type: "call"}, func(r *ledger.Record) error {
		if r.Principal != "" {
			return nil
		}
		if len(r.State) > 0 {
			var s struct {
				Aggregate bool   `json:"aggregate"`
				Source    string `json:"source"`
				Count     int64  `json:"count"`
			}
			if err := json.Unmarshal(r.State, &s); err != nil || !s.Aggregate || s.Source != "127.0.0.1" {
				t.Fatalf("aggregate record %+v: state %s", r, r.State)
			}
			aggregates++
			counts[r.Outcome] += s.Count
			return nil
		}
		single++
		counts[r.Outcome]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if single > 20 || aggregates != 2 {
		t.Fatalf("anonymous records: %d single and %d aggregates, want at most 20 and 2", single, aggregates)
	}
	if counts["unknown_tool"] != n || counts["unauthenticated"] != n {
		t.Fatalf("counted %v, want %d of each outcome", counts, n)
	}
	if got := len(h.records("key:" + k.KeyID)); got != 50 {
		t.Fatalf("identified caller's records: %d, want 50 (one per call)", got)
	}
	if resp, b := h.admin("GET", "/audit/verify", ""); resp.StatusCode != 200 || decode(t, b)["ok"] != true {
		t.Fatalf("verify: %d %s", resp.StatusCode, b)
	}
}
