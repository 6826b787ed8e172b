package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"sync"
	"testing"

	"github.com/toolgate/toolgate/ledger"
)

// fire sends n concurrent calls and returns the status counts.
func fire(h *harness, n int, key, tool string) map[int]int {
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, _ := h.call(key, tool, `{}`)
			mu.Lock()
			counts[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return counts
}

func TestGateway_ConcurrentQuota(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"policy":` + seedOverride + `}`)
	counts := fire(h, 200, k.Secret, "image/generate")
	if counts[200] != 5 || counts[403] != 195 {
		t.Fatalf("statuses: got %v, want 5×200 and 195×403", counts)
	}
	if got := h.up.hits.Load(); got != 5 {
		t.Fatalf("upstream hits: got %d, want exactly 5", got)
	}
}

func TestGateway_ConcurrentSpendCap(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"policy":{"daily_spend_cap_usd":"0.05"}}`)
	counts := fire(h, 200, k.Secret, "extract/structured")
	if counts[200] != 5 || counts[429] != 195 {
		t.Fatalf("statuses: got %v, want 5×200 and 195×429", counts)
	}
	if got := h.up.hits.Load(); got != 5 {
		t.Fatalf("upstream hits: got %d, want exactly 5", got)
	}
	// The ledger bills exactly 5 × 0.01 and records all 200 calls.
	var billed, records int64
	err := h.led.Query(ledger.Query{Principal: "key:" + k.KeyID, Type: "call"}, func(r *ledger.Record) error {
		records++
		billed += int64(r.Cost)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if billed != 50_000 || records != 200 {
		t.Fatalf("ledger: billed %d micro-USD over %d records, want 50000 over 200", billed, records)
	}
	resp, b := h.do("GET", "/authorization/status?api_key="+k.Secret, "")
	if m := decode(t, b); resp.StatusCode != 200 || m["spend_today_usd"] != 0.05 {
		t.Fatalf("status spend: got %d %v", resp.StatusCode, m["spend_today_usd"])
	}
}

func TestGateway_PrepaidCredits(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"credits_usd":"0.03"}`)
	counts := fire(h, 50, k.Secret, "extract/structured")
	if counts[200] != 3 || counts[402] != 47 {
		t.Fatalf("statuses: got %v, want 3×200 and 47×402", counts)
	}
	resp, b := h.call(k.Secret, "extract/structured", `{}`)
	if resp.StatusCode != 402 {
		t.Fatalf("got %d", resp.StatusCode)
	}
	wantJSON(t, b, `{"error":"Insufficient credits","balance_usd":0.0,"cost_usd":0.01}`)
	if resp, b := h.admin("POST", "/credits/keys/"+k.KeyID+"/credits", `{"amount_usd":"0.02"}`); resp.StatusCode != 200 {
		t.Fatalf("top up: got %d %s", resp.StatusCode, b)
	}
	if resp, _ := h.call(k.Secret, "extract/structured", `{}`); resp.StatusCode != 200 {
		t.Fatalf("after top-up: got %d", resp.StatusCode)
	}
	resp, b = h.admin("GET", "/credits/keys/"+k.KeyID, "")
	if m := decode(t, b); m["balance_usd"] != 0.01 {
		t.Fatalf("balance: got %v, want 0.01", m["balance_usd"])
	}
	// Ledger: top-ups and debits with balance after each.
	resp, b = h.admin("GET", "/audit?principal=key:"+k.KeyID+"&type=txn", "")
	if resp.StatusCode != 200 {
		t.Fatalf("audit: %d %s", resp.StatusCode, b)
	}
	var kinds []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r ledger.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, r.Kind)
	}
	want := []string{"topup", "debit", "debit", "debit", "topup", "debit"}
	if len(kinds) != len(want) {
		t.Fatalf("txn kinds: got %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("txn kinds: got %v, want %v", kinds, want)
		}
	}
}
