package meter

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/toolgate/toolgate/money"
)

func TestSpend_ReserveWithGroup(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		s := NewSpend()
		s.Restore("group:team", d0, 30)
		r, res, gr, gres := s.ReserveWithGroup("key:a", d0, 10, 100, true, "group:team", d0, 50)
		if !res.OK || !gres.OK || gres.SpentToday != 30 || gres.Limit != 50 {
			t.Fatalf("got %+v, %+v, want both OK, group SpentToday 30", res, gres)
		}
		if r.Principal() != "key:a" || gr.Principal() != "group:team" || r.ID() == gr.ID() || gr.Cost() != 10 {
			t.Fatalf("reservations %+v, %+v", r, gr)
		}
		if got := s.Status("group:team", d0); got.Reserved != 10 || got.Committed != 30 {
			t.Fatalf("group status %+v, want 10 reserved, 30 committed", got)
		}
		if !s.Commit(gr, nil) || !s.Release(r) || s.Release(gr) {
			t.Fatal("each reservation closes once, on its own")
		}
		if got, want := s.Today("group:team", d0), money.Micros(40); got != want {
			t.Fatalf("group today: got %d, want %d", got, want)
		}
		if got := s.Today("key:a", d0); got != 0 {
			t.Fatalf("member today: got %d, want 0 (released)", got)
		}
	})
	t.Run("MemberRefused", func(t *testing.T) {
		s := NewSpend()
		_, res, gr, gres := s.ReserveWithGroup("key:a", d0, 10, 5, true, "group:team", d0, 50)
		if res.OK || res.Reason != ReasonCapExceeded || gr.ID() != 0 || gres.OK || gres.Limit != 0 {
			t.Fatalf("got %+v, %+v, want the member's cap refusal and no group reservation", res, gres)
		}
		if got := s.Today("group:team", d0); got != 0 {
			t.Fatalf("group today: got %d, want 0", got)
		}
	})
	t.Run("GroupRefused", func(t *testing.T) {
		s := NewSpend()
		r, res, _, gres := s.ReserveWithGroup("key:a", d0, 10, 100, true, "group:team", d0, 5)
		if !res.OK || gres.OK || gres.Reason != ReasonCapExceeded {
			t.Fatalf("got %+v, %+v, want the member's reserved and the group's refused", res, gres)
		}
		if !s.Release(r) {
			t.Fatal("the member's reservation is the caller's to release")
		}
	})
	t.Run("AfterGroupSwept", func(t *testing.T) {
		// The member's account links its group's; once the group's is
		// swept, the next call finds (and links) a fresh one.
		s := NewSpend()
		s.RestoreBalance("key:a", 1000) // the member is kept by Sweep
		_, _, gr, _ := s.ReserveWithGroup("key:a", d0, 10, 0, false, "group:team", d0, 100)
		s.Release(gr)
		now := (d0 + 5).Time()
		s.Sweep(now) // drops d0 from the group: nothing left, evicted
		if _, ok := s.Balance("group:team"); ok || s.Len() != 1 {
			t.Fatalf("Len %d after Sweep, want the member only", s.Len())
		}
		_, res, gr2, gres := s.ReserveWithGroup("key:a", d0+5, 10, 0, false, "group:team", d0+5, 100)
		if !res.OK || !gres.OK || gres.SpentToday != 0 {
			t.Fatalf("after the group was swept: %+v, %+v", res, gres)
		}
		if got := s.Status("group:team", d0+5); got.Reserved != 10 {
			t.Fatalf("group status %+v, want 10 reserved in the live account", got)
		}
		s.Commit(gr2, nil)
		if got := s.Today("group:team", d0+5); got != 10 {
			t.Fatalf("group today: got %d, want 10", got)
		}
	})
	t.Run("OtherGroup", func(t *testing.T) {
		// A member moved to another group reserves against the new one.
		s := NewSpend()
		s.ReserveWithGroup("key:a", d0, 10, 0, false, "group:one", d0, 100)
		s.ReserveWithGroup("key:a", d0, 10, 0, false, "group:two", d0, 100)
		if s.Today("group:one", d0) != 10 || s.Today("group:two", d0) != 10 {
			t.Fatalf("group one %d, two %d, want 10 each", s.Today("group:one", d0), s.Today("group:two", d0))
		}
	})
	t.Run("CapHoldsAcrossMembers", func(t *testing.T) {
		// 200 members at once against a group cap of 7 calls, each also
		// under its own cap: the group never goes over, and each member's
		// reservation is refused or kept as the caller decides.
		s := NewSpend()
		var wg sync.WaitGroup
		var both atomic.Int32
		for i := 0; i < 200; i++ {
			wg.Go(func() {
				p := fmt.Sprintf("key:m%d", i%50)
				r, res, gr, gres := s.ReserveWithGroup(p, d0, 10_000, 1_000_000, true, "group:team", d0, 70_000)
				if !res.OK {
					t.Errorf("member %s refused: %+v", p, res)
					return
				}
				if !gres.OK {
					s.Release(r)
					return
				}
				both.Add(1)
				s.Commit(r, nil)
				s.Commit(gr, nil)
			})
		}
		wg.Wait()
		if got := both.Load(); got != 7 {
			t.Fatalf("admitted: got %d, want 7", got)
		}
		if got := s.Today("group:team", d0); got != 70_000 {
			t.Fatalf("group today: got %d, want 70000", got)
		}
		var members money.Micros
		for i := 0; i < 50; i++ {
			members += s.Today(fmt.Sprintf("key:m%d", i), d0)
		}
		if members != 70_000 {
			t.Fatalf("members' spend: got %d, want 70000 (refused calls released)", members)
		}
	})
	t.Run("SweepConcurrent", func(t *testing.T) {
		// Sweep runs while members reserve (the member's account is held
		// while the group's is locked): no deadlock, nothing lost.
		s := NewSpend()
		stop := make(chan struct{})
		var sweeps sync.WaitGroup
		sweeps.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					s.Sweep((d0 + 10).Time())
				}
			}
		})
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Go(func() {
				for j := 0; j < 500; j++ {
					p := fmt.Sprintf("key:m%d", (i*500+j)%64)
					_, _, gr, gres := s.ReserveWithGroup(p, d0+10, 1, 0, false, "group:team", d0+10, 1<<40)
					if gres.OK {
						s.Commit(gr, nil)
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		sweeps.Wait()
		if got := s.Today("group:team", d0+10); got != 4000 {
			t.Fatalf("group today: got %d, want 4000", got)
		}
	})
}

func TestSpend_ReleaseAfterSweep(t *testing.T) {
	// A reservation remembers its account: once closed and the account
	// swept, a second Release or Commit finds it dead and does nothing,
	// also to the principal's fresh account.
	s := NewSpend()
	r, _ := s.Reserve("key:a", d0, 10, 0, false)
	if !s.Release(r) {
		t.Fatal("first Release: got false")
	}
	s.Sweep((d0 + 5).Time())
	if s.Len() != 0 {
		t.Fatalf("Len %d, want 0 (swept)", s.Len())
	}
	r2, _ := s.Reserve("key:a", d0+5, 10, 0, false)
	if s.Release(r) || s.Commit(r, nil) {
		t.Fatal("a closed reservation of a swept account: got true, want false")
	}
	if got := s.Status("key:a", d0+5); got.Reserved != 10 {
		t.Fatalf("fresh account %+v, want its reservation untouched", got)
	}
	if !s.Commit(r2, nil) || s.Today("key:a", d0+5) != 10 {
		t.Fatal("the fresh reservation commits")
	}
}
