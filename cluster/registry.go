package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
)

// Registry is the cluster's list of live nodes: every node writes a
// heartbeat (Redis time) with its public facts (URL, config hash) each
// Interval; a node is live while its heartbeat is younger than
// 5 × Interval. The registry also notices Redis coming back, and
// coming back without its data (a marker key it sets is gone), and tells
// OnRejoin, so that the node can put back what only it knows (its spend
// contribution, from its ledger).
//
// Keys: prefix{nodes}:live (sorted set node → heartbeat ms),
// prefix{nodes}:info (hash node → Peer JSON), prefix{nodes}:epoch.
// Safe for concurrent use.
type Registry struct {
	c    *Client
	self Peer
	// OnRejoin is called (from the heartbeat goroutine) after Redis
	// answered again following a failure, or answered without the
	// marker; lost tells which. Set before Start.
	OnRejoin func(lost bool)
	// ConfigHash returns the configuration hash the node serves now,
	// announced with every heartbeat. Set before Start.
	ConfigHash func() string
	// Report is told when the set of nodes serving another configuration
	// changes (mismatch lists them, "node=hash"). Set before Start.
	Report func(mismatch []string)
	// ChainHead returns the node's ledger head, announced with every
	// heartbeat beside self's PublicKey. Optional; set before Start.
	ChainHead func() (seq uint64, hash string)

	interval time.Duration
	epoch    string       // the marker's value at the last heartbeat (Beat runs on one goroutine)
	live     atomic.Int64 // live nodes at the last heartbeat (≥ 1)
	up       atomic.Bool

	mu       sync.Mutex
	peers    []Peer
	mismatch string // last reported, joined
	seen     map[string]time.Time
	known    map[string]knownPeer // seen within KnownFor: asked by the audit fan-out

	stop chan struct{}
	wg   sync.WaitGroup
}

// Peer is one node as it announces itself.
type Peer struct {
	Node       string `json:"node"`
	URL        string `json:"url,omitempty"`
	ConfigHash string `json:"config_hash,omitempty"`
	// PublicKey (hex Ed25519) verifies the node's checkpoints; HeadSeq
	// and HeadHash are its chain head at the heartbeat, so that the
	// cluster knows every node's chain, also one that stops answering.
	PublicKey string    `json:"public_key,omitempty"`
	HeadSeq   uint64    `json:"head_seq,omitempty"`
	HeadHash  string    `json:"head_hash,omitempty"`
	SeenAt    time.Time `json:"seen_at,omitzero"`
}

// NewRegistry returns the registry of c's cluster announcing self (its
// Node is c's node id) every interval (0: 1 s).
func NewRegistry(c *Client, self Peer, interval time.Duration) *Registry {
	if interval <= 0 {
		interval = time.Second
	}
	self.Node = c.node
	r := &Registry{c: c, self: self, interval: interval, stop: make(chan struct{})}
	r.live.Store(1)
	return r
}

var heartbeatScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[3], ARGV[4], 'NX')
local epoch = redis.call('GET', KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[3]))
for _, n in ipairs(gone) do redis.call('HDEL', KEYS[2], n) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[3]))
local out = {epoch, table.concat(redis.call('HKEYS', KEYS[4]), ' ')}
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  table.insert(out, live[i])
  table.insert(out, live[i + 1])
  table.insert(out, redis.call('HGET', KEYS[2], live[i]) or '')
