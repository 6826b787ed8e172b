package cluster_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/gateway/storetest"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/x402"
)

// The Redis implementations against the gateway's contract suites, on a
// real redis-server; each store gets its own key prefix on one server.

var (
	client *cluster.Client // the current test's, set by setup
	stores atomic.Int64
)

// fresh returns a client on the shared test server with a prefix of its
// own: an empty store.
func fresh(t *testing.T) *cluster.Client {
	t.Helper()
	if client == nil {
		t.Fatal("no redis client")
	}
	return client.WithPrefix(fmt.Sprintf("t%d:", stores.Add(1)))
}

func dial(t testing.TB) *cluster.Client {
	t.Helper()
	s := redistest.Start(t)
	c, err := cluster.Dial(s.URL(), cluster.Options{NodeID: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// setup starts a redis-server for t and points client at it.
func setup(t *testing.T) {
	t.Helper()
	client = dial(t)
}

func TestQuotaContract(t *testing.T) {
	setup(t)
	storetest.QuotaContract(t, func(t *testing.T) gateway.QuotaStore { return cluster.NewQuotas(fresh(t), 0) })
}

func TestSpendContract(t *testing.T) {
	setup(t)
	storetest.SpendContract(t, func(t *testing.T) gateway.SpendStore { return cluster.NewSpend(fresh(t)) })
}

func TestNonceContract(t *testing.T) {
	setup(t)
	storetest.NonceContract(t, func(t *testing.T, now func() time.Time) gateway.NonceStore {
		n := cluster.NewNonces(fresh(t))
		n.Now = now
		return n
	})
}

// TestQuotas_AcrossNodes: three nodes' stores on one Redis share one
// window: 200 concurrent admits spread over them at limit 5 admit 5.
func TestQuotas_AcrossNodes(t *testing.T) {
	setup(t)
	base := fresh(t)
	var qs []*cluster.Quotas
	for _, n := range []string{"a", "b", "c"} {
		qs = append(qs, cluster.NewQuotas(base.WithNode(n), 0))
	}
	now := time.Now()
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			// Call ids repeat across nodes: the members stay distinct.
			if qs[i%3].Admit("key:hot", 2, 5, now, uint64(i/3+1)).Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 5 {
		t.Fatalf("allowed: got %d, want 5", got)
	}
}

// TestSpend_AcrossNodes: per-node contributions add up, Restore re-sets
// a node's own contribution (never adds), and a dead node's reservation
// expires.
func TestSpend_AcrossNodes(t *testing.T) {
	setup(t)
	base := fresh(t)
	a, b := cluster.NewSpend(base.WithNode("a")), cluster.NewSpend(base.WithNode("b"))
	day, _ := meter.DayOf(time.Now(), nil)
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range 200 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			r, res := s.Reserve("key:hot", day, 10_000, 50_000, true)
			if res.Err != nil {
				t.Error(res.Err)
			}
			if res.OK && s.Commit(r, nil) {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if got := ok.Load(); got != 5 {
		t.Fatalf("billed: got %d, want 5", got)
	}
	if st := b.Status("key:hot", day); st.Committed != 50_000 {
		t.Fatalf("Status: got %+v, want committed 50000", st)
	}
	t.Run("RestoreIdempotent", func(t *testing.T) {
		for range 3 { // as after Redis lost data, restored by both nodes, twice
			a.Restore("key:r", day, 30_000)
			b.Restore("key:r", day, 12_000)
		}
		if st := a.Status("key:r", day); st.Committed != 42_000 {
			t.Fatalf("Status: got %+v, want committed 42000 (30000 + 12000)", st)
		}
	})
	t.Run("DeadNodeReservationExpires", func(t *testing.T) {
		dead := cluster.NewSpend(base.WithNode("dead"))
		dead.TTL = 200 * time.Millisecond
		if _, res := dead.Reserve("key:d", day, 50_000, 50_000, true); !res.OK {
			t.Fatalf("Reserve: got %+v", res)
		}
		if _, res := a.Reserve("key:d", day, 1, 50_000, true); res.OK || res.Reason != meter.ReasonCapExceeded {
			t.Fatalf("while held: got %+v, want cap_exceeded", res)
		}
		time.Sleep(300 * time.Millisecond)
		r, res := a.Reserve("key:d", day, 50_000, 50_000, true)
		if !res.OK || res.Reserved != 0 {
			t.Fatalf("after the TTL: got %+v, want OK with nothing reserved", res)
		}
		a.Release(r)
	})
}

// TestStores_RedisDown: with the server gone, every decision reports an
// error instead of deciding (the gateway then refuses or counts locally).
func TestStores_RedisDown(t *testing.T) {
	s := redistest.Start(t)
	c, err := cluster.Dial(s.URL(), cluster.Options{NodeID: "node-a", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	q, sp, n := cluster.NewQuotas(c, 0), cluster.NewSpend(c), cluster.NewNonces(c)
	if r := q.Admit("key:a", 0, 5, time.Now(), 1); !r.Allowed || r.Err != nil {
		t.Fatalf("Admit while up: got %+v", r)
	}
	s.Stop()
	if r := q.Admit("key:a", 0, 5, time.Now(), 2); r.Allowed || !errors.Is(r.Err, cluster.ErrRedis) {
		t.Fatalf("Admit while down: got %+v, want Err wrapping ErrRedis", r)
	}
	day, _ := meter.DayOf(time.Now(), nil)
	if _, r := sp.Reserve("key:a", day, 10, 100, true); r.OK || !errors.Is(r.Err, cluster.ErrRedis) {
		t.Fatalf("Reserve while down: got %+v, want Err", r)
	}
	if _, err := n.Lock(x402.NonceKey{ChainID: 1}, time.Now().Add(time.Minute)); !errors.Is(err, cluster.ErrRedis) {
		t.Fatalf("Lock while down: got %v, want ErrRedis", err)
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"Password", "redis://:s3cret@10.0.0.5:6379/0", "redis://:xxxxx@10.0.0.5:6379/0"},
		{"UserPassword", "rediss://app:s3cret@r.example:6380/1", "rediss://app:xxxxx@r.example:6380/1"},
		{"NoPassword", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cluster.Redact(tc.in); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := cluster.Dial("redis://:s3cret@127.0.0.1:1/0", cluster.Options{NodeID: "n"}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Dial of a closed port: got %v, want an error without the password", err)
	}
}
