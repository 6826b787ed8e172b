package meter

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

var lastID atomic.Uint64

// nextID returns a call id not used before in this test binary.
func nextID() uint64 { return lastID.Add(1) }

func TestQuotas_Admit(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		q := NewQuotas(0)
		for i := 1; i <= 3; i++ {
			now := t0.Add(time.Duration(i) * time.Second)
			r := q.Admit("key:a", 2, 3, now, nextID())
			if !r.Allowed || r.Used != i || r.Limit != 3 {
				t.Fatalf("call %d: got %+v, want allowed with used %d", i, r, i)
			}
			// The oldest call (at t0+1s) leaves at t0+61s.
			if want := 61*time.Second - time.Duration(i)*time.Second; r.ResetIn != want {
				t.Errorf("call %d: ResetIn got %s, want %s", i, r.ResetIn, want)
			}
			if !r.At.Equal(now) {
				t.Errorf("call %d: At got %s, want %s", i, r.At, now)
			}
		}
	})
	t.Run("Exceeded", func(t *testing.T) {
		q := NewQuotas(0)
		q.Admit("key:a", 0, 2, t0, nextID())
		q.Admit("key:a", 0, 2, t0.Add(10*time.Second), nextID())
		r := q.Admit("key:a", 0, 2, t0.Add(22*time.Second), nextID())
		if r.Allowed || r.Used != 2 || r.ResetIn != 38*time.Second || !r.At.IsZero() {
			t.Fatalf("got %+v, want denied, used 2, ResetIn 38s, zero At", r)
		}
		// Exactly one window after the first call, its slot is free again.
		if r := q.Admit("key:a", 0, 2, t0.Add(60*time.Second), nextID()); !r.Allowed || r.Used != 2 {
			t.Fatalf("at +60s: got %+v, want allowed with used 2", r)
		}
	})
	t.Run("Unlimited", func(t *testing.T) {
		q := NewQuotas(0)
		for i := 0; i < 100; i++ {
			if r := q.Admit("key:a", 1, -1, t0, nextID()); !r.Allowed || r.Used != 0 || r.Limit != -1 {
				t.Fatalf("got %+v, want allowed, used 0, limit -1", r)
			}
		}
		if got := q.Len(); got != 0 {
			t.Errorf("Len: got %d, want 0 (nothing stored)", got)
		}
	})
	t.Run("Blocked", func(t *testing.T) {
		q := NewQuotas(0)
		if r := q.Admit("key:a", 1, 0, t0, nextID()); r.Allowed || r.Used != 0 || r.ResetIn != 0 {
			t.Fatalf("got %+v, want denied, used 0, ResetIn 0", r)
		}
		if got := q.Len(); got != 0 {
			t.Errorf("Len: got %d, want 0", got)
		}
	})
	t.Run("ClassesAndPrincipalsIndependent", func(t *testing.T) {
		q := NewQuotas(0)
		for _, p := range []string{"key:a", "wallet:0xb"} {
			for c := 0; c < MaxClasses; c++ {
				if r := q.Admit(p, c, 1, t0, nextID()); !r.Allowed {
					t.Fatalf("%s class %d: got denied, want allowed", p, c)
				}
				if r := q.Admit(p, c, 1, t0, nextID()); r.Allowed {
					t.Fatalf("%s class %d second call: got allowed, want denied", p, c)
				}
			}
		}
	})
	t.Run("CustomWindow", func(t *testing.T) {
		q := NewQuotas(time.Second)
		q.Admit("key:a", 0, 1, t0, nextID())
		if r := q.Admit("key:a", 0, 1, t0.Add(999*time.Millisecond), nextID()); r.Allowed || r.ResetIn != time.Millisecond {
			t.Fatalf("got %+v, want denied with ResetIn 1ms", r)
		}
		if r := q.Admit("key:a", 0, 1, t0.Add(time.Second), nextID()); !r.Allowed {
			t.Fatalf("got %+v, want allowed", r)
		}
	})
	t.Run("ClassOutOfRangePanics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("got no panic, want one")
			}
		}()
		NewQuotas(0).Admit("key:a", MaxClasses, 1, t0, 1)
	})
	t.Run("LateClockStampedWithNewest", func(t *testing.T) {
		q := NewQuotas(0)
		q.Admit("key:a", 0, 3, t0.Add(10*time.Second), 1)
		late := t0.Add(9 * time.Second)
		r := q.Admit("key:a", 0, 3, late, 2)
		if !r.Allowed || !r.At.Equal(t0.Add(10*time.Second)) {
			t.Fatalf("got %+v, want allowed with At = t0+10s", r)
		}
		// Undo finds the skewed call by its id, whatever its stamp.
		q.Undo("key:a", 0, 2)
		if used, _ := q.Peek("key:a", 0, 3, t0.Add(11*time.Second)); used != 1 {
			t.Fatalf("after Undo(2): used got %d, want 1", used)
		}
		// The remaining call still leaves one window after t0+10s.
		if used, _ := q.Peek("key:a", 0, 3, t0.Add(70*time.Second)); used != 0 {
			t.Fatalf("at +70s: used got %d, want 0", used)
		}
	})
}

