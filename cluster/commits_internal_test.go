package cluster

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// TestCommitBatch_SentTwice: a batch whose answer timed out may have run
// in Redis, and its retry runs it again (as does a batch that is late
// behind a newer one). Its figures are the slice's totals, so the calls
// count once either way.
func TestCommitBatch_SentTwice(t *testing.T) {
	srv := redistest.Start(t)
	c, err := Dial(srv.URL(), Options{NodeID: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s := NewSpend(c)
	s.SliceFor = time.Hour
	const capUSD, cost = money.Micros(100_000), money.Micros(10)
	day, _ := meter.DayOf(time.Now(), nil)
	for range 10 {
		r, res := s.Reserve("key:p", day, cost, capUSD, true)
		if !res.OK || !s.Commit(r, nil) {
			t.Fatalf("reserve and commit: %+v", res)
		}
	}
	s.Flush()
	ss := s.slicesOf("key:p", day)
	ss.mu.Lock()
	sl := ss.cur
	ss.mu.Unlock()
	if sl == nil || sl.free() < 2*cost {
		t.Fatal("no slice with room for two calls after ten")
	}
	// Two more calls from the slice, their commits built by hand.
	var items []commitItem
	for range 2 {
		r, res := s.Reserve("key:p", day, cost, capUSD, true)
		if !res.OK || s.claim(r.ID(), true).sl != sl {
			t.Fatalf("from the slice: %+v", res)
		}
		used, released := s.sliceCommitted(r, sl, cost)
		items = append(items, commitItem{"key:p", day, sl.id, used, released, r.ID()})
	}
	for _, batch := range [][]commitItem{items, items, items[1:], items[:1]} {
		if err := s.commitBatch(batch); err != nil {
			t.Fatal(err)
		}
		if st := s.Status("key:p", day); st.Committed != 12*cost {
			t.Fatalf("committed after a batch sent again: got %v, want %v (twelve calls once)", st.Committed, 12*cost)
		}
	}
}
