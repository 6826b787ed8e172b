package meter

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/money"
)

var d0 = civilDay(2026, time.November, 26)

func TestSpend_Reserve(t *testing.T) {
	const cent = money.Micros(10_000)
	tests := []struct {
		name       string
		spent      money.Micros // committed before (Restore)
		balance    money.Micros
		hasBalance bool
		cost       money.Micros
		limit      money.Micros
		hasLimit   bool
		want       SpendResult
	}{
		{"Postpaid", 0, 0, false, cent, 0, false,
			SpendResult{OK: true}},
		{"UnderCap", 4 * cent, 0, false, cent, 5 * cent, true,
			SpendResult{OK: true, SpentToday: 4 * cent, Limit: 5 * cent}},
		{"ReachesCapExactly", 4*cent + 1, 0, false, cent - 1, 5 * cent, true,
			SpendResult{OK: true, SpentToday: 4*cent + 1, Limit: 5 * cent}},
		{"CapExceeded", 4*cent + 1, 0, false, cent, 5 * cent, true,
			SpendResult{Reason: ReasonCapExceeded, SpentToday: 4*cent + 1, Limit: 5 * cent}},
		{"ZeroCapBlocksPricedCall", 0, 0, false, 1, 0, true,
			SpendResult{Reason: ReasonCapExceeded}},
		{"ZeroCostPassesFullCap", 5 * cent, 0, false, 0, 5 * cent, true,
			SpendResult{OK: true, SpentToday: 5 * cent, Limit: 5 * cent}},
		{"ZeroCostPassesEmptyBalance", 0, 0, true, 0, 0, false,
			SpendResult{OK: true, HasBalance: true}},
		{"Credits", 0, cent, true, cent, 0, false,
			SpendResult{OK: true, Balance: cent, HasBalance: true}},
		{"InsufficientCredits", 0, cent - 1, true, cent, 0, false,
			SpendResult{Reason: ReasonInsufficientCredits, Balance: cent - 1, HasBalance: true}},
		{"CapCheckedBeforeCredits", 5 * cent, 0, true, cent, 5 * cent, true,
			SpendResult{Reason: ReasonCapExceeded, SpentToday: 5 * cent, Limit: 5 * cent, HasBalance: true}},
		{"NegativeCostIsZero", 0, 0, true, -cent, 0, false,
			SpendResult{OK: true, HasBalance: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSpend()
			if tt.spent != 0 {
				s.Restore("key:a", d0, tt.spent)
			}
			if tt.hasBalance {
				s.RestoreBalance("key:a", tt.balance)
			}
			r, got := s.Reserve("key:a", d0, tt.cost, tt.limit, tt.hasLimit)
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			wantToday := tt.spent
			if got.OK {
				wantToday += max(tt.cost, 0)
			} else if r.Cost() != 0 {
				t.Errorf("refused reservation Cost: got %d, want 0", r.Cost())
			}
			if today := s.Today("key:a", d0); today != wantToday {
				t.Errorf("Today: got %d, want %d", today, wantToday)
			}
		})
	}
}

