package cluster_test

import (
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/gateway/storetest"
	"github.com/toolgate/toolgate/meter"
)

// TestRedisCluster runs the guarantees on a Redis Cluster of three
// masters (redis-server --cluster-enabled yes ×3, redis-cli --cluster
// create): every script touches the keys of one hash tag ({principal},
// {state}, {nodes}), so each runs on one shard. The contract suites, the
// one-script decision raced over three nodes' stores and the key and
// override feed all hold as on one Redis.
func TestRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	c, err := cluster.Dial(rc.URL(), cluster.Options{NodeID: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	client = c
	t.Run("QuotaContract", func(t *testing.T) {
		storetest.QuotaContract(t, func(t *testing.T) gateway.QuotaStore { return cluster.NewQuotas(fresh(t), 0) })
	})
	t.Run("SpendContract", func(t *testing.T) {
		storetest.SpendContract(t, func(t *testing.T) gateway.SpendStore { return cluster.NewSpend(fresh(t)) })
	})
	t.Run("NonceContract", func(t *testing.T) {
		storetest.NonceContract(t, func(t *testing.T, now func() time.Time) gateway.NonceStore {
			n := cluster.NewNonces(fresh(t))
			n.Now = now
			return n
		})
	})
	t.Run("AnswerContract", func(t *testing.T) {
		storetest.AnswerContract(t, func(t *testing.T) gateway.AnswerStore { return cluster.NewAnswers(fresh(t)) })
	})
	t.Run("KeyContract", func(t *testing.T) {
		storetest.KeyContract(t, func(t *testing.T) gateway.KeyStore { return node(t, fresh(t), t.TempDir(), -1).Keys() })
	})
	t.Run("OverrideContract", func(t *testing.T) {
		storetest.OverrideContract(t, func(t *testing.T) gateway.OverrideStore {
			return node(t, fresh(t), t.TempDir(), -1).Overrides()
		})
	})
	t.Run("ApprovalContract", func(t *testing.T) {
		storetest.ApprovalContract(t, func(t *testing.T) gateway.ApprovalStore { return cluster.NewApprovals(fresh(t)) })
	})
	t.Run("DecisionRace", func(t *testing.T) {
		base := fresh(t)
		day, _ := meter.DayOf(time.Now(), time.UTC)
		var ds []*cluster.Decider
		var qs []*cluster.Quotas
		for _, n := range []string{"a", "b", "c"} {
			cn := base.WithNode(n)
			q := cluster.NewQuotas(cn, 0)
			qs = append(qs, q)
			ds = append(ds, cluster.NewDecider(q, cluster.NewSpend(cn)))
		}
		// Many principals, so that the calls land on every shard.
		principals := []string{"key:k_a", "key:k_b", "key:k_c", "key:k_d", "key:k_e", "key:k_f"}
		now := time.Now()
		var mu sync.Mutex
		reserved := map[string]int{}
		freeAdmitted := map[string]int{}
		var wg sync.WaitGroup
		for i := range 600 {
			wg.Go(func() {
				p := principals[i%len(principals)]
				_, _, sr := ds[i%3].AdmitReserve(p, 2, 100, now, uint64(i+1), day, 10_000, 50_000, true)
				q := qs[(i+1)%3].Admit(p, 1, 5, now, uint64(i+1))
				mu.Lock()
				if sr.OK {
					reserved[p]++
				}
				if q.Allowed {
					freeAdmitted[p]++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		for _, p := range principals {
			if reserved[p] != 5 || freeAdmitted[p] != 5 {
				t.Errorf("%s: got %d reservations under a 5-call cap and %d admits at quota 5, want 5 and 5", p, reserved[p], freeAdmitted[p])
			}
		}
		for i, s := range rc.Nodes {
			if n, err := s.DoBulk("DBSIZE"); err != nil || n == ":0" {
				t.Errorf("shard %d: DBSIZE %s, %v: the keys did not spread over the shards", i, n, err)
			}
		}
	})
	t.Run("FeedPropagation", func(t *testing.T) {
		base := fresh(t)
		a := node(t, base.WithNode("a"), t.TempDir(), 250*time.Millisecond)
		b := node(t, base.WithNode("b"), t.TempDir(), 250*time.Millisecond)
		now := time.Now()
		secret, k, err := a.Keys().Create("", time.Time{}, now)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, "key on b", func() bool { _, ok := b.Keys().Authenticate([]byte(secret), now); return ok })
		if _, err := b.Keys().Revoke(k.ID, now); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, "revocation on a", func() bool { _, ok := a.Keys().Authenticate([]byte(secret), now); return !ok })
	})
}
