package meter

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func principals(n int) []string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = fmt.Sprintf("key:%08d", i)
	}
	return ps
}

// BenchmarkMutexBaseline is the floor the meter is measured against: one
// uncontended lock and unlock, and a map lookup under a single lock.
func BenchmarkMutexBaseline(b *testing.B) {
	b.Run("LockUnlock", func(b *testing.B) {
		b.ReportAllocs()
		var mu sync.Mutex
		for b.Loop() {
			mu.Lock()
			mu.Unlock() //nolint:staticcheck // the cost of the pair is the point
		}
	})
	b.Run("SingleLockMapParallel", func(b *testing.B) {
		b.ReportAllocs()
		ps := principals(10_000)
		m := make(map[string]int, len(ps))
		var mu sync.Mutex
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)) * 7919
			for pb.Next() {
				i++
				mu.Lock()
				m[ps[i%len(ps)]]++
				mu.Unlock()
			}
		})
	})
}

// warmQuotas returns a Quotas that knows every principal in every class,
// its rings grown, so the benchmark measures the steady state.
func warmQuotas(ps []string) *Quotas {
	q := NewQuotas(0)
	for _, p := range ps {
		for c := 0; c < MaxClasses; c++ {
			for i := 0; i < 100; i++ {
				q.Admit(p, c, 100, t0, nextID())
			}
		}
	}
	return q
}

// warmSpend returns a Spend that knows every principal, half of them
// prepaid.
func warmSpend(ps []string) *Spend {
	s := NewSpend()
	for i, p := range ps {
		if i%2 == 0 {
			s.RestoreBalance(p, 1<<50)
		}
		r, _ := s.Reserve(p, d0, 1, 1<<50, true)
		s.Commit(r, nil)
	}
	return s
}

func BenchmarkQuotas_Admit(b *testing.B) {
	for _, n := range []int{1, 10_000} {
		ps := principals(n)
		b.Run(fmt.Sprintf("Serial/principals=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			q := warmQuotas(ps)
			now := t0
			i := 0
			for b.Loop() {
				i++
				now = now.Add(time.Millisecond)
				q.Admit(ps[i%n], i%MaxClasses, 100, now, uint64(i))
			}
		})
		b.Run(fmt.Sprintf("Parallel/principals=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			q := warmQuotas(ps)
			var next atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) * 7919
				now := t0
				for pb.Next() {
					i++
					now = now.Add(time.Millisecond)
					q.Admit(ps[i%n], i%MaxClasses, 100, now, uint64(i))
				}
			})
		})
	}
}

func BenchmarkSpend_ReserveCommit(b *testing.B) {
	fn := func(Committed) {}
	for _, n := range []int{1, 10_000} {
		ps := principals(n)
		b.Run(fmt.Sprintf("Serial/principals=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			s := warmSpend(ps)
			i := 0
			for b.Loop() {
				i++
				r, res := s.Reserve(ps[i%n], d0, 10_000, 1<<50, true)
				if res.OK {
					s.Commit(r, fn)
				}
			}
		})
		b.Run(fmt.Sprintf("Parallel/principals=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			s := warmSpend(ps)
			var next atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) * 7919
				for pb.Next() {
					i++
					r, res := s.Reserve(ps[i%n], d0, 10_000, 1<<50, true)
					if res.OK {
						s.Commit(r, fn)
					}
				}
			})
		})
	}
}

func BenchmarkDayOf(b *testing.B) {
	ny := mustLoad(b, "America/New_York")
	b.ReportAllocs()
	now := t0
	for b.Loop() {
		now = now.Add(time.Second)
		DayOf(now, ny)
	}
}
