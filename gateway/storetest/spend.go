package storetest

import (
	"sync/atomic"
	"testing"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// SpendContract checks a SpendStore: caps never overshot and credits never
// negative under 200 concurrent reservations, reservations idempotent by
// ID, and the status read.
func SpendContract(t *testing.T, newStore func(t *testing.T) gateway.SpendStore) {
	day, _ := meter.DayOf(t0, nil)
	t.Run("NoCapOvershootUnderConcurrency", func(t *testing.T) {
		s := newStore(t)
		var ok atomic.Int32
		concurrently(200, func(int) {
			r, res := s.Reserve("key:hot", day, 10_000, 50_000, true)
			switch {
			case res.OK:
				ok.Add(1)
				if !s.Commit(r, nil) {
					t.Error("Commit: got false, want true")
				}
			case res.Reason != meter.ReasonCapExceeded:
				t.Errorf("reason: got %s, want cap_exceeded", res.Reason)
			}
		})
		if got := ok.Load(); got != 5 {
			t.Fatalf("reserved: got %d, want 5", got)
		}
		if got := s.Status("key:hot", day); got.Committed != 50_000 || got.Reserved != 0 {
			t.Fatalf("Status: got %+v, want committed 50000, reserved 0", got)
		}
	})
	t.Run("CreditsNeverNegativeUnderConcurrency", func(t *testing.T) {
		s := newStore(t)
		s.RestoreBalance("key:hot", 50_000)
		var committed atomic.Int64
		var negative atomic.Bool
		concurrently(200, func(i int) {
			r, res := s.Reserve("key:hot", day, 7_000, 0, false)
			if !res.OK {
				if res.Reason != meter.ReasonInsufficientCredits {
					t.Errorf("reason: got %s, want insufficient_credits", res.Reason)
				}
				return
			}
			if i%3 == 0 {
				s.Release(r)
				return
			}
			s.Commit(r, func(c meter.Committed) {
				if c.BalanceAfter < 0 {
					negative.Store(true)
				}
			})
			committed.Add(1)
		})
		// Credits given back by Release are usable again: spend what is
		// left one call at a time. (Not inside the race: whether a
		// refused call saw credits that a later Release gave back is
		// timing, and a shared store answers in another order than a
		// local one.)
		for {
			r, res := s.Reserve("key:hot", day, 7_000, 0, false)
			if !res.OK {
				break
			}
			s.Commit(r, nil)
			committed.Add(1)
		}
		b, has := s.Balance("key:hot")
		if !has || negative.Load() || b < 0 {
			t.Fatalf("balance went negative: %d (has %t)", b, has)
		}
		if want := 50_000 - money.Micros(committed.Load())*7_000; b != want {
			t.Fatalf("Balance: got %d, want %d", b, want)
		}
		if b >= 7_000 {
			t.Fatalf("Balance: got %d, want < 7000 (every usable credit spent)", b)
		}
	})
	t.Run("CommitIdempotent", func(t *testing.T) {
		s := newStore(t)
		s.RestoreBalance("key:a", 1000)
		r, res := s.Reserve("key:a", day, 300, 0, false)
		if !res.OK || r.Cost() != 300 || r.ID() == 0 {
			t.Fatalf("Reserve: got %+v, %+v, want OK with cost 300 and an ID", r, res)
		}
		calls := 0
		var got meter.Committed
		fn := func(c meter.Committed) { calls++; got = c }
		if !s.Commit(r, fn) {
			t.Fatal("first Commit: got false, want true")
		}
		if s.Commit(r, fn) {
			t.Error("second Commit: got true, want false")
		}
		if s.Release(r) {
			t.Error("Release after Commit: got true, want false")
		}
		if calls != 1 {
			t.Errorf("fn calls: got %d, want 1", calls)
		}
		if want := (meter.Committed{SpentToday: 300, BalanceAfter: 700, HasBalance: true}); got != want {
			t.Errorf("Committed: got %+v, want %+v", got, want)
		}
		if st := s.Status("key:a", day); st != (meter.SpendStatus{Committed: 300, Balance: 700, HasBalance: true}) {
			t.Errorf("Status: got %+v, want committed 300, balance 700", st)
		}
	})
	t.Run("ReleaseIdempotent", func(t *testing.T) {
		s := newStore(t)
		r, _ := s.Reserve("key:a", day, 600, 1000, true)
		if _, res := s.Reserve("key:a", day, 600, 1000, true); res.OK || res.Reason != meter.ReasonCapExceeded {
			t.Fatalf("over the cap: got %+v, want cap_exceeded", res)
		}
		if !s.Release(r) {
			t.Fatal("Release: got false, want true")
		}
		if s.Release(r) {
			t.Error("second Release: got true, want false")
		}
		if s.Commit(r, nil) {
			t.Error("Commit after Release: got true, want false")
		}
		if st := s.Status("key:a", day); st.Committed != 0 || st.Reserved != 0 {
			t.Errorf("Status: got %+v, want nothing spent or reserved", st)
		}
		if _, res := s.Reserve("key:a", day, 1000, 1000, true); !res.OK {
			t.Errorf("the whole cap after Release: got %+v, want OK", res)
		}
	})
	t.Run("DistinctIDs", func(t *testing.T) {
		s := newStore(t)
		seen := map[uint64]bool{}
		for _, p := range []string{"key:a", "key:a", "key:b"} {
			r, res := s.Reserve(p, day, 1, 0, false)
			if !res.OK || r.ID() == 0 || seen[r.ID()] {
				t.Fatalf("Reserve %s: got ID %d (seen %v), want a new non-zero ID", p, r.ID(), seen)
			}
			seen[r.ID()] = true
		}
	})
	t.Run("ReserveFigures", func(t *testing.T) {
		s := newStore(t)
		s.Restore("key:a", day, 40_000)
		r, res := s.Reserve("key:a", day, 5_000, 50_000, true)
		if want := (meter.SpendResult{OK: true, SpentToday: 40_000, Limit: 50_000}); res != want {
			t.Fatalf("first: got %+v, want %+v", res, want)
		}
		_, res = s.Reserve("key:a", day, 6_000, 50_000, true)
		if want := (meter.SpendResult{Reason: meter.ReasonCapExceeded, SpentToday: 45_000, Reserved: 5_000, Limit: 50_000}); res != want {
			t.Fatalf("second: got %+v, want %+v", res, want)
		}
		if st := s.Status("key:a", day); st != (meter.SpendStatus{Committed: 40_000, Reserved: 5_000}) {
			t.Fatalf("Status: got %+v, want committed 40000, reserved 5000", st)
		}
		if st := s.Status("key:a", day+1); st != (meter.SpendStatus{}) {
			t.Fatalf("Status next day: got %+v, want zero", st)
		}
		s.Commit(r, nil)
		if st := s.Status("key:a", day); st.Committed != 45_000 || st.Reserved != 0 {
			t.Fatalf("Status after Commit: got %+v, want committed 45000", st)
		}
	})
	t.Run("InsufficientCredits", func(t *testing.T) {
		s := newStore(t)
		s.RestoreBalance("key:a", 9_999)
		_, res := s.Reserve("key:a", day, 10_000, 0, false)
		if want := (meter.SpendResult{Reason: meter.ReasonInsufficientCredits, Balance: 9_999, HasBalance: true}); res != want {
			t.Fatalf("got %+v, want %+v", res, want)
		}
	})
	t.Run("ZeroCost", func(t *testing.T) {
		s := newStore(t)
		r, res := s.Reserve("key:a", day, 0, 0, true)
		if !res.OK || r.ID() != 0 {
			t.Fatalf("got %+v, ID %d, want OK holding nothing (ID 0)", res, r.ID())
		}
		called := false
		if !s.Commit(r, func(meter.Committed) { called = true }) || !called {
			t.Fatal("Commit of a zero cost: want true with fn called")
		}
	})
	t.Run("TopUp", func(t *testing.T) {
		s := newStore(t)
		var seen []money.Micros
		fn := func(b money.Micros) { seen = append(seen, b) }
		if b, ok := s.TopUp("key:a", 500, fn); b != 500 || !ok {
			t.Fatalf("TopUp: got %d, %t, want 500, true", b, ok)
		}
		if b, ok := s.TopUp("key:a", -200, fn); b != 300 || !ok {
			t.Fatalf("TopUp correction: got %d, %t, want 300, true", b, ok)
		}
		if b, ok := s.TopUp("key:a", money.Micros(1<<63-1), fn); b != 300 || ok {
			t.Fatalf("TopUp past the maximum: got %d, %t, want 300, false", b, ok)
		}
		if len(seen) != 2 || seen[0] != 500 || seen[1] != 300 {
			t.Fatalf("fn saw %v, want [500 300]", seen)
		}
		if b, ok := s.Balance("key:a"); b != 300 || !ok {
			t.Fatalf("Balance: got %d, %t, want 300, true", b, ok)
		}
		if _, ok := s.Balance("key:none"); ok {
			t.Fatal("Balance of an unknown principal: got one, want none")
		}
	})
}