func TestQuotas_Undo(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		q := NewQuotas(0)
		q.Admit("key:a", 1, 2, t0, 1)
		q.Admit("key:a", 1, 2, t0.Add(time.Second), 2)
		if r := q.Admit("key:a", 1, 2, t0.Add(2*time.Second), 3); r.Allowed {
			t.Fatalf("third call: got allowed, want denied")
		}
		q.Undo("key:a", 1, 2)
		r := q.Admit("key:a", 1, 2, t0.Add(3*time.Second), 4)
		if !r.Allowed || r.Used != 2 {
			t.Fatalf("after undo: got %+v, want allowed, used 2", r)
		}
		// The remaining calls are 1 (t0) and 4 (t0+3s): undoing the
		// first frees it.
		q.Undo("key:a", 1, 1)
		if used, resetIn := q.Peek("key:a", 1, 2, t0.Add(4*time.Second)); used != 1 || resetIn != 59*time.Second {
			t.Fatalf("Peek: got %d, %s, want 1, 59s", used, resetIn)
		}
	})
	t.Run("TwiceIsHarmless", func(t *testing.T) {
		q := NewQuotas(0)
		q.Admit("key:a", 0, 3, t0, 1)
		q.Admit("key:a", 0, 3, t0.Add(time.Second), 2)
		q.Admit("key:a", 0, 3, t0.Add(2*time.Second), 3)
		q.Undo("key:a", 0, 2)
		q.Undo("key:a", 0, 2)
		if used, _ := q.Peek("key:a", 0, 3, t0.Add(3*time.Second)); used != 2 {
			t.Fatalf("used: got %d, want 2", used)
		}
	})
	t.Run("SameInstantUndoesOnlyItsCall", func(t *testing.T) {
		// Calls admitted at one instant are told apart by id: undoing
		// one twice gives back one slot, not two.
		q := NewQuotas(0)
		for id := uint64(1); id <= 3; id++ {
			q.Admit("key:a", 0, 3, t0, id)
		}
		q.Undo("key:a", 0, 2)
		q.Undo("key:a", 0, 2)
		if used, _ := q.Peek("key:a", 0, 3, t0); used != 2 {
			t.Fatalf("used: got %d, want 2", used)
		}
		q.Undo("key:a", 0, 3)
		if used, _ := q.Peek("key:a", 0, 3, t0); used != 1 {
			t.Fatalf("used: got %d, want 1", used)
		}
	})
	t.Run("UnknownIsNoop", func(t *testing.T) {
		q := NewQuotas(0)
		q.Undo("key:none", 0, 1)
		q.Admit("key:a", 0, 3, t0, 1)
		q.Undo("key:a", 0, 2)
		q.Undo("key:a", 2, 1)
		if used, _ := q.Peek("key:a", 0, 3, t0); used != 1 {
			t.Fatalf("used: got %d, want 1", used)
		}
	})
	t.Run("OutOfWindowIsNoop", func(t *testing.T) {
		q := NewQuotas(0)
		q.Admit("key:a", 0, 1, t0, 1)
		q.Admit("key:a", 0, 1, t0.Add(time.Minute), 2) // 1 left the window
		q.Undo("key:a", 0, 1)
		if r := q.Admit("key:a", 0, 1, t0.Add(time.Minute), 3); r.Allowed {
			t.Fatalf("got %+v, want denied (call 2 still counts)", r)
		}
	})
}

