package cluster_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// TestSettlements_ReconciledOnce: a settlement left pending by node a is
// claimed by a while it renews its claim; when a stops (dies), 60
// concurrent adopters on nodes b, c and d take it exactly once; a's
// claim is gone (Hold and Finish false), the adopter finishes it once,
// and nobody adopts it again.
func TestSettlements_ReconciledOnce(t *testing.T) {
	setup(t)
	base := fresh(t)
	const ttl = 300 * time.Millisecond
	node := func(n string) *cluster.Settlements {
		s := cluster.NewSettlements(base.WithNode(n))
		s.ClaimTTL = ttl
		return s
	}
	a := node("a")
	others := map[string]*cluster.Settlements{"b": node("b"), "c": node("c"), "d": node("d")}
	p := gateway.PendingSettlement{Key: x402.NonceKey{ChainID: 84532, Nonce: [32]byte{7}}, Tx: "0xabc",
		Principal: "wallet:0x01", RequestID: "req-1", Tool: "paid", Amount: 10_000, Deadline: time.Now().Add(time.Hour)}
	if err := a.Add(p); err != nil {
		t.Fatal(err)
	}
	// While a renews its claim nobody adopts it.
	for range 3 {
		if ok, err := a.Hold(p.Key); !ok || err != nil {
			t.Fatalf("Hold by its node: got %v, %v, want true", ok, err)
		}
		if got, err := others["b"].Adopt(); len(got) != 0 || err != nil {
			t.Fatalf("Adopt of a held claim: got %v, %v, want none", got, err)
		}
		time.Sleep(ttl / 3) // a renews within its TTL
	}
	// a dies: its claim lapses; concurrent adopters race for it.
	var (
		mu      sync.Mutex
		winners []string
		wg      sync.WaitGroup
		done    atomic.Bool
	)
	deadline := time.Now().Add(5 * time.Second)
	for i := range 60 {
		name := []string{"b", "c", "d"}[i%3]
		wg.Go(func() {
			for !done.Load() && time.Now().Before(deadline) {
				got, err := others[name].Adopt()
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) > 0 {
					if got[0].RequestID != p.RequestID || got[0].Key != p.Key || got[0].Amount != p.Amount {
						t.Errorf("adopted %+v, want %+v", got[0], p)
					}
					mu.Lock()
					winners = append(winners, name)
					mu.Unlock()
					done.Store(true)
				}
				time.Sleep(5 * time.Millisecond) // pacing the pollers
			}
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("adopters: got %v, want exactly one", winners)
	}
	// Further adopters race a little longer: still nobody else.
	if got, _ := others["b"].Adopt(); len(got) != 0 {
		t.Fatalf("Adopt after it was adopted: got %v, want none", got)
	}
	if ok, _ := a.Hold(p.Key); ok {
		t.Fatal("Hold by the dead node after adoption: got true, want false")
	}
	if ok, _ := a.Finish(p.Key); ok {
		t.Fatal("Finish by the dead node: got true, want false")
	}
	w := others[winners[0]]
	if ok, err := w.Finish(p.Key); !ok || err != nil {
		t.Fatalf("Finish by the adopter: got %v, %v, want true", ok, err)
	}
	if ok, _ := w.Finish(p.Key); ok {
		t.Fatal("second Finish: got true, want false")
	}
	time.Sleep(ttl + 50*time.Millisecond) // past any claim's TTL: a finished entry is not adoptable
	for n, s := range others {
		if got, _ := s.Adopt(); len(got) != 0 {
			t.Fatalf("node %s adopted a finished settlement: %v", n, got)
		}
	}
}
