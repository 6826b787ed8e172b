package cluster_test

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// TestQuotas_LeasesNeverOvershoot: three nodes lease slots of one shared
// window concurrently for 2 s (limit 300 in 400 ms, leases of up to 64
// slots for 50 ms, 8 callers per node, a seventh of the calls undone):
// no window-long interval of the times the calls were counted at holds
// more than the limit, no call is counted before its now, the window is
// used (several windows' worth of calls pass) and most calls are served
// from leases of more than one slot.
func TestQuotas_LeasesNeverOvershoot(t *testing.T) {
	srv := redistest.Start(t)
	c, err := cluster.Dial(srv.URL(), cluster.Options{NodeID: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const (
		limit  = 300
		window = 400 * time.Millisecond
		run    = 2 * time.Second
	)
	var qs []*cluster.Quotas
	for _, n := range []string{"a", "b", "c"} {
		q := cluster.NewQuotas(c.WithNode(n).WithPrefix("lease:"), window)
		q.LeaseFor, q.MaxLease, q.Nodes = 50*time.Millisecond, 64, func() int { return 3 }
		qs = append(qs, q)
	}
	var (
		mu     sync.Mutex
		stamps []int64 // µs, the admitted (and kept) calls' At
		leased atomic.Int64
	)
	deadline := time.Now().Add(run)
	var wg sync.WaitGroup
	for i := range 24 {
		q := qs[i%3]
		wg.Go(func() {
			id := uint64(i) << 32
			for time.Now().Before(deadline) {
				id++
				now := time.Now()
				r := q.Admit("key:lease", 1, limit, now, id)
				if r.Err != nil {
					t.Error(r.Err)
					return
				}
				if !r.Allowed {
					// Pace the refused caller (load shaping, not a wait
					// for a condition).
					time.Sleep(min(r.ResetIn, 5*time.Millisecond) + time.Millisecond)
					continue
				}
				if r.At.UnixMicro() < now.UnixMicro() {
					t.Errorf("call %d counted at %v, before its now %v", id, r.At, now)
				}
				if id%7 == 0 {
					q.Undo("key:lease", 1, id)
					continue
				}
				if r.At.UnixMicro() != now.UnixMicro() {
					leased.Add(1)
				}
				mu.Lock()
				stamps = append(stamps, r.At.UnixMicro())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(stamps)
	w := window.Microseconds()
	worst, lo := 0, 0
	for hi, s := range stamps {
		for s-stamps[lo] >= w { // the interval (s-w, s]
			lo++
		}
		worst = max(worst, hi-lo+1)
	}
	t.Logf("%d calls kept over %s (%d from leases of several slots); the fullest %s interval holds %d (limit %d)",
		len(stamps), run, leased.Load(), window, worst, limit)
	if worst > limit {
		t.Fatalf("a %s interval holds %d calls, over the limit %d", window, worst, limit)
	}
	if len(stamps) < 3*limit {
		t.Fatalf("only %d calls passed in %s at %d per %s: the leases starve the window", len(stamps), run, limit, window)
	}
	if leased.Load() < int64(len(stamps))/2 {
		t.Fatalf("only %d of %d calls served from leases of several slots", leased.Load(), len(stamps))
	}
	for _, q := range qs {
		q.Close()
	}
	if used, _ := qs[0].Peek("key:lease", 1, limit, time.Now()); used > limit {
		t.Fatalf("Peek after Close: got %d, want at most %d", used, limit)
	}
}

// TestSpend_SlicesNeverOvershoot: three nodes reserve $0.0001 calls under
// a $1 cap from budget slices, 8 callers each, a fifth of the calls
// released, until every caller is refused: Redis never holds more than
// the cap (committed and reserved, checked while they run), the
// committed spend is exactly what the callers committed (nothing lost or
// billed twice), most of the cap is used, most calls cost no round trip,
// and after Close nothing stays reserved.
func TestSpend_SlicesNeverOvershoot(t *testing.T) {
	srv := redistest.Start(t)
	const (
		capUSD = money.Micros(1_000_000)
		cost   = money.Micros(100)
	)
	day, _ := meter.DayOf(time.Now(), nil)
	ss := threeSpends(t, srv, "slice:", 0)
	before := roundTrips(t, srv)
	var committed, calls atomic.Int64
	stop := make(chan struct{})
	watched := make(chan money.Micros)
	go func() { // the cluster's figure, read while the callers run
		worst := money.Micros(0)
		defer func() { watched <- worst }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			st := ss[0].Status("key:slice", day)
			worst = max(worst, st.Committed+st.Reserved+ss[0].Unused("key:slice", day))
			time.Sleep(2 * time.Millisecond) // pacing the reader
		}
	}()
	var wg sync.WaitGroup
	for i := range 24 {
		s := ss[i%3]
		wg.Go(func() {
			for n := 0; ; n++ {
				r, res := s.Reserve("key:slice", day, cost, capUSD, true)
				calls.Add(1)
				if res.Err != nil {
					t.Error(res.Err)
					return
				}
				if !res.OK {
					if res.Reason != meter.ReasonCapExceeded {
						t.Errorf("refused: got %+v, want cap_exceeded", res)
					}
					return
				}
				if n%5 == 0 {
					if !s.Release(r) {
						t.Error("Release: got false")
					}
					continue
				}
				if !s.Commit(r, nil) {
					t.Error("Commit: got false")
					return
				}
				committed.Add(int64(cost))
			}
		})
	}
	wg.Wait()
	close(stop)
	worst := <-watched
	for _, s := range ss {
		s.Close()
	}
	st := ss[1].Status("key:slice", day)
	rtt := roundTrips(t, srv) - before
	t.Logf("%d reservations, %d round trips; committed %v of the %v cap; the highest figure seen while running %v",
		calls.Load(), rtt, st.Committed, capUSD, worst)
	if st.Committed != money.Micros(committed.Load()) {
		t.Fatalf("committed in Redis %v, want what the callers committed, %v", st.Committed, money.Micros(committed.Load()))
	}
	if st.Committed > capUSD || worst > capUSD {
		t.Fatalf("over the cap: committed %v, highest %v, cap %v", st.Committed, worst, capUSD)
	}
	if st.Reserved != 0 {
		t.Fatalf("reserved after Close: got %v, want 0", st.Reserved)
	}
	if st.Committed < capUSD/2 {
		t.Fatalf("only %v of the %v cap used: slices starve the budget", st.Committed, capUSD)
	}
	if rtt*4 > calls.Load() {
		t.Fatalf("%d round trips for %d reservations: slices do not serve most calls", rtt, calls.Load())
	}
}

// TestQuotas_CloseGivesBackLeases: a node that stops gives the unused
// slots of its leases back: the window then counts only its calls.
func TestQuotas_CloseGivesBackLeases(t *testing.T) {
	setup(t)
	q := cluster.NewQuotas(fresh(t), 0)
	now := time.Now()
	for i := range 40 { // leases grow: 1, 2, 4, 8, 16, 32
		if r := q.Admit("key:close", 0, 10_000, now, uint64(i+1)); !r.Allowed {
			t.Fatalf("call %d: %+v", i+1, r)
		}
	}
	used, _ := q.Peek("key:close", 0, 10_000, now)
	if used <= 40 {
		t.Fatalf("before Close: %d slots counted, want more than the 40 calls (a lease holds unused slots)", used)
	}
	q.Close()
	if used, _ = q.Peek("key:close", 0, 10_000, now); used != 40 {
		t.Fatalf("after Close: %d slots counted, want the 40 calls", used)
	}
}
