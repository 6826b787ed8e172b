package storetest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

// QuotaContract checks a QuotaStore with a 60 s window: exact sliding
// window semantics, also under 200 concurrent admits, and undo by call id.
func QuotaContract(t *testing.T, newStore func(t *testing.T) gateway.QuotaStore) {
	t.Run("ExactUnderConcurrency", func(t *testing.T) {
		q := newStore(t)
		var allowed atomic.Int32
		concurrently(200, func(i int) {
			now := t0.Add(time.Duration(i) * time.Millisecond)
			if q.Admit("key:hot", 2, 5, now, uint64(i+1)).Allowed {
				allowed.Add(1)
			}
		})
		if got := allowed.Load(); got != 5 {
			t.Fatalf("allowed: got %d, want 5", got)
		}
		if used, _ := q.Peek("key:hot", 2, 5, t0.Add(time.Second)); used != 5 {
			t.Fatalf("Peek used: got %d, want 5", used)
		}
	})
	t.Run("ExactUnderConcurrentUndo", func(t *testing.T) {
		// Half the admitted calls are undone at once: the window ends
		// holding exactly the limit, never more.
		q := newStore(t)
		var kept atomic.Int32
		concurrently(200, func(i int) {
			id := uint64(i + 1)
			r := q.Admit("key:hot", 0, 5, t0, id)
			if !r.Allowed {
				return
			}
			if i%2 == 0 {
				q.Undo("key:hot", 0, id)
				return
			}
			kept.Add(1)
		})
		used, _ := q.Peek("key:hot", 0, 5, t0)
		if used > 5 || int32(used) != kept.Load() {
			t.Fatalf("Peek used: got %d, want %d kept calls (at most 5)", used, kept.Load())
		}
	})
	t.Run("SlidingWindow", func(t *testing.T) {
		q := newStore(t)
		for i, at := range []time.Duration{0, 10 * time.Second} {
			r := q.Admit("key:a", 0, 2, t0.Add(at), uint64(i+1))
			if !r.Allowed || r.Used != i+1 || r.Limit != 2 {
				t.Fatalf("call %d: got %+v, want allowed, used %d, limit 2", i+1, r, i+1)
			}
		}
		r := q.Admit("key:a", 0, 2, t0.Add(22*time.Second), 3)
		if r.Allowed || r.Used != 2 || r.ResetIn != 38*time.Second {
			t.Fatalf("third call: got %+v, want denied, used 2, ResetIn 38s", r)
		}
		if r := q.Admit("key:a", 0, 2, t0.Add(60*time.Second-time.Nanosecond), 4); r.Allowed {
			t.Fatalf("just before the first call leaves: got %+v, want denied", r)
		}
		if r := q.Admit("key:a", 0, 2, t0.Add(60*time.Second), 5); !r.Allowed || r.Used != 2 || r.ResetIn != 10*time.Second {
			t.Fatalf("one window after the first call: got %+v, want allowed, used 2, ResetIn 10s", r)
		}
		if used, resetIn := q.Peek("key:a", 0, 2, t0.Add(65*time.Second)); used != 2 || resetIn != 5*time.Second {
			t.Fatalf("Peek: got %d, %s, want 2, 5s", used, resetIn)
		}
	})
	t.Run("UndoByCallID", func(t *testing.T) {
		q := newStore(t)
		for id := uint64(1); id <= 3; id++ {
			if r := q.Admit("key:a", 1, 3, t0, id); !r.Allowed {
				t.Fatalf("call %d: got denied, want allowed", id)
			}
		}
		q.Undo("key:a", 1, 2)
		q.Undo("key:a", 1, 2) // idempotent
		q.Undo("key:a", 1, 99)
		q.Undo("key:a", 0, 1) // another class
		q.Undo("key:b", 1, 1) // another principal
		if used, _ := q.Peek("key:a", 1, 3, t0); used != 2 {
			t.Fatalf("after undo: used got %d, want 2", used)
		}
		if r := q.Admit("key:a", 1, 3, t0, 4); !r.Allowed || r.Used != 3 {
			t.Fatalf("after undo: got %+v, want allowed, used 3", r)
		}
		if r := q.Admit("key:a", 1, 3, t0, 5); r.Allowed {
			t.Fatalf("at the limit: got %+v, want denied", r)
		}
	})
	t.Run("UnlimitedAndBlocked", func(t *testing.T) {
		q := newStore(t)
		for i := range 50 {
			if r := q.Admit("key:a", 0, -1, t0, uint64(i+1)); !r.Allowed || r.Used != 0 || r.Limit != -1 {
				t.Fatalf("unlimited: got %+v, want allowed, used 0, limit -1", r)
			}
		}
		if r := q.Admit("key:a", 1, 0, t0, 100); r.Allowed || r.ResetIn != 0 {
			t.Fatalf("blocked: got %+v, want denied with ResetIn 0", r)
		}
		if used, _ := q.Peek("key:a", 0, 5, t0); used != 0 {
			t.Fatalf("unlimited calls counted: used got %d, want 0", used)
		}
	})
	t.Run("PrincipalsAndClassesIndependent", func(t *testing.T) {
		q := newStore(t)
		id := uint64(0)
		for _, p := range []string{"key:a", "wallet:0x00000000000000000000000000000000000000b1"} {
			for c := range 3 {
				id++
				if r := q.Admit(p, c, 1, t0, id); !r.Allowed {
					t.Fatalf("%s class %d: got denied, want allowed", p, c)
				}
				id++
				if r := q.Admit(p, c, 1, t0, id); r.Allowed {
					t.Fatalf("%s class %d second call: got allowed, want denied", p, c)
				}
			}
		}
	})
	t.Run("LoweredLimitAppliesAtOnce", func(t *testing.T) {
		q := newStore(t)
		for i := range 5 {
			q.Admit("key:a", 0, 5, t0.Add(time.Duration(i)*time.Second), uint64(i+1))
		}
		// 5 calls at 0..4 s; at limit 2 one passes when the call at 3 s
		// leaves, at 63 s.
		if r := q.Admit("key:a", 0, 2, t0.Add(10*time.Second), 6); r.Allowed || r.Used != 5 || r.ResetIn != 53*time.Second {
			t.Fatalf("got %+v, want denied, used 5, ResetIn 53s", r)
		}
		if r := q.Admit("key:a", 0, 2, t0.Add(63*time.Second), 7); !r.Allowed || r.Used != 2 {
			t.Fatalf("at 63 s: got %+v, want allowed, used 2", r)
		}
	})
	t.Run("SweepKeepsWindow", func(t *testing.T) {
		q := newStore(t)
		q.Admit("key:old", 0, 3, t0, 1)
		q.Admit("key:new", 0, 3, t0.Add(30*time.Second), 2)
		q.Sweep(t0.Add(61 * time.Second))
		if used, _ := q.Peek("key:old", 0, 3, t0.Add(61*time.Second)); used != 0 {
			t.Errorf("key:old: used got %d, want 0", used)
		}
		if used, _ := q.Peek("key:new", 0, 3, t0.Add(61*time.Second)); used != 1 {
			t.Errorf("key:new: used got %d, want 1 (still in the window)", used)
		}
	})
}
