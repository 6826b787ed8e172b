package cluster_test

import (
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// TestDecider_AdmitReserve: quota and spend in one script. A call the
// cap refuses takes no quota slot; a call the quota refuses holds
// nothing; concurrent calls over three nodes never pass either limit.
func TestDecider_AdmitReserve(t *testing.T) {
	setup(t)
	day, _ := meter.DayOf(time.Now(), time.UTC)
	t.Run("CapRefusalTakesNoSlot", func(t *testing.T) {
		c := fresh(t)
		q, s := cluster.NewQuotas(c, 0), cluster.NewSpend(c)
		d := cluster.NewDecider(q, s)
		now := time.Now()
		qr, res, sr := d.AdmitReserve("key:a", 0, 5, now, 1, day, 30_000, 50_000, true)
		if !qr.Allowed || !sr.OK || qr.At.IsZero() || qr.Used != 1 {
			t.Fatalf("first: got %+v %+v, want admitted and reserved", qr, sr)
		}
		qr, _, sr = d.AdmitReserve("key:a", 0, 5, now, 2, day, 30_000, 50_000, true)
		if !qr.Allowed || sr.OK || sr.Reason != meter.ReasonCapExceeded || !qr.At.IsZero() {
			t.Fatalf("over the cap: got %+v %+v, want cap refusal without a slot", qr, sr)
		}
		if used, _ := q.Peek("key:a", 0, 5, now); used != 1 {
			t.Fatalf("slots after a cap refusal: got %d, want 1", used)
		}
		if !s.Commit(res, nil) {
			t.Fatal("Commit of the one-script reservation: got false")
		}
		if st := s.Status("key:a", day); st.Committed != 30_000 || st.Reserved != 0 {
			t.Fatalf("status: got %+v, want 30000 committed", st)
		}
	})
	t.Run("QuotaRefusalHoldsNothing", func(t *testing.T) {
		c := fresh(t)
		q, s := cluster.NewQuotas(c, 0), cluster.NewSpend(c)
		d := cluster.NewDecider(q, s)
		now := time.Now()
		d.AdmitReserve("key:b", 1, 1, now, 1, day, 10_000, 0, false)
		qr, res, sr := d.AdmitReserve("key:b", 1, 1, now, 2, day, 10_000, 0, false)
		if qr.Allowed || res.ID() != 0 || sr.OK {
			t.Fatalf("over the quota: got %+v, %+v, want refused, nothing held", qr, sr)
		}
		if st := s.Status("key:b", day); st.Reserved != 10_000 {
			t.Fatalf("reserved: got %d, want only the first call's 10000", st.Reserved)
		}
	})
	t.Run("Credits", func(t *testing.T) {
		c := fresh(t)
		d := cluster.NewDecider(cluster.NewQuotas(c, 0), cluster.NewSpend(c))
		s := cluster.NewSpend(c)
		s.TopUp("key:c", 15_000, nil)
		_, _, sr := d.AdmitReserve("key:c", 0, -1, time.Now(), 1, day, 10_000, 0, false)
		_, _, sr2 := d.AdmitReserve("key:c", 0, -1, time.Now(), 2, day, 10_000, 0, false)
		if !sr.OK || sr2.OK || sr2.Reason != meter.ReasonInsufficientCredits || sr2.Balance != 5_000 {
			t.Fatalf("credits: got %+v then %+v, want ok then insufficient with 5000 available", sr, sr2)
		}
	})
	t.Run("ConcurrentAcrossNodes", func(t *testing.T) {
		c := fresh(t)
		var ds []*cluster.Decider
		for _, n := range []string{"a", "b", "c"} {
			cn := c.WithNode(n)
			ds = append(ds, cluster.NewDecider(cluster.NewQuotas(cn, 0), cluster.NewSpend(cn)))
		}
		var mu sync.Mutex
		admitted, reserved := 0, 0
		var wg sync.WaitGroup
		now := time.Now()
		for i := range 200 {
			wg.Go(func() {
				qr, _, sr := ds[i%3].AdmitReserve("key:d", 2, 5, now, uint64(i+1), day, money.Micros(10_000), 30_000, true)
				mu.Lock()
				if qr.Allowed && !qr.At.IsZero() {
					admitted++
				}
				if sr.OK {
					reserved++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		if reserved != 3 || admitted != 3 {
			t.Fatalf("200 calls at quota 5 and a cap of 3 calls: got %d slots and %d reservations, want 3 and 3", admitted, reserved)
		}
	})
}
