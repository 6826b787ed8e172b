package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
)

// BenchmarkSimulate replays a candidate policy document against 100 000
// call records of the last hour (1 000 principals); the issue asks for
// under a second.
func BenchmarkSimulate(b *testing.B) {
	env := newBenchEnv(b, ledger.SyncInterval)
	defer env.close()
	const n = 100_000
	now := time.Now()
	batch := make([]*ledger.Record, 0, 1000)
	var last ledger.Ticket
	for i := 0; i < n; i++ {
		batch = append(batch, &ledger.Record{Type: ledger.TypeCall, At: now.Add(-time.Hour + time.Duration(i)*30*time.Millisecond),
			RequestID: fmt.Sprintf("r-%d", i), Principal: fmt.Sprintf("key:k_%04d", i%1000), Tier: "api_key",
			Tool: "extract/structured", RateClass: "light", Outcome: "allowed", Status: 200, Cost: 1, SpendDay: "2026-12-01"})
		if len(batch) == cap(batch) {
			last = env.g.led.Append(batch...)
			batch = make([]*ledger.Record, 0, 1000)
		}
	}
	if err := last.Wait(); err != nil {
		b.Fatal(err)
	}
	doc, err := policy.DecodeDocument([]byte(`{"version":1,"defaults":{"rate_class_quota":{"light":60}},"tiers":{"api_key":{"daily_spend_cap_usd":"0.00005"}}}`))
	if err != nil {
		b.Fatal(err)
	}
	st := env.g.state.Load()
	// One run first: the ledger applies the appended records to its
	// indexes in the background, and a query reads them once applied.
	if _, err := env.g.simulate(st, simRequest{hours: 2, doc: doc}); err != nil {
		b.Fatal(err)
	}
	// The baseline: reading the same records, nothing else.
	b.Run("Query", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			k := 0
			env.g.led.Query(ledger.Query{Since: now.Add(-2 * time.Hour), Type: ledger.TypeCall}, func(*ledger.Record) error { k++; return nil })
			if k != n {
				b.Fatalf("read %d", k)
			}
		}
	})
	b.Run("Simulate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := env.g.simulate(st, simRequest{hours: 2, samples: 20, doc: doc})
			if err != nil {
				b.Fatal(err)
			}
			if res.Evaluated != n || res.Changed == 0 {
				b.Fatalf("evaluated %d, changed %d", res.Evaluated, res.Changed)
			}
		}
		b.ReportMetric(float64(n), "records/op")
	})
}
