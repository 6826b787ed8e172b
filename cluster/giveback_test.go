package cluster_test

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// A Redis that stops answering (SIGSTOP, as a hang or a partition) still
// runs what it had received once it answers again. These tests take the
// node's side of that: what it sent and did not see confirmed may have
// happened, or may happen yet.

// sliceSpend is one node's Spend, its budget slice grown by ten calls
// committed under capUSD.
func sliceSpend(t *testing.T, srv *redistest.Server, prefix string, capUSD, cost money.Micros) (*cluster.Spend, meter.Day) {
	t.Helper()
	c, err := cluster.Dial(srv.URL(), cluster.Options{NodeID: "node-a", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s := cluster.NewSpend(c.WithPrefix(prefix))
	s.SliceFor = time.Hour // the slice stays current: only the test retires it
	day, _ := meter.DayOf(time.Now(), nil)
	for range 10 {
		r, res := s.Reserve("key:p", day, cost, capUSD, true)
		if !res.OK || !s.Commit(r, nil) {
			t.Fatalf("before the outage: %+v", res)
		}
	}
	s.Flush()
	if st := s.Status("key:p", day); st.Committed != 10*cost {
		t.Fatalf("committed before the outage: got %v, want %v", st.Committed, 10*cost)
	}
	if s.Unused("key:p", day) == 0 {
		t.Fatal("no unused slice after ten calls")
	}
	return s, day
}

// TestSpend_TimedOutGiveBack: the node gives back its slice's rest (the
// cap changed) while Redis hangs. It may have been given back, so the
// node never serves it as its local share; the give-back is sent again
// once Redis answers, and the new slice the timed-out script may have
// granted (an orphan nobody would commit) goes back too: nothing stays
// reserved.
func TestSpend_TimedOutGiveBack(t *testing.T) {
	srv := redistest.Start(t)
	const capUSD, cost = money.Micros(100_000), money.Micros(10)
	s, day := sliceSpend(t, srv, "gb:", capUSD, cost)
	srv.Pause()
	paused := true
	defer func() {
		if paused {
			srv.Resume()
		}
	}()
	if _, res := s.Reserve("key:p", day, cost, capUSD+1, true); res.Err == nil {
		t.Fatalf("Reserve under a new cap with Redis hanging: got %+v, want an error", res)
	}
	if _, _, ok := s.ReserveLocal("key:p", day, cost, capUSD, true); ok {
		t.Fatal("ReserveLocal from a slice whose give-back timed out: got ok, want none (Redis may have given it back)")
	}
	if n := s.GiveBacksPending(); n != 2 {
		t.Fatalf("give-backs pending: got %d, want 2 (the old slice's rest, the possible new slice)", n)
	}
	srv.Resume()
	paused = false
	deadline := time.Now().Add(5 * time.Second)
	for cluster.SendGiveBacks(s); s.GiveBacksPending() > 0; cluster.SendGiveBacks(s) {
		if time.Now().After(deadline) {
			t.Fatalf("give-backs still pending 5 s after Redis answers: %d", s.GiveBacksPending())
		}
	}
	st := s.Status("key:p", day)
	if st.Committed != 10*cost || st.Reserved != 0 {
		t.Fatalf("after Redis answers: committed %v reserved %v, want %v and 0", st.Committed, st.Reserved, 10*cost)
	}
}