func TestSpend_Commit(t *testing.T) {
	t.Run("Postpaid", func(t *testing.T) {
		s := NewSpend()
		r, _ := s.Reserve("key:a", d0, 300, 1000, true)
		var got Committed
		if !s.Commit(r, func(c Committed) { got = c }) {
			t.Fatal("Commit: got false, want true")
		}
		if want := (Committed{SpentToday: 300}); got != want {
			t.Errorf("Committed: got %+v, want %+v", got, want)
		}
		if _, ok := s.Balance("key:a"); ok {
			t.Error("Balance: got a balance, want none (postpaid)")
		}
	})
	t.Run("DebitsCredits", func(t *testing.T) {
		s := NewSpend()
		s.RestoreBalance("key:a", 1000)
		r1, _ := s.Reserve("key:a", d0, 300, 0, false)
		r2, res := s.Reserve("key:a", d0, 200, 0, false)
		if res.Balance != 700 || res.SpentToday != 300 {
			t.Fatalf("second Reserve: got %+v, want Balance 700, SpentToday 300", res)
		}
		if b, _ := s.Balance("key:a"); b != 1000 {
			t.Fatalf("Balance while reserved: got %d, want 1000", b)
		}
		var got Committed
		s.Commit(r1, func(c Committed) { got = c })
		if want := (Committed{SpentToday: 500, BalanceAfter: 700, HasBalance: true}); got != want {
			t.Errorf("Committed: got %+v, want %+v", got, want)
		}
		s.Release(r2)
		if b, _ := s.Balance("key:a"); b != 700 {
			t.Errorf("Balance: got %d, want 700", b)
		}
		if got := s.Today("key:a", d0); got != 300 {
			t.Errorf("Today: got %d, want 300", got)
		}
	})
	t.Run("TwiceDoesNotDebitTwice", func(t *testing.T) {
		s := NewSpend()
		s.RestoreBalance("key:a", 1000)
		r, _ := s.Reserve("key:a", d0, 300, 0, false)
		calls := 0
		fn := func(Committed) { calls++ }
		if !s.Commit(r, fn) {
			t.Fatal("first Commit: got false, want true")
		}
		if s.Commit(r, fn) {
			t.Error("second Commit: got true, want false")
		}
		if s.Release(r) {
			t.Error("Release after Commit: got true, want false")
		}
		if b, _ := s.Balance("key:a"); b != 700 {
			t.Errorf("Balance: got %d, want 700", b)
		}
		if got := s.Today("key:a", d0); got != 300 {
			t.Errorf("Today: got %d, want 300", got)
		}
		if calls != 1 {
			t.Errorf("fn calls: got %d, want 1", calls)
		}
	})
	t.Run("ZeroCostCallsFn", func(t *testing.T) {
		s := NewSpend()
		s.RestoreBalance("key:a", 50)
		r, res := s.Reserve("key:a", d0, 0, 0, false)
		if !res.OK {
			t.Fatalf("Reserve: got %+v, want OK", res)
		}
		var got Committed
		if !s.Commit(r, func(c Committed) { got = c }) {
			t.Fatal("Commit: got false, want true")
		}
		if want := (Committed{BalanceAfter: 50, HasBalance: true}); got != want {
			t.Errorf("Committed: got %+v, want %+v", got, want)
		}
		called := false
		r, _ = s.Reserve("key:unknown", d0, 0, 0, false)
		s.Commit(r, func(Committed) { called = true })
		if !called {
			t.Error("fn for unknown principal: not called, want called")
		}
		if got := s.Len(); got != 1 {
			t.Errorf("Len: got %d, want 1 (free calls create nothing)", got)
		}
	})
	t.Run("ReservedAfterMidnightStaysOnItsDay", func(t *testing.T) {
		s := NewSpend()
		r, _ := s.Reserve("key:a", d0, 100, 0, false)
		s.Commit(r, nil)
		if got, next := s.Today("key:a", d0), s.Today("key:a", d0+1); got != 100 || next != 0 {
			t.Errorf("Today: got %d and %d next day, want 100 and 0", got, next)
		}
	})
	t.Run("PostpaidReservationNotDebitedAfterTopUp", func(t *testing.T) {
		s := NewSpend()
		r, _ := s.Reserve("key:a", d0, 100, 0, false)
		s.TopUp("key:a", 1000, nil)
		var got Committed
		s.Commit(r, func(c Committed) { got = c })
		if want := (Committed{SpentToday: 100, BalanceAfter: 1000, HasBalance: true}); got != want {
			t.Errorf("Committed: got %+v, want %+v", got, want)
		}
	})
}

func TestSpend_Release(t *testing.T) {
	s := NewSpend()
	r1, _ := s.Reserve("key:a", d0, 600, 1000, true)
	if _, res := s.Reserve("key:a", d0, 600, 1000, true); res.OK {
		t.Fatalf("over cap: got %+v, want refused", res)
	}
	if !s.Release(r1) {
		t.Fatal("Release: got false, want true")
	}
	if s.Release(r1) {
		t.Error("second Release: got true, want false")
	}
	if got := s.Today("key:a", d0); got != 0 {
		t.Errorf("Today: got %d, want 0", got)
	}
	if _, res := s.Reserve("key:a", d0, 1000, 1000, true); !res.OK {
		t.Errorf("after Release: got %+v, want OK", res)
	}
	if !s.Release(Reservation{}) {
		t.Error("Release of zero Reservation: got false, want true")
	}
}

