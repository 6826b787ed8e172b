package cluster_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
)

// BenchmarkDecision pairs the decision of one call on the shared Redis
// stores with the local meter stores, in one run: "free" is a quota
// admit (1 Redis round trip), "paid" is admit + reserve + commit (3
// round trips). Serial is the latency of one caller; Parallel is the
// throughput of GOMAXPROCS×8 callers, which rueidis pipelines on one
// connection.
func BenchmarkDecision(b *testing.B) {
	c := dial(b)
	type stores struct {
		q gateway.QuotaStore
		s gateway.SpendStore
	}
	impls := []struct {
		name string
		new  func() stores
	}{
		{"local", func() stores { return stores{meter.NewQuotas(0), meter.NewSpend()} }},
		{"redis", func() stores {
			p := c.WithPrefix("b" + strconv.FormatInt(benchStores.Add(1), 10) + ":")
			return stores{cluster.NewQuotas(p, 0), cluster.NewSpend(p)}
		}},
	}
	principals := make([]string, 1024)
	for i := range principals {
		principals[i] = "key:k_bench" + strconv.Itoa(i)
	}
	day, _ := meter.DayOf(time.Now(), nil)
	decide := func(b *testing.B, st stores, paid bool, n uint64) {
		p := principals[n%uint64(len(principals))]
		q := st.q.Admit(p, 0, 1<<30, time.Now(), n)
		if !q.Allowed {
			b.Fatalf("admit: %+v", q)
		}
		if !paid {
			return
		}
		r, res := st.s.Reserve(p, day, 10_000, 1<<50, true)
		if !res.OK {
			b.Fatalf("reserve: %+v", res)
		}
		if !st.s.Commit(r, nil) {
			b.Fatal("commit: false")
		}
	}
	for _, kind := range []string{"free", "paid"} {
		for _, im := range impls {
			b.Run(kind+"/"+im.name+"/Serial", func(b *testing.B) {
				st := im.new()
				b.ReportAllocs()
				var n uint64
				for b.Loop() {
					n++
					decide(b, st, kind == "paid", n)
				}
			})
			b.Run(kind+"/"+im.name+"/Parallel", func(b *testing.B) {
				st := im.new()
				var ids atomic.Uint64
				b.SetParallelism(8)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						decide(b, st, kind == "paid", ids.Add(1))
					}
				})
			})
		}
	}
}

var benchStores atomic.Int64