func TestQuotas_AdmitLimitChange(t *testing.T) {
	t.Run("Lowered", func(t *testing.T) {
		q := NewQuotas(0)
		for i := 0; i < 5; i++ {
			q.Admit("key:a", 0, 5, t0.Add(time.Duration(i)*time.Second), nextID())
		}
		// 5 calls at 0..4s; a limit of 2 admits only when 4 have left,
		// i.e. when the call at 3s leaves at 63s.
		r := q.Admit("key:a", 0, 2, t0.Add(10*time.Second), nextID())
		if r.Allowed || r.Used != 5 || r.ResetIn != 53*time.Second {
			t.Fatalf("got %+v, want denied, used 5, ResetIn 53s", r)
		}
		if r := q.Admit("key:a", 0, 2, t0.Add(62*time.Second), nextID()); r.Allowed {
			t.Fatalf("at 62s: got %+v, want denied", r)
		}
		if r := q.Admit("key:a", 0, 2, t0.Add(63*time.Second), nextID()); !r.Allowed || r.Used != 2 {
			t.Fatalf("at 63s: got %+v, want allowed, used 2", r)
		}
		if r := q.Admit("key:a", 0, 2, t0.Add(63*time.Second), nextID()); r.Allowed {
			t.Fatalf("at 63s again: got %+v, want denied", r)
		}
		if got := len(q.m.shardOf("key:a").m["key:a"].rings[0].buf); got != 2 {
			t.Errorf("ring capacity after lowering: got %d, want 2", got)
		}
	})
	t.Run("Raised", func(t *testing.T) {
		q := NewQuotas(0)
		q.Admit("key:a", 0, 2, t0, nextID())
		q.Admit("key:a", 0, 2, t0, nextID())
		for i := 3; i <= 40; i++ {
			if r := q.Admit("key:a", 0, 40, t0.Add(time.Second), nextID()); !r.Allowed || r.Used != i {
				t.Fatalf("call %d: got %+v, want allowed, used %d", i, r, i)
			}
		}
		if r := q.Admit("key:a", 0, 40, t0.Add(time.Second), nextID()); r.Allowed {
			t.Fatalf("call 41: got allowed, want denied")
		}
	})
	t.Run("ToZeroAndBack", func(t *testing.T) {
		q := NewQuotas(0)
		q.Admit("key:a", 0, 3, t0, nextID())
		if r := q.Admit("key:a", 0, 0, t0.Add(time.Second), nextID()); r.Allowed || r.Used != 1 || r.ResetIn != 0 {
			t.Fatalf("blocked: got %+v, want denied, used 1, ResetIn 0", r)
		}
		if r := q.Admit("key:a", 0, 3, t0.Add(2*time.Second), nextID()); !r.Allowed || r.Used != 2 {
			t.Fatalf("unblocked: got %+v, want allowed, used 2", r)
		}
	})
}

