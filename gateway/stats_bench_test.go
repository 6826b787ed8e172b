package gateway

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/money"
)

// fixtureCall is the part of a call record the sums read.
type fixtureCall struct {
	at                               time.Time
	principal, tool, outcome, reason string
	cost                             money.Micros
}

// statsFixture is a million calls spread over the last 24 hours: 1000
// principals, 12 tools, a realistic mix of outcomes (compact values, not
// whole ledger records: the baseline scan reads less than a real one).
func statsFixture(now time.Time) []fixtureCall {
	outcomes := []struct{ outcome, reason string }{
		{outAllowed, ""}, {outAllowed, ""}, {outAllowed, ""}, {outAllowed, ""}, {outAllowed, ""},
		{outDenied, "deny_tools"}, {outQuotaExceeded, "rate_class_quota"}, {outSpendCapExceeded, "daily_spend_cap"},
		{outUnauthenticated, "invalid_api_key"}, {outUpstreamError, "upstream_unreachable"},
	}
	principals := make([]string, 1000)
	for i := range principals {
		principals[i] = fmt.Sprintf("key:k_%04d", i)
	}
	tools := make([]string, 12)
	for i := range tools {
		tools[i] = fmt.Sprintf("tool/%02d", i)
	}
	const n = 1_000_000
	recs := make([]fixtureCall, n)
	start := now.Add(-statsSpan + time.Minute)
	for i := range recs {
		o := outcomes[i%len(outcomes)]
		recs[i] = fixtureCall{at: start.Add(time.Duration(i) * ((statsSpan - time.Minute) / n)),
			principal: principals[i*7919%1000], tool: tools[i%12], outcome: o.outcome, reason: o.reason}
		if o.outcome == outAllowed {
			recs[i].cost = 10_000
		}
	}
	return recs
}

// BenchmarkStats_24h: GET /stats?since=24h&step=1m at a million records
// (counting from the in-memory minutes, JSON included), against the
// baseline of a scan: the same sums over the million records already in
// memory (the least any scan of the ledger would cost). Reports p50/p99.
func BenchmarkStats_24h(b *testing.B) {
	now := time.Now()
	recs := statsFixture(now)
	var book statsBook
	for _, r := range recs {
		book.add(r.at, r.principal, r.tool, r.outcome, r.reason, r.cost, 1)
	}
	from, to := now.Add(-statsSpan).Unix()/60, now.Unix()/60
	run := func(b *testing.B, op func()) {
		b.ReportAllocs()
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t0 := time.Now()
			op()
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
	b.Run("counters", func(b *testing.B) {
		run(b, func() {
			s := book.query(from, to, 1, 10)
			if s.Totals.Calls != int64(len(recs)) {
				b.Fatalf("calls: got %d, want %d", s.Totals.Calls, len(recs))
			}
			json.Marshal(s)
		})
	})
	b.Run("scan-baseline", func(b *testing.B) {
		run(b, func() {
			byOutcome := map[string][]int64{}
			pr := map[string]money.Micros{}
			for i := range recs {
				r := &recs[i]
				m := r.at.Unix()/60 - from
				s := byOutcome[r.outcome]
				if s == nil {
					s = make([]int64, to-from+1)
					byOutcome[r.outcome] = s
				}
				s[m]++
				pr[r.principal] += r.cost
			}
		})
	})
}

// BenchmarkStats_Add is the per-call cost of counting (the hot path),
// against the baseline of the Prometheus counter every call already
// increments (toolgate_calls_total).
func BenchmarkStats_Add(b *testing.B) {
	at := time.Now()
	b.Run("stats", func(b *testing.B) {
		var book statsBook
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				book.add(at, "key:k_0001", "search/web", outAllowed, "", 2000, 1)
			}
		})
	})
	b.Run("prometheus-baseline", func(b *testing.B) {
		m := newMetricsForBench()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.WithLabelValues("search/web", outAllowed, "").Inc()
			}
		})
	})
}

func newMetricsForBench() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bench_calls_total", Help: "bench"}, []string{"tool", "outcome", "reason"})
}
