package cluster_test

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
)

// BenchmarkDecision pairs the decision of one call on the shared Redis
// stores with the local meter stores, in one run, as the gateway makes
// it: "free" is a quota admit, "paid" an admit with a spend reservation
// (the Decider's one step on Redis, Admit then Reserve locally) and its
// commit. "redis" leases quota slots and budget slices (the default);
// "redis-nolease" asks Redis for every call (MaxLease and MaxSlice 1: the
// decision before leasing, a priced call's commit synchronous). Serial is the latency of one
// caller; Parallel is the throughput of GOMAXPROCS×8 callers, which
// rueidis pipelines on one connection. rtt/op is the Redis round trips
// (commands sent by the client, from INFO commandstats) per call.
func BenchmarkDecision(b *testing.B) {
	srv := redistest.Start(b)
	c, err := cluster.Dial(srv.URL(), cluster.Options{NodeID: "node-a"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	type stores struct {
		q gateway.QuotaStore
		s gateway.SpendStore
		d gateway.AdmitReserver
	}
	redis := func(maxLease int) func() stores {
		return func() stores {
			p := c.WithPrefix("b" + strconv.FormatInt(benchStores.Add(1), 10) + ":")
			q, s := cluster.NewQuotas(p, 0), cluster.NewSpend(p)
			q.MaxLease, s.MaxSlice = maxLease, maxLease
			return stores{q, s, cluster.NewDecider(q, s)}
		}
	}
	impls := []struct {
		name string
		new  func() stores
	}{
		{"local", func() stores { return stores{q: meter.NewQuotas(0), s: meter.NewSpend()} }},
		{"redis", redis(0)},
		{"redis-nolease", redis(1)},
	}
	principals := make([]string, 16)
	for i := range principals {
		principals[i] = "key:k_bench" + strconv.Itoa(i)
	}
	day, _ := meter.DayOf(time.Now(), nil)
	decide := func(b *testing.B, st stores, paid bool, n uint64) {
		p := principals[n%uint64(len(principals))]
		if !paid {
			if q := st.q.Admit(p, 0, 1<<30, time.Now(), n); !q.Allowed {
				b.Fatalf("admit: %+v", q)
			}
			return
		}
		var (
			q   meter.QuotaResult
			r   meter.Reservation
			res meter.SpendResult
		)
		if st.d != nil {
			q, r, res = st.d.AdmitReserve(p, 0, 1<<30, time.Now(), n, day, 10_000, 1<<50, true)
		} else {
			q = st.q.Admit(p, 0, 1<<30, time.Now(), n)
			r, res = st.s.Reserve(p, day, 10_000, 1<<50, true)
		}
		if !q.Allowed || !res.OK {
			b.Fatalf("admit and reserve: %+v %+v", q, res)
		}
		if !st.s.Commit(r, nil) {
			b.Fatal("commit: false")
		}
	}
	report := func(b *testing.B, st stores, before int64) {
		if f, ok := st.s.(interface{ Flush() }); ok {
			f.Flush() // the queued commits are part of the cost
		}
		if before >= 0 {
			b.ReportMetric(float64(roundTrips(b, srv)-before)/float64(b.N), "rtt/op")
		}
	}
	for _, kind := range []string{"free", "paid"} {
		for _, im := range impls {
			count := func() int64 {
				if im.name == "local" {
					return -1
				}
				return roundTrips(b, srv)
			}
			b.Run(kind+"/"+im.name+"/Serial", func(b *testing.B) {
				st := im.new()
				b.ReportAllocs()
				before := count()
				var n uint64
				for b.Loop() {
					n++
					decide(b, st, kind == "paid", n)
				}
				report(b, st, before)
			})
			b.Run(kind+"/"+im.name+"/Parallel", func(b *testing.B) {
				st := im.new()
				var ids atomic.Uint64
				b.SetParallelism(8)
				b.ReportAllocs()
				before := count()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						decide(b, st, kind == "paid", ids.Add(1))
					}
				})
				report(b, st, before)
			})
		}
	}
}

var benchStores atomic.Int64

// roundTrips counts the commands clients sent to srv (a script is one):
// INFO commandstats' calls of the commands the stores send, not the
// commands scripts run inside Redis.
func roundTrips(b testing.TB, srv *redistest.Server) int64 {
	out, err := srv.DoBulk("INFO", "commandstats")
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch strings.TrimPrefix(name, "cmdstat_") {
		case "evalsha", "eval", "evalsha_ro", "eval_ro":
			calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
			v, _ := strconv.ParseInt(calls, 10, 64)
			n += v
		}
	}
	return n
}