// TestQuotas_AdmitProperty drives random calls at millisecond-grained
// times (so calls exactly one window apart are common) against a model
// that keeps every admitted, not undone, call. Each decision must be
// exact: allowed iff fewer than limit calls lie in (t-window, t].
func TestQuotas_AdmitProperty(t *testing.T) {
	const window = 60 * time.Second
	for seed := uint64(1); seed <= 200; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			q := NewQuotas(window)
			limit := 1 + rng.IntN(12)
			changing := seed%4 == 0
			type call struct {
				at time.Time
				id uint64
			}
			var admitted []call // model, sorted by time
			inWindow := func(now time.Time) (n, first int) {
				first = sort.Search(len(admitted), func(i int) bool { return admitted[i].at.After(now.Add(-window)) })
				return len(admitted) - first, first
			}
			now := t0
			for step := 0; step < 600; step++ {
				switch rng.IntN(4) {
				case 0: // same instant
				case 1:
					now = now.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
				case 2:
					now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
				case 3:
					now = now.Add(time.Duration(rng.Int64N(int64(2 * time.Second))))
				}
				if changing && rng.IntN(30) == 0 {
					limit = rng.IntN(12)
				}
				n, first := inWindow(now)
				id := uint64(step + 1)
				r := q.Admit("key:p", 1, limit, now, id)
				if want := n < limit; r.Allowed != want {
					t.Fatalf("step %d at +%s limit %d with %d in window: allowed got %v, want %v",
						step, now.Sub(t0), limit, n, r.Allowed, want)
				}
				if r.Allowed {
					admitted = append(admitted, call{now, id})
					n++
					if want := admitted[first].at.Add(window).Sub(now); r.ResetIn != want {
						t.Fatalf("step %d: ResetIn got %s, want %s", step, r.ResetIn, want)
					}
					if rng.IntN(8) == 0 { // a later stage denied a call still in the window
						k := first + rng.IntN(n)
						q.Undo("key:p", 1, admitted[k].id)
						admitted = append(admitted[:k], admitted[k+1:]...)
						n--
					}
				} else if limit > 0 {
					if want := admitted[first+n-limit].at.Add(window).Sub(now); r.ResetIn != want {
						t.Fatalf("step %d: denied ResetIn got %s, want %s", step, r.ResetIn, want)
					}
				}
				if used, _ := q.Peek("key:p", 1, limit, now); used != n {
					t.Fatalf("step %d: Peek used got %d, want %d", step, used, n)
				}
			}
			// No window-long interval holds more than the largest limit.
			if !changing {
				for i, a := range admitted {
					j := sort.Search(len(admitted), func(k int) bool { return admitted[k].at.After(a.at.Add(-window)) })
					if n := i - j + 1; n > limit {
						t.Fatalf("%d calls in the window ending at +%s, limit %d", n, a.at.Sub(t0), limit)
					}
				}
			}
		})
	}
}

