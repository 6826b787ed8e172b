package cluster_test

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
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
