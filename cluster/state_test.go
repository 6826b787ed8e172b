package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/cluster/redistest"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/gateway/storetest"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
)

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// node opens a State for one node on c with its own badger in dir; it is
// closed (and its DB) when t ends. Background following is off unless
// poll > 0: tests call Sync.
func node(t *testing.T, c *cluster.Client, dir string, poll time.Duration) *cluster.State {
	t.Helper()
	db := openDB(t, dir)
	s, err := cluster.OpenState(c, db, cluster.StateOptions{PollInterval: poll,
		Report: func(ev string, err error) { t.Logf("report: %s: %v", ev, err) }})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); db.Close() })
	return s
}

func TestKeyContract(t *testing.T) {
	setup(t)
	storetest.KeyContract(t, func(t *testing.T) gateway.KeyStore {
		return node(t, fresh(t), t.TempDir(), -1).Keys()
	})
}

func TestOverrideContract(t *testing.T) {
	setup(t)
	storetest.OverrideContract(t, func(t *testing.T) gateway.OverrideStore {
		return node(t, fresh(t), t.TempDir(), -1).Overrides()
	})
}

func mustPolicy(t *testing.T, js string) *policy.Policy {
	t.Helper()
	p, err := policy.DecodePolicy([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// TestState_Propagation: three nodes following the feed (channel and
// checks) see a key made, an override put and a revocation on another
// node well within 1 s.
func TestState_Propagation(t *testing.T) {
	setup(t)
	c := fresh(t)
	a := node(t, c.WithNode("a"), t.TempDir(), 250*time.Millisecond)
	b := node(t, c.WithNode("b"), t.TempDir(), 250*time.Millisecond)
	d := node(t, c.WithNode("d"), t.TempDir(), 250*time.Millisecond)
	now := time.Now()
	secret, k, err := a.Keys().Create("agent", time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*cluster.State{b, d} {
		took := eventually(t, time.Second, "key visible", func() bool { _, ok := n.Keys().Authenticate([]byte(secret), now); return ok })
		t.Logf("key visible after %v", took)
	}
	if err := b.Overrides().Put(k.Principal, mustPolicy(t, `{"deny_tools":["code_execute"]}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "override visible", func() bool {
		m, _, _ := d.Overrides().Load()
		return m[k.Principal] != nil && m[k.Principal].DenyTools[0] == "code_execute"
	})
	if _, err := d.Keys().Revoke(k.ID, now); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Keys().Authenticate([]byte(secret), now); ok {
		t.Fatal("revoking node: key still authenticates")
	}
	for _, n := range []*cluster.State{a, b} {
		eventually(t, time.Second, "revocation visible", func() bool { _, ok := n.Keys().Authenticate([]byte(secret), now); return !ok })
	}
	// A second revocation elsewhere reports the first.
	if _, err := a.Keys().Revoke(k.ID, now.Add(time.Hour)); !errors.Is(err, identity.ErrRevoked) {
		t.Fatalf("second revoke: got %v, want ErrRevoked", err)
	}
}

// TestState_MissedMessageCaughtUp: a node that hears no channel message
// (no subscription here) catches up at its next check, from the feed.
func TestState_MissedMessageCaughtUp(t *testing.T) {
	setup(t)
	c := fresh(t)
	a := node(t, c, t.TempDir(), -1)
	b := node(t, c, t.TempDir(), -1)
	now := time.Now()
	var secrets []string
	for range 5 {
		s, _, err := a.Keys().Create("", time.Time{}, now)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s)
	}
	if _, ok := b.Keys().Authenticate([]byte(secrets[0]), now); ok {
		t.Fatal("b sees the key before any check: the test does not test the check")
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if _, ok := b.Keys().Authenticate([]byte(s), now); !ok {
			t.Fatal("after Sync: key not visible")
		}
	}
}

// TestState_RedisLosesData: after FLUSHALL the nodes put their copies
// back; a node holding an older "active" copy of a key another node
// revoked never revives it; overrides come back at their newest version,
// deletions included.
func TestState_RedisLosesData(t *testing.T) {
	srv := dialServer(t)
	c := srv.client
	dirA, dirB := t.TempDir(), t.TempDir()
	a := node(t, c, dirA, -1)
	b := node(t, c, dirB, -1)
	now := time.Now()
	s1, k1, _ := a.Keys().Create("one", time.Time{}, now)
	s2, k2, _ := a.Keys().Create("two", time.Time{}, now)
	a.Overrides().Put("wallet:0x00000000000000000000000000000000000000b1", mustPolicy(t, `{"deny_tools":["x"]}`))
	a.Overrides().Put(k2.Principal, mustPolicy(t, `{"deny_tools":["y"]}`))
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	// b revokes k1 and deletes an override; a has not followed yet.
	if _, err := b.Keys().Revoke(k1.ID, now); err != nil {
		t.Fatal(err)
	}
	if err := b.Overrides().Delete(k2.Principal); err != nil {
		t.Fatal(err)
	}
	if err := srv.flushAll(); err != nil {
		t.Fatal(err)
	}
	// a (with k1 active and k2's override) syncs first, then b.
	for _, n := range []*cluster.State{a, b, a} {
		if err := n.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	fresh := node(t, c, t.TempDir(), -1) // a new node learns only from Redis
	for _, n := range []*cluster.State{a, b, fresh} {
		if _, ok := n.Keys().Authenticate([]byte(s1), now); ok {
			t.Fatal("revoked key revived after Redis lost its data")
		}
		if _, ok := n.Keys().Authenticate([]byte(s2), now); !ok {
			t.Fatal("key lost after Redis lost its data")
		}
		m, _, _ := n.Overrides().Load()
		if m[k2.Principal] != nil || m["wallet:0x00000000000000000000000000000000000000b1"] == nil {
			t.Fatalf("overrides after Redis lost its data: got %v, want the wallet's only", m)
		}
	}
}

// TestState_RevokeWhileRedisDown: a revocation made while Redis is down
// holds on the node at once and reaches the others when Redis is back; a
// key cannot be made while it is down.
func TestState_RevokeWhileRedisDown(t *testing.T) {
	srv := dialServer(t)
	a := node(t, srv.client, t.TempDir(), -1)
	b := node(t, srv.client, t.TempDir(), -1)
	now := time.Now()
	secret, k, _ := a.Keys().Create("", time.Time{}, now)
	b.Sync()
	srv.pause(t)
	if _, err := a.Keys().Revoke(k.ID, now); err != nil {
		t.Fatalf("revoke with redis down: %v, want applied on the node", err)
	}
	if _, ok := a.Keys().Authenticate([]byte(secret), now); ok {
		t.Fatal("revoked on a: still authenticates there")
	}
	if _, _, err := a.Keys().Create("", time.Time{}, now); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("create with redis down: got %v, want ErrUnavailable", err)
	}
	if err := a.Overrides().Put(k.Principal, mustPolicy(t, `{}`)); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("put with redis down: got %v, want ErrUnavailable", err)
	}
	srv.resume(t)
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Keys().Authenticate([]byte(secret), now); ok {
		t.Fatal("revocation made while redis was down: not on b after it came back")
	}
}

// testServer is a redis-server of the test's own (for tests that
// flush, pause or restart it) and a client on it.
type testServer struct {
	*redistest.Server
	client *cluster.Client
}

func dialServer(t *testing.T) *testServer {
	t.Helper()
	s := redistest.Start(t)
	c, err := cluster.Dial(s.URL(), cluster.Options{NodeID: "node-a", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &testServer{Server: s, client: c}
}

func (s *testServer) flushAll() error    { _, err := s.Do("FLUSHALL"); return err }
func (s *testServer) pause(t *testing.T) { s.Pause() }
func (s *testServer) resume(t *testing.T) {
	s.Resume()
	eventually(t, 5*time.Second, "redis answers", func() bool { return s.client.Ping(context.Background()) == nil })
}

// TestRegistry_LiveAndShare: three nodes' heartbeats make three live
// nodes; the fallback quota store holds each node to a third of a
// limit; a node that leaves stops counting at the next heartbeat; the
// marker changing (FLUSHALL) is reported as lost data to every node.
func TestRegistry_LiveAndShare(t *testing.T) {
	srv := dialServer(t)
	var regs []*cluster.Registry
	for _, n := range []string{"a", "b", "c"} {
		r := cluster.NewRegistry(srv.client.WithNode(n), cluster.Peer{ConfigHash: "h1"}, time.Second)
		if _, err := r.Beat(); err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	regs[0].Beat()
	if got := regs[0].Live(); got != 3 {
		t.Fatalf("Live: got %d, want 3", got)
	}
	sq := cluster.NewShareQuotas(regs[0])
	now := time.Now()
	allowed := 0
	for i := range 10 {
		if sq.Admit("key:k", 0, 6, now, uint64(i)).Allowed {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("fallback admits at limit 6 over 3 nodes: got %d, want 2", allowed)
	}
	if got := regs[0].View("h2").ConfigMismatch; len(got) != 3 {
		t.Fatalf("View with another hash: got mismatch %v, want all three", got)
	}
	if err := srv.flushAll(); err != nil {
		t.Fatal(err)
	}
	for i, r := range regs {
		lost, err := r.Beat()
		if err != nil || !lost {
			t.Fatalf("node %d after FLUSHALL: got lost=%t, %v, want lost", i, lost, err)
		}
		if lost, _ := r.Beat(); lost {
			t.Fatalf("node %d second beat: got lost, want not", i)
		}
	}
	srv.pause(t)
	if _, err := regs[0].Beat(); err == nil || regs[0].Up() {
		t.Fatal("Beat with redis paused: got no error")
	}
	if got := regs[0].Live(); got != 3 {
		t.Fatalf("Live with redis down: got %d, want the last known 3", got)
	}
	srv.resume(t)
}