func TestQuotas_AdmitConcurrent(t *testing.T) {
	t.Run("OnePrincipal", func(t *testing.T) {
		q := NewQuotas(0)
		var wg sync.WaitGroup
		var mu sync.Mutex
		allowed := 0
		for i := 0; i < 200; i++ {
			wg.Go(func() {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				if q.Admit("key:hot", 2, 5, now, nextID()).Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if allowed != 5 {
			t.Fatalf("allowed: got %d, want 5", allowed)
		}
	})
	t.Run("ManyPrincipalsWithUndo", func(t *testing.T) {
		q := NewQuotas(0)
		const principals = 50
		names := make([]string, principals)
		for i := range names {
			names[i] = fmt.Sprintf("key:%d", i)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		kept := make(map[string]int)
		for g := 0; g < 200; g++ {
			wg.Go(func() {
				for i := 0; i < 100; i++ {
					p := names[(g+i)%principals]
					id := nextID()
					r := q.Admit(p, i%MaxClasses, 5, t0.Add(time.Duration(i)*time.Millisecond), id)
					if !r.Allowed {
						continue
					}
					if i%2 == 0 {
						q.Undo(p, i%MaxClasses, id)
						continue
					}
					mu.Lock()
					kept[p]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, p := range names {
			total := 0
			for c := 0; c < MaxClasses; c++ {
				used, _ := q.Peek(p, c, 5, t0.Add(time.Second))
				if used > 5 {
					t.Errorf("%s class %d: used got %d, want <= 5", p, c, used)
				}
				total += used
			}
			if total != kept[p] {
				t.Errorf("%s: used got %d, want %d (kept calls)", p, total, kept[p])
			}
		}
	})
}

func TestQuotas_Peek(t *testing.T) {
	q := NewQuotas(0)
	q.Admit("key:a", 0, 3, t0, nextID())
	q.Admit("key:a", 0, 3, t0.Add(20*time.Second), nextID())
	tests := []struct {
		name      string
		principal string
		limit     int
		at        time.Duration
		used      int
		resetIn   time.Duration
	}{
		{"Unknown", "key:b", 3, 0, 0, 0},
		{"UnderLimit", "key:a", 3, 30 * time.Second, 2, 30 * time.Second},
		{"AtLimit", "key:a", 2, 30 * time.Second, 2, 30 * time.Second},
		{"OverLoweredLimit", "key:a", 1, 30 * time.Second, 2, 50 * time.Second},
		{"Blocked", "key:a", 0, 30 * time.Second, 2, 0},
		{"OneLeft", "key:a", 3, 60 * time.Second, 1, 20 * time.Second},
		{"AllLeft", "key:a", 3, 80 * time.Second, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used, resetIn := q.Peek(tt.principal, 0, tt.limit, t0.Add(tt.at))
			if used != tt.used || resetIn != tt.resetIn {
				t.Errorf("got %d, %s, want %d, %s", used, resetIn, tt.used, tt.resetIn)
			}
		})
	}
	// Peek counted nothing.
	if r := q.Admit("key:a", 0, 3, t0.Add(30*time.Second), nextID()); !r.Allowed || r.Used != 3 {
		t.Errorf("Admit after Peek: got %+v, want allowed, used 3", r)
	}
}

func TestQuotas_Sweep(t *testing.T) {
	t.Run("EvictsIdle", func(t *testing.T) {
		q := NewQuotas(0)
		for i := 0; i < 1000; i++ {
			q.Admit(fmt.Sprintf("key:%d", i), i%MaxClasses, 3, t0.Add(time.Duration(i)*time.Millisecond), nextID())
		}
		q.Admit("key:0", 2, 3, t0.Add(30*time.Second), nextID())
		if got := q.Len(); got != 1000 {
			t.Fatalf("Len: got %d, want 1000", got)
		}
		if got := q.Sweep(t0.Add(59 * time.Second)); got != 0 {
			t.Fatalf("Sweep within the window: evicted got %d, want 0", got)
		}
		if got := q.Sweep(t0.Add(60*time.Second + time.Second)); got != 999 {
			t.Fatalf("Sweep after the window: evicted got %d, want 999", got)
		}
		if got := q.Len(); got != 1 {
			t.Fatalf("Len: got %d, want 1", got)
		}
		// key:0 keeps its class-2 call, and lost its expired class-0 call.
		if used, _ := q.Peek("key:0", 2, 3, t0.Add(61*time.Second)); used != 1 {
			t.Errorf("key:0 class 2: used got %d, want 1", used)
		}
		if got := q.Sweep(t0.Add(90 * time.Second)); got != 1 {
			t.Errorf("final Sweep: evicted got %d, want 1", got)
		}
	})
	t.Run("BoundedUnderChurn", func(t *testing.T) {
		q := NewQuotas(0)
		now := t0
		for round := 0; round < 20; round++ {
			for i := 0; i < 2000; i++ {
				q.Admit(fmt.Sprintf("wallet:%d-%d", round, i), 0, 5, now, nextID())
			}
			if got := q.Len(); got > 4000 {
				t.Fatalf("round %d: Len got %d, want <= 4000", round, got)
			}
			now = now.Add(30 * time.Second)
			q.Sweep(now)
		}
		now = now.Add(time.Minute)
		q.Sweep(now)
		if got := q.Len(); got != 0 {
			t.Fatalf("Len: got %d, want 0", got)
		}
		for i := range q.m.shards {
			if sh := &q.m.shards[i]; sh.m != nil || sh.peak != 0 {
				t.Fatalf("shard %d: map kept (peak %d), want released", i, sh.peak)
			}
		}
	})
}
