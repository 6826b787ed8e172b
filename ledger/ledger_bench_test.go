package ledger

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

func benchRecord(i int) *Record {
	r := callRec(fmt.Sprintf("key:%03d", i%1000), "email/send", OutcomeAllowed)
	r.RequestID = "01JDGR6W3T0000000000000000"
	r.Tier = "pro"
	r.LatencyUS, r.UpstreamStatus, r.UpstreamLatencyUS = 812, 200, 640
	return r
}

// syncModes are the durability settings the benchmarks compare.
var syncModes = []struct {
	name string
	sync SyncMode
}{{"SyncAlways", SyncAlways}, {"SyncInterval", SyncInterval}}

// BenchmarkLedger_Append measures Append+Wait of one ~400-byte call record
// from 16 callers per CPU (group commit), with the wait each call sees at
// p50/p99 and the records per badger commit (the applier commits only
// checkpoints and admin/balance entries).
func BenchmarkLedger_Append(b *testing.B) {
	for _, mode := range syncModes {
		b.Run(mode.name, func(b *testing.B) {
			h := &hooks{}
			l, _, _ := newLedger(b, Options{Sync: mode.sync, CheckpointEvery: DefaultCheckpointEvery, hooks: h})
			b.ReportAllocs()
			b.SetParallelism(16) // 32 callers on GOMAXPROCS=2, as the gateway benchmark
			var mu sync.Mutex
			var waits []time.Duration // what each call waits: the commit-before-answer cost
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				mine := make([]time.Duration, 0, 1024)
				for pb.Next() {
					t := time.Now()
					if err := l.Append(benchRecord(i)).Wait(); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t))
					i++
				}
				mu.Lock()
				waits = append(waits, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			slices.Sort(waits)
			if n := len(waits); n > 0 {
				b.ReportMetric(float64(waits[n/2].Microseconds()), "p50-wait-µs")
				b.ReportMetric(float64(waits[n*99/100].Microseconds()), "p99-wait-µs")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			if c := h.commits.Load(); c > 0 {
				b.ReportMetric(float64(b.N)/float64(c), "records/commit")
			}
		})
	}
}

// BenchmarkLedger_AppendOne measures Append+Wait from a single caller:
// ns/op is the latency a lone call adds (no group commit to share).
func BenchmarkLedger_AppendOne(b *testing.B) {
	for _, mode := range syncModes {
		b.Run(mode.name, func(b *testing.B) {
			l, _, _ := newLedger(b, Options{Sync: mode.sync, CheckpointEvery: DefaultCheckpointEvery})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := l.Append(benchRecord(i)).Wait(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLedger_Replay reads one principal's last 24 h through the
// principal index against a full scan of the same data. The dataset is
// LEDGER_BENCH_RECORDS records (default 100 000; the design target is
// 1 000 000) over 24 h, a tenth of them from the target principal, the rest
// from 999 others.
func BenchmarkLedger_Replay(b *testing.B) {
	n := 100_000
	if s := os.Getenv("LEDGER_BENCH_RECORDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 10 {
			b.Fatalf("LEDGER_BENCH_RECORDS=%q: want an integer >= 10", s)
		}
		n = v
	}
	l, _, dir := newLedger(b, Options{Sync: SyncInterval, CheckpointEvery: 10_000})
	end := t0.Add(24 * time.Hour)
	step := 24 * time.Hour / time.Duration(n)
	const target = "key:target"
	const chunk = 10_000
	for i := 0; i < n; i += chunk {
		recs := make([]*Record, 0, chunk)
		for j := i; j < i+chunk && j < n; j++ {
			r := benchRecord(j)
			if j%10 == 0 {
				r.Principal = target
			}
			r.At = t0.Add(time.Duration(j) * step)
			recs = append(recs, r)
		}
		if err := l.Append(recs...).Wait(); err != nil {
			b.Fatal(err)
		}
	}
	// What the records take on disk: segments, and the index files of
	// the sealed ones (per record they index).
	var segBytes, idxBytes, idxRecs int64
	for _, v := range l.st.snapshot(listSel{}) {
		segBytes += v.end
		if v.ix != nil {
			idxBytes += int64(len(v.idx))
			idxRecs += int64(v.n)
		}
	}
	b.Logf("%s: %d records, %.0f segment bytes per record, %.1f index bytes per record (%d sealed)", dir, n,
		float64(segBytes)/float64(n), float64(idxBytes)/float64(max(idxRecs, 1)), idxRecs)
	want := (n + 9) / 10
	q := Query{Principal: target, Since: end.Add(-24 * time.Hour), Until: end}
	var indexNs, scanNs float64

	b.Run("Index", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			got := 0
			if err := l.Query(q, func(*Record) error { got++; return nil }); err != nil {
				b.Fatal(err)
			}
			if got != want {
				b.Fatalf("records: got %d, want %d", got, want)
			}
		}
		indexNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(float64(want)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("IndexRaw", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			got := 0
			if err := l.QueryRaw(q, func([]byte) error { got++; return nil }); err != nil {
				b.Fatal(err)
			}
			if got != want {
				b.Fatalf("records: got %d, want %d", got, want)
			}
		}
		b.ReportMetric(float64(want)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("FullScan", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			got := 0
			// Every record of every segment, decoded, in seq order.
			var r Record
			var err error
			for _, v := range l.st.snapshot(listSel{}) {
				for i := 0; i < v.n && err == nil; i++ {
					var rv []byte
					if rv, err = v.record(i); err == nil {
						err = r.decodeBinary(rv)
					}
					if r.Principal == target && !r.At.Before(q.Since) && r.At.Before(q.Until) {
						got++
					}
				}
			}
			if err != nil {
				b.Fatal(err)
			}
			if got != want {
				b.Fatalf("records: got %d, want %d", got, want)
			}
		}
		scanNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "scanned/s")
	})
	if indexNs > 0 && scanNs > 0 {
		b.Logf("%d records, %d for the principal: index %.1f ms, full scan %.1f ms, ratio %.1fx",
			n, want, indexNs/1e6, scanNs/1e6, scanNs/indexNs)
	}
}
