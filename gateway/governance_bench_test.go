package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

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

// governedOverride turns on every governance feature for the bench key:
// concurrency caps, two quota windows, both breakers, a group with a
// shared cap, an approval list (not matching the tool) and a shadow
// policy.
const governedOverride = `{"group":"bench","max_in_flight":1000,"max_in_flight_class":{"light":1000},
 "quotas":[{"class":"light","per":"1h","limit":1000000},{"tool":"extract/*","per":"24h","limit":1000000}],
 "loop_breaker":{"repeats":1000,"within_s":60,"cooldown_s":300},"spend_burst":{"usd":"1000","within_s":60},
 "approval_tools":["email/send"],"shadow":{"deny_tools":["code_execute"],"rate_class_quota":{"light":1000000}}}`

// governedEnv is newBenchEnv with the bench key under governedOverride.
func governedEnv(b testing.TB) *benchEnv {
	env := newBenchEnv(b, ledger.SyncInterval)
	grp, err := policy.DecodePolicy([]byte(`{"group_daily_spend_cap_usd":"1000000"}`))
	if err != nil {
		b.Fatal(err)
	}
	env.g.writeMu.Lock()
	st, err := env.g.rebuildWith(policy.GroupKey("bench"), grp)
	env.g.writeMu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	env.g.state.Store(st)
	k, ok := env.g.keys.Authenticate([]byte(env.secret), time.Now())
	if !ok {
		b.Fatal("bench key")
	}
	pol, err := policy.DecodePolicy([]byte(governedOverride))
	if err != nil {
		b.Fatal(err)
	}
	if d := env.g.putOverride("bench", k.Principal, pol); d != nil {
		b.Fatal(string(d.AppendJSON(nil)))
	}
	return env
}

// governedDecision runs identify and decide for the bench key, then
// gives every hold back (as a call refused after decide does), so that
// the state stays the same from one call to the next.
func governedDecision(tb testing.TB, env *benchEnv, ctx *fasthttp.RequestCtx, st *state) {
	c := acquireCall()
	c.start = env.g.now()
	c.st, c.rt = st, st.routes[0]
	env.g.restRequest(ctx, &c.req)
	if d := env.g.identify(c); d != nil {
		tb.Fatal(string(d.AppendJSON(nil)))
	}
	if d := env.g.decide(c); d != nil {
		tb.Fatal(string(d.AppendJSON(nil)))
	}
	if !c.shadowSet || c.eff.Group() != "bench" || !c.gov.InFlight() || !c.gov.Holds() || !c.groupHeld {
		tb.Fatal("not every governance check ran")
	}
	env.g.releaseHolds(c)
	releaseCall(c)
}

// BenchmarkDecisionGoverned is BenchmarkDecision with every governance
// feature on (governedOverride); compare with BenchmarkDecision in the
// same run.
func BenchmarkDecisionGoverned(b *testing.B) {
	env := governedEnv(b)
	defer env.close()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("X-Api-Key", env.secret)
	ctx.Request.SetBodyString(`{"text":"Invoice 42 from ACME, total $120"}`)
	st := env.g.state.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		governedDecision(b, env, &ctx, st)
	}
}