end
return out
`)

// Beat writes one heartbeat and reads the live nodes. It reports whether
// Redis's marker changed since the last heartbeat (Redis lost its data).
// Not for concurrent use with itself (Start's loop calls it).
func (r *Registry) Beat() (lost bool, err error) {
	hash := r.self.ConfigHash
	if r.ConfigHash != nil {
		hash = r.ConfigHash()
	}
	self := Peer{Node: r.self.Node, URL: r.self.URL, ConfigHash: hash, PublicKey: r.self.PublicKey}
	if r.ChainHead != nil {
		self.HeadSeq, self.HeadHash = r.ChainHead()
	}
	info, _ := json.Marshal(self)
	ctx, cancel := r.c.ctx()
	defer cancel()
	arr, err := heartbeatScript.Exec(ctx, r.c.rdb,
		[]string{r.c.prefix + "{nodes}:live", r.c.prefix + "{nodes}:info", r.c.prefix + "{nodes}:epoch", r.c.prefix + "{nodes}:left"},
		[]string{r.self.Node, string(info), strconv.FormatInt((5 * r.interval).Milliseconds(), 10), newEpoch()}).ToArray()
	if err != nil {
		r.up.Store(false)
		return false, redisErr("heartbeat", err)
	}
	epoch, _ := arr[0].ToString()
	lost = r.epoch != "" && epoch != r.epoch
	r.epoch = epoch
	leftS, _ := arr[1].ToString()
	left := strings.Fields(leftS)
	var peers []Peer
	for i := 2; i+3 <= len(arr); i += 3 {
		peers = append(peers, peerOf(arr[i:i+3]))
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Node < peers[j].Node })
	mm := mismatched(peers, hash)
	now := time.Now()
	r.mu.Lock()
	r.peers = peers
	// Live counts every node seen by a heartbeat within the liveness
	// window on this node's clock, so that the count does not drop when
	// Redis loses its data (the nodes come back one heartbeat later).
	if r.seen == nil {
		r.seen = map[string]time.Time{}
	}
	for _, p := range peers {
		r.seen[p.Node] = now
	}
	if r.known == nil {
		r.known = map[string]knownPeer{}
	}
	for _, p := range peers {
		r.known[p.Node] = knownPeer{p, now}
	}
	for n, at := range r.seen {
		if now.Sub(at) > 5*r.interval {
			delete(r.seen, n)
		}
	}
	for n, k := range r.known {
		if now.Sub(k.at) > KnownFor {
			delete(r.known, n)
		}
	}
	for _, n := range left {
		if n != r.self.Node {
			delete(r.known, n)
			delete(r.seen, n)
		}
	}
	live := int64(len(r.seen))
	changed := strings.Join(mm, ",") != r.mismatch
	r.mismatch = strings.Join(mm, ",")
	r.mu.Unlock()
	if changed && r.Report != nil {
		r.Report(mm)
	}
	if live > 0 {
		r.live.Store(live)
	}
	r.up.Store(true)
	return lost, nil
}

func newEpoch() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func peerOf(m []rueidis.RedisMessage) Peer {
	var p Peer
	if s, err := m[2].ToString(); err == nil && s != "" {
		json.Unmarshal([]byte(s), &p)
	}
	p.Node, _ = m[0].ToString()
	if ms, err := m[1].AsFloat64(); err == nil {
		p.SeenAt = time.UnixMilli(int64(ms)).UTC()
	} else if s, err := m[1].ToString(); err == nil {
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			p.SeenAt = time.UnixMilli(int64(v)).UTC()
		}
	}
	return p
}

// Start writes the first heartbeat (Redis must answer) and keeps beating
// until Close.
func (r *Registry) Start() error {
	if _, err := r.Beat(); err != nil {
		return err
	}
	r.wg.Add(1)
	go r.loop()
	return nil
}

func (r *Registry) loop() {
	defer r.wg.Done()
	t := time.NewTicker(r.interval)
	defer t.Stop()
	failed := false
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		lost, err := r.Beat()
		if err != nil {
			failed = true
			continue
		}
		if (failed || lost) && r.OnRejoin != nil {
			r.OnRejoin(lost)
		}
		failed = false
	}
}

// Close stops the heartbeats and removes the node from the live set (a
// node leaving on purpose stops counting at once, and the others forget
// it at their next heartbeat instead of KnownFor later).
func (r *Registry) Close() {
	select {
	case <-r.stop:
		return
	default:
		close(r.stop)
	}
	r.wg.Wait()
	r.Leave()
}

// Leave removes the node from the live set (Close does it).
func (r *Registry) Leave() {
	ctx, cancel := r.c.ctx()
	defer cancel()
	b := r.c.rdb.B()
	r.c.rdb.DoMulti(ctx, b.Zrem().Key(r.c.prefix+"{nodes}:live").Member(r.self.Node).Build(),
		b.Hdel().Key(r.c.prefix+"{nodes}:info").Field(r.self.Node).Build(),
		b.Hset().Key(r.c.prefix+"{nodes}:left").FieldValue().FieldValue(r.self.Node, strconv.FormatInt(time.Now().Unix(), 10)).Build(),
		b.Expire().Key(r.c.prefix+"{nodes}:left").Seconds(int64(2*KnownFor/time.Second)).Build())
}

// Live returns the number of live nodes at the last heartbeat that
// reached Redis (at least 1): while Redis is unreachable, the last known.
func (r *Registry) Live() int { return int(r.live.Load()) }

// Up reports whether the last heartbeat reached Redis.
func (r *Registry) Up() bool { return r.up.Load() }

// Nodes returns the live nodes at the last heartbeat, by node id.
func (r *Registry) Nodes() []Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Peer(nil), r.peers...)
}

// mismatched lists the peers announcing a hash other than hash.
func mismatched(peers []Peer, hash string) []string {
	var out []string
	for _, p := range peers {
		if p.ConfigHash != "" && p.ConfigHash != hash {
			out = append(out, p.Node+"="+p.ConfigHash)
		}
	}
	return out
}

// View implements gateway.ClusterView.
func (r *Registry) View(configHash string) gateway.ClusterStatus {
	cs := gateway.ClusterStatus{Node: r.self.Node, Redis: "ok", LiveNodes: r.Live(),
		ConfigMismatch: mismatched(r.Nodes(), configHash)}
	if !r.Up() {
		cs.Redis = "unreachable"
	}
	return cs
}

var (
	_ gateway.ClusterView  = (*Registry)(nil)
	_ gateway.ClusterPeers = (*Registry)(nil)
)

// KnownFor is how long a node that stopped heartbeating is still asked by
// the audit fan-out (and named when it does not answer), so that a node
// that just died or stalls is reported, not silently left out. A node
// that left on purpose (Close) is forgotten at once.
const KnownFor = time.Minute

type knownPeer struct {
	p  Peer
	at time.Time
}

// Peers returns the nodes seen within KnownFor and their advertised
// URLs, by node id (gateway.ClusterPeers: /audit fans out to them).
func (r *Registry) Peers() []gateway.ClusterPeer {
	r.mu.Lock()
	out := make([]gateway.ClusterPeer, 0, len(r.known))
	for _, k := range r.known {
		out = append(out, gateway.ClusterPeer{Node: k.p.Node, URL: k.p.URL, PublicKey: k.p.PublicKey, HeadSeq: k.p.HeadSeq, HeadHash: k.p.HeadHash, SeenAt: k.p.SeenAt})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Self returns what this node announces.
func (r *Registry) Self() Peer { return r.self }

// ShareQuotas is the quota store an open principal falls back to when
// the shared one cannot decide: this node's own exact window at the
// node's share of each limit (limit ÷ live nodes, rounded down, from the
// registry's last count), so that the cluster's total stays within the
// limit while every node decides alone. Safe for concurrent use.
type ShareQuotas struct {
	*meter.Quotas
	reg *Registry
}

var _ gateway.QuotaStore = (*ShareQuotas)(nil)

// NewShareQuotas returns the fallback quota store sharing limits by reg.
func NewShareQuotas(reg *Registry) *ShareQuotas {
	return &ShareQuotas{Quotas: meter.NewQuotas(0), reg: reg}
}

// Share returns the node's share of limit (< 0 unlimited stays so).
func (s *ShareQuotas) Share(limit int) int {
	if limit <= 0 {
		return limit
	}
	return limit / s.reg.Live()
}

// Admit decides the call on the node's own window at its share of limit.
func (s *ShareQuotas) Admit(principal string, class, limit int, now time.Time, callID uint64) meter.QuotaResult {
	return s.Quotas.Admit(principal, class, s.Share(limit), now, callID)
}

// Peek reports the node's own window at its share.
func (s *ShareQuotas) Peek(principal string, class, limit int, now time.Time) (int, time.Duration) {
	return s.Quotas.Peek(principal, class, s.Share(limit), now)
}