func TestSpend_TopUp(t *testing.T) {
	s := NewSpend()
	var seen []money.Micros
	fn := func(b money.Micros) { seen = append(seen, b) }
	if got, ok := s.TopUp("key:a", 500, fn); got != 500 || !ok {
		t.Errorf("TopUp: got %d, want 500", got)
	}
	if got, ok := s.TopUp("key:a", -200, fn); got != 300 || !ok {
		t.Errorf("TopUp correction: got %d, want 300", got)
	}
	if b, ok := s.Balance("key:a"); b != 300 || !ok {
		t.Errorf("Balance: got %d, %v, want 300, true", b, ok)
	}
	if len(seen) != 2 || seen[0] != 500 || seen[1] != 300 {
		t.Errorf("fn saw %v, want [500 300]", seen)
	}
	if _, res := s.Reserve("key:a", d0, 301, 0, false); res.Reason != ReasonInsufficientCredits {
		t.Errorf("Reserve 301: got %+v, want InsufficientCredits", res)
	}
}

func TestSpend_ReserveConcurrent(t *testing.T) {
	t.Run("CapHoldsExactly", func(t *testing.T) {
		s := NewSpend()
		var wg sync.WaitGroup
		var ok atomic.Int32
		for i := 0; i < 200; i++ {
			wg.Go(func() {
				r, res := s.Reserve("key:hot", d0, 10_000, 50_000, true)
				if res.OK {
					ok.Add(1)
					s.Commit(r, nil)
				} else if res.Reason != ReasonCapExceeded {
					t.Errorf("got reason %s, want cap_exceeded", res.Reason)
				}
			})
		}
		wg.Wait()
		if got := ok.Load(); got != 5 {
			t.Fatalf("reserved: got %d, want 5", got)
		}
		if got := s.Today("key:hot", d0); got != 50_000 {
			t.Fatalf("Today: got %d, want 50000", got)
		}
	})
	t.Run("CreditsNeverNegative", func(t *testing.T) {
		s := NewSpend()
		s.RestoreBalance("key:hot", 50_000)
		var wg sync.WaitGroup
		var committed atomic.Int64
		var negative atomic.Bool
		for i := 0; i < 200; i++ {
			wg.Go(func() {
				r, res := s.Reserve("key:hot", d0, 7_000, 0, false)
				if !res.OK {
					return
				}
				if i%3 == 0 {
					s.Release(r)
					return
				}
				s.Commit(r, func(c Committed) {
					if c.BalanceAfter < 0 {
						negative.Store(true)
					}
				})
				committed.Add(1)
			})
		}
		wg.Wait()
		b, _ := s.Balance("key:hot")
		if negative.Load() || b < 0 {
			t.Fatalf("balance went negative: %d", b)
		}
		if want := 50_000 - money.Micros(committed.Load())*7_000; b != want {
			t.Fatalf("Balance: got %d, want %d", b, want)
		}
		// What the releases gave back is usable: calls reserve and commit
		// until the credits cannot hold one more (a call refused while a
		// release was still pending is not retried by the racers).
		for {
			r, res := s.Reserve("key:hot", d0, 7_000, 0, false)
			if !res.OK {
				break
			}
			s.Commit(r, nil)
		}
		if b, _ = s.Balance("key:hot"); b < 0 || b >= 7_000 {
			t.Fatalf("Balance after the drain: got %d, want 0 to 6999 (all usable credits spent)", b)
		}
	})
	t.Run("ReleaseReturnsCapacity", func(t *testing.T) {
		s := NewSpend()
		var wg sync.WaitGroup
		var ok atomic.Int32
		for i := 0; i < 200; i++ {
			wg.Go(func() {
				for j := 0; j < 20; j++ {
					r, res := s.Reserve("key:hot", d0, 10_000, 50_000, true)
					if res.OK {
						ok.Add(1)
						s.Release(r)
					}
				}
			})
		}
		wg.Wait()
		if ok.Load() < 5 {
			t.Fatalf("reserved: got %d, want >= 5", ok.Load())
		}
		if got := s.Today("key:hot", d0); got != 0 {
			t.Fatalf("Today: got %d, want 0", got)
		}
	})
	t.Run("ManyPrincipalsWithSweep", func(t *testing.T) {
		s := NewSpend()
		var wg sync.WaitGroup
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
					s.Sweep(d0.Time().Add(10 * 24 * time.Hour)) // every day is old
				}
			}
		}()
		for g := 0; g < 50; g++ {
			wg.Go(func() {
				for i := 0; i < 200; i++ {
					p := fmt.Sprintf("key:%d", i%20)
					r, res := s.Reserve(p, d0, 1, 1_000_000, true)
					if !res.OK {
						t.Errorf("%s: got %+v, want OK", p, res)
					} else if !s.Commit(r, nil) {
						t.Errorf("%s: Commit got false, want true", p)
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		<-done
		// Committed days may be swept at any time; open reservations never
		// are, and nothing may be left open.
		s.Sweep(d0.Time())
		for i := range s.m.shards {
			for p, a := range s.m.shards[i].m {
				if len(a.open) != 0 || a.held != 0 {
					t.Errorf("%s: %d open reservations, want 0", p, len(a.open))
				}
				for _, d := range a.days {
					if d.reserved != 0 {
						t.Errorf("%s: reserved %d, want 0", p, d.reserved)
					}
				}
			}
		}
	})
}

func TestSpend_DayRollover(t *testing.T) {
	ny := mustLoad(t, "America/New_York")
	s := NewSpend()
	now := time.Date(2026, 11, 26, 23, 0, 0, 0, ny)
	day, resetAt := DayOf(now, ny)
	for i := 0; i < 5; i++ {
		r, _ := s.Reserve("key:a", day, 10_000, 50_000, true)
		s.Commit(r, nil)
	}
	if _, res := s.Reserve("key:a", day, 10_000, 50_000, true); res.Reason != ReasonCapExceeded {
		t.Fatalf("before midnight: got %+v, want CapExceeded", res)
	}
	next, _ := DayOf(resetAt, ny)
	if next != day+1 {
		t.Fatalf("day at resetAt: got %s, want %s", next, day+1)
	}
	if _, res := s.Reserve("key:a", next, 10_000, 50_000, true); !res.OK || res.SpentToday != 0 {
		t.Fatalf("after midnight: got %+v, want OK with SpentToday 0", res)
	}
	if got := s.Today("key:a", day); got != 50_000 {
		t.Errorf("Today for the old day: got %d, want 50000", got)
	}
}

func TestSpend_Restore(t *testing.T) {
	s := NewSpend()
	s.Restore("key:a", d0, 40_000)
	s.Restore("key:a", d0, 45_000) // replaces
	s.Restore("key:a", d0-1, 99_000)
	if got := s.Today("key:a", d0); got != 45_000 {
		t.Errorf("Today: got %d, want 45000", got)
	}
	if _, res := s.Reserve("key:a", d0, 10_000, 50_000, true); res.Reason != ReasonCapExceeded || res.SpentToday != 45_000 {
		t.Errorf("Reserve: got %+v, want CapExceeded with SpentToday 45000", res)
	}
	s.RestoreBalance("wallet:0xb", 1)
	if b, ok := s.Balance("wallet:0xb"); b != 1 || !ok {
		t.Errorf("Balance: got %d, %v, want 1, true", b, ok)
	}
}

func TestSpend_Sweep(t *testing.T) {
	s := NewSpend()
	s.Restore("key:old", d0-3, 100)
	s.Restore("key:recent", d0-2, 100)
	s.Restore("key:prepaid", d0-10, 100)
	s.RestoreBalance("key:prepaid", 5)
	open, _ := s.Reserve("key:open", d0-5, 100, 0, false)
	now := d0.Time().Add(12 * time.Hour)
	if got := s.Sweep(now); got != 1 {
		t.Fatalf("evicted: got %d, want 1", got)
	}
	if got := s.Len(); got != 3 {
		t.Fatalf("Len: got %d, want 3", got)
	}
	if got := s.Today("key:recent", d0-2); got != 100 {
		t.Errorf("recent day: got %d, want 100 (kept)", got)
	}
	if got := s.Today("key:prepaid", d0-10); got != 0 {
		t.Errorf("prepaid old day: got %d, want 0 (dropped)", got)
	}
	if b, ok := s.Balance("key:prepaid"); b != 5 || !ok {
		t.Errorf("prepaid balance: got %d, %v, want 5, true (kept)", b, ok)
	}
	if got := s.Today("key:open", d0-5); got != 100 {
		t.Errorf("old day with an open reservation: got %d, want 100 (kept)", got)
	}
	if !s.Commit(open, nil) {
		t.Fatal("Commit of a reservation on a swept day: got false, want true")
	}
	s.Sweep(now)
	if got := s.Len(); got != 2 {
		t.Errorf("Len after the open reservation closed: got %d, want 2", got)
	}
	// An evicted principal comes back fresh.
	if _, res := s.Reserve("key:old", d0, 1, 1, true); !res.OK || res.SpentToday != 0 {
		t.Errorf("Reserve after eviction: got %+v, want OK with SpentToday 0", res)
	}
}

func TestSpendReason_String(t *testing.T) {
	tests := []struct {
		name   string
		reason SpendReason
		want   string
	}{
		{"None", ReasonNone, "none"},
		{"Cap", ReasonCapExceeded, "cap_exceeded"},
		{"Credits", ReasonInsufficientCredits, "insufficient_credits"},
		{"Overflow", ReasonOverflow, "spend_overflow"},
		{"Invalid", 9, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.reason.String(); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestSpend_NearMaximum: sums next to the largest Micros are refused as a
// decision (ReasonOverflow, or the cap) and never wrap negative: the
// issue-17 price of $9 000 000 000 000 twice, restored spend at the top,
// credits held and topped up to the limit.
func TestSpend_NearMaximum(t *testing.T) {
	const top = money.Micros(math.MaxInt64)
	huge := 9_000_000_000_000 * money.PerUSD // 9e18 micro-USD: two do not fit

	t.Run("ReasonOverflow", func(t *testing.T) {
		s := NewSpend()
		r, res := s.Reserve("key:a", d0, huge, 0, false)
		if !res.OK {
			t.Fatalf("first reserve: got %+v, want OK", res)
		}
		if _, res := s.Reserve("key:a", d0, huge, 0, false); res.OK || res.Reason != ReasonOverflow {
			t.Fatalf("second reserve in flight: got %+v, want ReasonOverflow", res)
		}
		if !s.Commit(r, nil) {
			t.Fatal("commit: got false")
		}
		if _, res := s.Reserve("key:a", d0, huge, 0, false); res.OK || res.Reason != ReasonOverflow {
			t.Fatalf("second reserve after commit: got %+v, want ReasonOverflow", res)
		}
		if got := s.Today("key:a", d0); got != huge {
			t.Fatalf("Today: got %d, want %d", got, huge)
		}
		// What still fits is still reserved, up to the last micro.
		r, res = s.Reserve("key:a", d0, top-huge, 0, false)
		if !res.OK {
			t.Fatalf("reserve to the maximum: got %+v, want OK", res)
		}
		s.Commit(r, nil)
		if got := s.Today("key:a", d0); got != top {
			t.Fatalf("Today at the maximum: got %d, want %d", got, top)
		}
		if _, res := s.Reserve("key:a", d0, 1, 0, false); res.Reason != ReasonOverflow || res.SpentToday != top {
			t.Fatalf("one micro past the maximum: got %+v, want ReasonOverflow with SpentToday %d", res, top)
		}
	})

	t.Run("ReasonCapExceeded", func(t *testing.T) {
		s := NewSpend()
		s.Restore("key:a", d0, top-5)
		_, res := s.Reserve("key:a", d0, money.MaxAmount, money.MaxAmount, true)
		if res.OK || res.Reason != ReasonCapExceeded || res.SpentToday < 0 {
			t.Fatalf("got %+v, want ReasonCapExceeded with a non-negative SpentToday", res)
		}
	})

	t.Run("RestoredPastTheTop", func(t *testing.T) {
		s := NewSpend()
		r, res := s.Reserve("key:a", d0, huge, 0, false)
		if !res.OK {
			t.Fatalf("reserve: got %+v", res)
		}
		s.Restore("key:a", d0, huge) // committed + reserved no longer fits
		if got := s.Today("key:a", d0); got != top {
			t.Fatalf("Today: got %d, want saturated %d", got, top)
		}
		if _, res := s.Reserve("key:a", d0, 1, 0, false); res.Reason != ReasonOverflow {
			t.Fatalf("reserve: got %+v, want ReasonOverflow", res)
		}
		var seen Committed
		s.Commit(r, func(c Committed) { seen = c })
		if seen.SpentToday != top || s.Today("key:a", d0) != top {
			t.Fatalf("after commit: got %d / %d, want saturated %d", seen.SpentToday, s.Today("key:a", d0), top)
		}
	})

	t.Run("Credits", func(t *testing.T) {
		s := NewSpend()
		if b, ok := s.TopUp("key:p", top-10, nil); !ok || b != top-10 {
			t.Fatalf("TopUp: got %d, %t", b, ok)
		}
		called := false
		b, ok := s.TopUp("key:p", money.MaxAmount, func(money.Micros) { called = true })
		if ok || b != top-10 || called {
			t.Fatalf("TopUp past the maximum: got %d, %t, fn called %t; want %d, false, not called", b, ok, called, top-10)
		}
		if bal, _ := s.Balance("key:p"); bal != top-10 {
			t.Fatalf("Balance: got %d, want %d", bal, top-10)
		}
		r, res := s.Reserve("key:p", d0, huge, 0, false)
		if !res.OK || res.Balance != top-10 {
			t.Fatalf("reserve against credits: got %+v", res)
		}
		if _, res := s.Reserve("key:p", d0, huge, 0, false); res.OK {
			t.Fatalf("second reserve: got %+v, want refused", res)
		}
		var seen Committed
		s.Commit(r, func(c Committed) { seen = c })
		if seen.BalanceAfter != top-10-huge || seen.SpentToday != huge {
			t.Fatalf("commit: got %+v", seen)
		}
	})
}

func TestSpend_ReservationID(t *testing.T) {
	t.Run("UniqueAndIdempotent", func(t *testing.T) {
		s := NewSpend()
		s.RestoreBalance("key:a", 1000)
		r1, _ := s.Reserve("key:a", d0, 100, 0, false)
		r2, _ := s.Reserve("key:b", d0, 100, 0, false)
		if r1.ID() == 0 || r1.ID() == r2.ID() {
			t.Fatalf("IDs: got %d and %d, want distinct and non-zero", r1.ID(), r2.ID())
		}
		if r1.Principal() != "key:a" || r1.Day() != d0 || r1.Cost() != 100 {
			t.Fatalf("got %+v, want key:a, %s, 100", r1, d0)
		}
		copied := r1
		if !s.Commit(r1, nil) {
			t.Fatal("Commit: got false, want true")
		}
		if s.Commit(copied, nil) || s.Release(copied) {
			t.Error("Commit or Release of a copy after Commit: got true, want false")
		}
		if b, _ := s.Balance("key:a"); b != 900 {
			t.Errorf("Balance: got %d, want 900", b)
		}
		if !s.Release(r2) || s.Release(r2) || s.Commit(r2, nil) {
			t.Error("Release, Release, Commit: want true, false, false")
		}
		if got := s.Today("key:b", d0); got != 0 {
			t.Errorf("Today key:b: got %d, want 0", got)
		}
	})
	t.Run("ForeignIDHoldsNothing", func(t *testing.T) {
		s := NewSpend()
		r, _ := s.Reserve("key:a", d0, 100, 0, false)
		// The same ID under another principal, or another ID under the
		// same principal, is not r.
		if s.Commit(NewReservation(r.ID(), "key:b", d0, 100), nil) {
			t.Error("Commit under another principal: got true, want false")
		}
		if s.Release(NewReservation(r.ID()+1, "key:a", d0, 100)) {
			t.Error("Release of an unknown ID: got true, want false")
		}
		if got := s.Today("key:a", d0); got != 100 {
			t.Errorf("Today: got %d, want 100 (still reserved)", got)
		}
	})
	t.Run("StaleAfterEviction", func(t *testing.T) {
		s := NewSpend()
		r, _ := s.Reserve("key:a", d0, 100, 0, false)
		s.Release(r)
		s.Sweep(d0.Time().Add(10 * 24 * time.Hour)) // evicts key:a
		if got := s.Len(); got != 0 {
			t.Fatalf("Len: got %d, want 0", got)
		}
		fresh, _ := s.Reserve("key:a", d0, 100, 0, false)
		if s.Commit(r, nil) {
			t.Error("Commit of a reservation of the evicted account: got true, want false")
		}
		if !s.Commit(fresh, nil) {
			t.Error("Commit of the fresh reservation: got false, want true")
		}
		if got := s.Today("key:a", d0); got != 100 {
			t.Errorf("Today: got %d, want 100", got)
		}
	})
}

func TestSpend_Status(t *testing.T) {
	s := NewSpend()
	if got := s.Status("key:none", d0); got != (SpendStatus{}) {
		t.Fatalf("unknown: got %+v, want zero", got)
	}
	s.RestoreBalance("key:a", 1000)
	r1, _ := s.Reserve("key:a", d0, 300, 0, false)
	s.Reserve("key:a", d0, 200, 0, false)
	s.Commit(r1, nil)
	want := SpendStatus{Committed: 300, Reserved: 200, Balance: 700, HasBalance: true}
	if got := s.Status("key:a", d0); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := s.Status("key:a", d0+1); got != (SpendStatus{Balance: 700, HasBalance: true}) {
		t.Errorf("next day: got %+v, want the balance only", got)
	}
}
