package cluster_test

import (
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// TestSpend_LocalShareWhileRedisDown: three nodes spend under a cap from
// budget slices; Redis stops answering (SIGSTOP). Reserve then fails,
// and ReserveLocal hands out what each node's slice still holds,
// concurrently, and nothing more: the calls served before and during the
// outage never pass the cap. When Redis answers again, each node's
// contribution set from its own count (the ledger's role) is exact.
func TestSpend_LocalShareWhileRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	const (
		capUSD = money.Micros(2_000)
		cost   = money.Micros(10)
	)
	day, _ := meter.DayOf(time.Now(), nil)
	ss := threeSpends(t, srv, "share:", 200*time.Millisecond)
	for _, s := range ss {
		s.SliceFor = time.Hour // the slices stay current through the test
	}
	billed := make([]money.Micros, 3) // each node's ledger
	serve := func(i int, r meter.Reservation) {
		if !ss[i].Commit(r, nil) {
			t.Errorf("node %d: Commit: got false", i)
		}
		billed[i] += r.Cost()
	}
	// Before the outage: enough calls for the slices to grow past one call.
	for i := range ss {
		for range 40 {
			r, res := ss[i].Reserve("key:share", day, cost, capUSD, true)
			if !res.OK {
				t.Fatalf("node %d before the outage: %+v", i, res)
			}
			serve(i, r)
		}
	}
	for _, s := range ss {
		s.Flush()
	}
	before := billed[0] + billed[1] + billed[2]
	srv.Pause()
	defer srv.Resume()
	if _, res := ss[0].Reserve("key:share", day, cost, capUSD, true); res.Err == nil && res.OK {
		// The slice still serves (SliceFor is long): that is the local
		// share too; Reserve needs no Redis for it.
		t.Log("Reserve served from the current slice without Redis")
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	served := make([]int, 3)
	for i := range 24 {
		n := i % 3
		wg.Go(func() {
			for {
				r, res, ok := ss[n].ReserveLocal("key:share", day, cost, capUSD, true)
				if !ok {
					return // the share is spent
				}
				if !res.OK {
					t.Errorf("node %d: local share refused: %+v", n, res)
					return
				}
				mu.Lock()
				served[n]++
				billed[n] += r.Cost()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	during := billed[0] + billed[1] + billed[2] - before
	t.Logf("before the outage %v; served from the local shares during it %v (%v calls per node)", before, during, served)
	if during == 0 {
		t.Fatal("no local share: open principals' priced calls would all be refused")
	}
	if before+during > capUSD {
		t.Fatalf("billed %v under a cap of %v", before+during, capUSD)
	}
	if _, _, ok := ss[1].ReserveLocal("key:share", day, cost, capUSD/2, true); ok {
		t.Fatal("ReserveLocal under another cap than the slice's: got ok, want none")
	}
	srv.Resume()
	for i, s := range ss { // as at rejoin: each node sets its contribution from its ledger
		s.Restore("key:share", day, billed[i])
	}
	st := ss[2].Status("key:share", day)
	if st.Committed != billed[0]+billed[1]+billed[2] {
		t.Fatalf("committed after Redis is back: got %v, want the ledgers' %v", st.Committed, billed[0]+billed[1]+billed[2])
	}
}

// threeSpends is three nodes' Spends ("a", "b", "c", each counting three
// live nodes) on srv under prefix, one client with timeout (0: the
// default).
func threeSpends(t *testing.T, srv *redistest.Server, prefix string, timeout time.Duration) []*cluster.Spend {
	t.Helper()
	c, err := cluster.Dial(srv.URL(), cluster.Options{NodeID: "node-a", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var ss []*cluster.Spend
	for _, n := range []string{"a", "b", "c"} {
		s := cluster.NewSpend(c.WithNode(n).WithPrefix(prefix))
		s.Nodes = func() int { return 3 }
		ss = append(ss, s)
	}
	return ss
}
