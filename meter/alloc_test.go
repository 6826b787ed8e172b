//go:build !race

package meter

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate/money"
)

func TestQuotas_AdmitAllocs(t *testing.T) {
	q := NewQuotas(0)
	now := t0
	for i := 0; i < 100; i++ { // grow the ring to its limit
		q.Admit("key:warm", 1, 50, now, nextID())
		now = now.Add(100 * time.Millisecond)
	}
	tests := []struct {
		name  string
		limit int
		step  time.Duration
	}{
		{"Allowed", 50, 2 * time.Second}, // one call per 2 s stays under 50/min
		{"Denied", 1, 0},
		{"Blocked", 0, time.Second},
		{"Unlimited", -1, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(1000, func() {
				q.Admit("key:warm", 1, tt.limit, now, nextID())
				now = now.Add(tt.step)
			})
			if allocs != 0 {
				t.Errorf("got %v allocs per Admit, want 0", allocs)
			}
		})
	}
	t.Run("UndoAndPeek", func(t *testing.T) {
		allocs := testing.AllocsPerRun(1000, func() {
			id := nextID()
			q.Admit("key:warm", 1, 50, now, id)
			q.Undo("key:warm", 1, id)
			q.Peek("key:warm", 1, 50, now)
			now = now.Add(time.Second)
		})
		if allocs != 0 {
			t.Errorf("got %v allocs, want 0", allocs)
		}
	})
}

func TestSpend_ReserveAllocs(t *testing.T) {
	s := NewSpend()
	s.RestoreBalance("key:credits", 1<<40)
	for _, p := range []string{"key:postpaid", "key:credits"} {
		r, _ := s.Reserve(p, d0, 10, 1<<40, true)
		s.Commit(r, nil)
	}
	tests := []struct {
		name      string
		principal string
		limit     int64
	}{
		{"PostpaidCommit", "key:postpaid", 1 << 40},
		{"CreditsCommit", "key:credits", 1 << 40},
		{"CapExceeded", "key:postpaid", 0},
	}
	fn := func(Committed) {}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(1000, func() {
				r, res := s.Reserve(tt.principal, d0, 10, money.Micros(tt.limit), true)
				if res.OK {
					s.Commit(r, fn)
				}
			})
			if allocs != 0 {
				t.Errorf("got %v allocs per Reserve+Commit, want 0", allocs)
			}
		})
	}
	t.Run("Release", func(t *testing.T) {
		allocs := testing.AllocsPerRun(1000, func() {
			r, _ := s.Reserve("key:credits", d0, 10, 0, false)
			s.Release(r)
		})
		if allocs != 0 {
			t.Errorf("got %v allocs per Reserve+Release, want 0", allocs)
		}
	})
	t.Run("DayOf", func(t *testing.T) {
		ny := mustLoad(t, "America/New_York")
		allocs := testing.AllocsPerRun(1000, func() { DayOf(t0, ny) })
		if allocs != 0 {
			t.Errorf("got %v allocs per DayOf, want 0", allocs)
		}
	})
}

func TestSpend_StatusAllocs(t *testing.T) {
	s := NewSpend()
	r, _ := s.Reserve("key:a", d0, 10, 0, false)
	s.Commit(r, nil)
	allocs := testing.AllocsPerRun(1000, func() { s.Status("key:a", d0) })
	if allocs != 0 {
		t.Errorf("got %v allocs per Status, want 0", allocs)
	}
}
