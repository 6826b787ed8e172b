package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
)

// State is the cluster's API keys and per-principal policy overrides:
// shared in Redis, and mirrored on every node in memory and in the
// node's badger (prefixes "c/k/" and "c/p/"), so that the hot path
// decides from memory and a Redis that lost its data is filled again
// from the nodes' copies.
//
// Redis holds, under the hash tag {state}:
//
//	prefix{state}:keys     hash key_id → identity.Record JSON as created
//	prefix{state}:revoked  hash key_id → revocation time (Unix s); set once
//	prefix{state}:over     hash principal → "<version> <policy JSON>"
//	                       ("<version> " once deleted: a tombstone)
//	prefix{state}:ver      the feed's sequence number
//	prefix{state}:feed     stream of the writes, entry id "<seq>-0"
//	prefix{state}:epoch    random, set once: gone or changed = data lost
//
// Every write is one Lua script that changes a hash, bumps the sequence,
// appends to the feed and publishes the sequence on the channel
// prefix{state}:changes. A node follows the feed from the sequence it
// has seen: woken by the channel, and checking the sequence every
// PollInterval whatever the channel says (a message lost while the
// subscription reconnected is caught up at the next check, never
// silently lost). A gap in the feed (trimmed past the node's sequence),
// a changed epoch (Redis lost its data) or a write that could not reach
// Redis makes the next check a full sync: Redis's copy and the node's
// are merged both ways.
//
// Merging follows two rules. A key's creation record never changes and a
// revocation, once set anywhere, wins over any "active" copy (the
// earlier revocation time is kept). An override carries a version (Redis
// time in microseconds, above the principal's previous version): the
// higher version wins, deletions included (tombstones).
//
// Safe for concurrent use. Close stops following.
type State struct {
	c      *Client
	db     *badger.DB
	keys   *identity.Store
	report func(event string, err error)

	// PollInterval is how often the node checks the feed's sequence
	// besides the channel's wake-ups (default 250 ms).
	pollInterval time.Duration

	syncMu sync.Mutex // one sync at a time; guards seen, epoch
	seen   uint64
	epoch  string

	mu        sync.Mutex // guards over, localVer, changes, dirty
	over      map[string]overrideEntry
	localVer  uint64
	changes   []policy.OverrideChange
	dirty     bool // a write did not reach Redis: full sync next
	lastSync  time.Time
	connected bool

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

type overrideEntry struct {
	ver uint64
	pol *policy.Policy // nil: deleted
	raw string         // the policy's JSON ("" deleted)
}

// Badger prefixes of the node's copy.
const (
	mirrorKeyPrefix      = "c/k/"
	mirrorOverridePrefix = "c/p/"
)

// feedMaxLen bounds the feed (approximately): a node behind by more does
// a full sync.
const feedMaxLen = 100000

// StateOptions configures OpenState.
type StateOptions struct {
	// Report is told about background failures (following the feed,
	// syncing); nil ignores them.
	Report func(event string, err error)
	// PollInterval: see State (0: 250 ms; < 0: no background following,
	// tests call Sync).
	PollInterval time.Duration
	// Import are keys and overrides the node held before it joined the
	// cluster (its own identity store and override rows): merged into
	// the cluster's copy at the first sync, overrides only for a
	// principal the cluster has no entry for.
	ImportKeys      []*identity.Key
	ImportOverrides map[string]*policy.Policy
}

// OpenState loads the node's copy from db, syncs it with Redis (which
// must answer) and starts following the feed.
func OpenState(c *Client, db *badger.DB, o StateOptions) (*State, error) {
	keys, err := identity.OpenPrefix(db, mirrorKeyPrefix)
	if err != nil {
		return nil, err
	}
	s := &State{c: c, db: db, keys: keys, report: o.Report, pollInterval: o.PollInterval,
		over: map[string]overrideEntry{}, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	if s.report == nil {
		s.report = func(string, error) {}
	}
	if s.pollInterval == 0 {
		s.pollInterval = 250 * time.Millisecond
	}
	if err := s.loadOverrides(); err != nil {
		return nil, err
	}
	for _, k := range o.ImportKeys {
		if _, _, err := s.keys.Merge(k); err != nil {
			return nil, fmt.Errorf("import key %s: %w", k.ID, err)
		}
	}
	for p, pol := range o.ImportOverrides {
		if _, ok := s.over[p]; ok {
			continue
		}
		raw, err := json.Marshal(pol)
		if err != nil {
			return nil, err
		}
		if err := s.storeOverride(p, overrideEntry{ver: 1, pol: pol, raw: string(raw)}); err != nil {
			return nil, err
		}
	}
	if err := s.fullSync(); err != nil {
		return nil, err
	}
	if s.pollInterval > 0 {
		s.wg.Add(2)
		go s.follow()
		go s.subscribe()
	}
	return s, nil
}

// Close stops following the feed; the node's copy stays in db.
func (s *State) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

// Connected reports whether the last check of the feed reached Redis.
func (s *State) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

func (s *State) rkey(name string) string { return s.c.prefix + "{state}:" + name }
func (s *State) channel() string         { return s.c.prefix + "{state}:changes" }

func (s *State) loadOverrides() error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(mirrorOverridePrefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			p := string(it.Item().Key()[len(mirrorOverridePrefix):])
			var e overrideEntry
			err := it.Item().Value(func(v []byte) error {
				var err error
				e, err = parseOverride(string(v))
				return err
			})
			if err != nil {
				return fmt.Errorf("cluster override copy of %s: %w", p, err)
			}
			s.over[p] = e
		}
		return nil
	})
}

// parseOverride reads "<version> <policy JSON>" ("<version> " deleted).
func parseOverride(v string) (overrideEntry, error) {
	vs, raw, ok := strings.Cut(v, " ")
	ver, err := strconv.ParseUint(vs, 10, 64)
	if !ok || err != nil || ver == 0 {
		return overrideEntry{}, fmt.Errorf("bad override entry %.40q", v)
	}
	e := overrideEntry{ver: ver, raw: raw}
	if raw != "" {
		if e.pol, err = policy.DecodePolicy([]byte(raw)); err != nil {
			return overrideEntry{}, err
		}
	}
	return e, nil
}

func (e overrideEntry) encode() string { return strconv.FormatUint(e.ver, 10) + " " + e.raw }

// storeOverride applies e to the node's copy if it is newer than what the
// copy holds, and puts it in the local change feed.
func (s *State) storeOverride(p string, e overrideEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.over[p]; ok && cur.ver >= e.ver {
		return nil
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(mirrorOverridePrefix+p), []byte(e.encode()))
	})
	if err != nil {
		return fmt.Errorf("store override copy: %w", err)
	}
	s.over[p] = e
	s.localVer++
	if len(s.changes) == maxChanges {
		n := copy(s.changes, s.changes[1:])
		s.changes = s.changes[:n]
	}
	s.changes = append(s.changes, policy.OverrideChange{Version: s.localVer, Principal: p, Policy: e.pol})
	return nil
}

const maxChanges = 1024

func (s *State) markDirty(err error) {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
	s.report("shared keys and overrides: a write did not reach redis; pushed at the next sync", err)
}

// Scripts. KEYS[1] is always the sequence, the last KEYS the feed; the
// last two ARGV the feed's length and the channel.

var putKeyScript = rueidis.NewLuaScript(`
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
local v = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], string.format('%d-0', v), 't', 'k', 'id', ARGV[1], 'd', ARGV[2])
redis.call('PUBLISH', ARGV[4], v)
return v
`)

var revokeKeyScript = rueidis.NewLuaScript(`
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return {0, tonumber(redis.call('HGET', KEYS[2], ARGV[1]))}
end
local v = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], string.format('%d-0', v), 't', 'r', 'id', ARGV[1], 'd', ARGV[2])
redis.call('PUBLISH', ARGV[4], v)
return {v, tonumber(ARGV[2])}
`)

// putOverrideScript: ARGV principal, version (0: a new write, versioned
// by Redis's clock above the principal's current one; > 0: a node's copy
// put back, applied only when newer), policy JSON ("" deletes). Returns
// the entry's version, 0 when a put-back was older.
var putOverrideScript = rueidis.NewLuaScript(`
local ov = tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[2], ARGV[1])
local cv = 0
if cur then cv = tonumber(string.match(cur, '^(%d+)')) end
if ov > 0 then
  if cv >= ov then return 0 end
else
  local t = redis.call('TIME')
  ov = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if ov <= cv then ov = cv + 1 end
end
local ovs = string.format('%.0f', ov)
redis.call('HSET', KEYS[2], ARGV[1], ovs .. ' ' .. ARGV[3])
local v = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], string.format('%d-0', v), 't', 'p', 'id', ARGV[1], 'v', ovs, 'd', ARGV[3])
redis.call('PUBLISH', ARGV[5], v)
return ov
`)

func (s *State) feedArgs(args ...string) []string {
	return append(args, strconv.Itoa(feedMaxLen), s.channel())
}

func (s *State) pushKey(k *identity.Key) error {
	b, err := json.Marshal(k.Record().Revoked(time.Time{}))
	if err != nil {
		return err
	}
	_, err = s.c.run1(putKeyScript, []string{s.rkey("ver"), s.rkey("keys"), s.rkey("feed")}, s.feedArgs(k.ID, string(b)))
	return err
}

// pushRevoke sets k's revocation in Redis unless one is set; it returns
// the revocation time Redis holds.
func (s *State) pushRevoke(id string, at time.Time) (time.Time, error) {
	v, err := ints(s.c.run(revokeKeyScript, []string{s.rkey("ver"), s.rkey("revoked"), s.rkey("feed")},
		s.feedArgs(id, strconv.FormatInt(at.Unix(), 10))))
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("%w: revoke reply", ErrRedis)
	}
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(v[1], 0).UTC(), nil
}

func (s *State) pushOverride(p string, ver uint64, raw string) (uint64, error) {
	v, err := s.c.run1(putOverrideScript, []string{s.rkey("ver"), s.rkey("over"), s.rkey("feed")},
		s.feedArgs(p, strconv.FormatUint(ver, 10), raw))
	return uint64(v), err
}

// run1 executes a script that returns one integer.
func (c *Client) run1(sc *rueidis.Lua, keys, args []string) (int64, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	v, err := sc.Exec(ctx, c.rdb, keys, args).AsInt64()
	if err != nil {
		return 0, redisErr("script", err)
	}
	return v, nil
}

// Sync checks the feed once and applies what it holds (a full sync when
// one is due), as the background follower does every PollInterval.
func (s *State) Sync() error {
	s.mu.Lock()
	dirty := s.dirty
	s.mu.Unlock()
	if dirty {
		return s.fullSync()
	}
	return s.poll()
}

func (s *State) setConnected(ok bool) {
	s.mu.Lock()
	s.connected = ok
	if ok {
		s.lastSync = time.Now()
	}
	s.mu.Unlock()
}

// poll reads the epoch and the sequence in one round trip and follows the
// feed up to the sequence.
func (s *State) poll() error {
	s.syncMu.Lock()
	epoch, ver, err := s.head()
	if err != nil {
		s.syncMu.Unlock()
		s.setConnected(false)
		return err
	}
	if epoch != s.epoch || ver < s.seen {
		s.syncMu.Unlock()
		return s.fullSync()
	}
	gap, err := s.follow1(ver)
	s.syncMu.Unlock()
	if err != nil {
		s.setConnected(false)
		return err
	}
	if gap {
		return s.fullSync()
	}
	s.setConnected(true)
	return nil
}

func (s *State) head() (epoch string, ver uint64, err error) {
	ctx, cancel := s.c.ctx()
	defer cancel()
	b := s.c.rdb.B()
	res := s.c.rdb.DoMulti(ctx, b.Get().Key(s.rkey("epoch")).Build(), b.Get().Key(s.rkey("ver")).Build())
	epoch, err = res[0].ToString()
	if rueidis.IsRedisNil(err) {
		epoch, err = "", nil
	}
	if err != nil {
		return "", 0, redisErr("read feed head", err)
	}
	n, err := res[1].AsInt64()
	if rueidis.IsRedisNil(err) {
		n, err = 0, nil
	}
	if err != nil {
		return "", 0, redisErr("read feed head", err)
	}
	return epoch, uint64(n), nil
}

// follow1 applies the feed's entries after s.seen up to ver; gap when the
// feed no longer holds the next one. s.syncMu is held.
func (s *State) follow1(ver uint64) (gap bool, err error) {
	for s.seen < ver {
		ctx, cancel := s.c.ctx()
		entries, err := s.c.rdb.Do(ctx, s.c.rdb.B().Xrange().Key(s.rkey("feed")).
			Start("("+strconv.FormatUint(s.seen, 10)+"-0").End("+").Count(512).Build()).AsXRange()
		cancel()
		if err != nil {
			return false, redisErr("read feed", err)
		}
		if len(entries) == 0 {
			return true, nil
		}
		for i, e := range entries {
			seq, err := strconv.ParseUint(strings.TrimSuffix(e.ID, "-0"), 10, 64)
			if err != nil || (i == 0 && seq != s.seen+1) {
				return true, nil
			}
			if err := s.apply(e.FieldValues); err != nil {
				s.report("shared keys and overrides: feed entry "+e.ID+" not applied", err)
			}
			s.seen = seq
		}
	}
	return false, nil
}

// apply merges one feed entry into the node's copy.
func (s *State) apply(f map[string]string) error {
	switch f["t"] {
	case "k":
		return s.mergeKeyJSON(f["d"], 0)
	case "r":
		t, err := strconv.ParseInt(f["d"], 10, 64)
		if err != nil {
			return err
		}
		k, ok := s.keys.Lookup(f["id"])
		if !ok {
			return nil // its creation comes with the next full sync
		}
		r := k.Record().Revoked(time.Unix(t, 0))
		nk, err := r.Key()
		if err != nil {
			return err
		}
		_, _, err = s.keys.Merge(nk)
		return err
	case "p":
		ver, err := strconv.ParseUint(f["v"], 10, 64)
		if err != nil {
			return err
		}
		e, err := parseOverride(strconv.FormatUint(ver, 10) + " " + f["d"])
		if err != nil {
			return err
		}
		return s.storeOverride(f["id"], e)
	}
	return fmt.Errorf("unknown feed entry type %q", f["t"])
}

func (s *State) mergeKeyJSON(js string, revoked int64) error {
	var r identity.Record
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		return err
	}
	if revoked != 0 {
		r = r.Revoked(time.Unix(revoked, 0))
	}
	k, err := r.Key()
	if err != nil {
		return err
	}
	_, _, err = s.keys.Merge(k)
	return err
}

// fullSync merges Redis's copy and the node's both ways: what Redis holds
// into the node's copy, then what the node holds and Redis lacks (keys,
// revocations, newer overrides) into Redis. Sets the epoch when Redis
// has none (it is new or lost its data).
func (s *State) fullSync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	s.dirty = false
	s.mu.Unlock()
	err := s.fullSync1()
	if err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		s.setConnected(false)
		return err
	}
	s.setConnected(true)
	return nil
}

func (s *State) fullSync1() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*s.c.timeout)
	defer cancel()
	b := s.c.rdb.B()
	var rnd [12]byte
	rand.Read(rnd[:])
	if err := s.c.rdb.Do(ctx, b.Set().Key(s.rkey("epoch")).Value(hex.EncodeToString(rnd[:])).Nx().Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
		return redisErr("set epoch", err)
	}
	epoch, ver, err := s.head()
	if err != nil {
		return err
	}
	res := s.c.rdb.DoMulti(ctx, b.Hgetall().Key(s.rkey("keys")).Build(), b.Hgetall().Key(s.rkey("revoked")).Build(),
		b.Hgetall().Key(s.rkey("over")).Build())
	var maps [3]map[string]string
	for i := range res {
		if maps[i], err = res[i].AsStrMap(); err != nil {
			return redisErr("read shared state", err)
		}
	}
	rkeys, rrev, rover := maps[0], maps[1], maps[2]
	for id, js := range rkeys {
		var t int64
		if v, ok := rrev[id]; ok {
			t, _ = strconv.ParseInt(v, 10, 64)
		}
		if err := s.mergeKeyJSON(js, t); err != nil {
			s.report("shared keys: key "+id+" not applied", err)
		}
	}
	for p, v := range rover {
		e, err := parseOverride(v)
		if err != nil {
			s.report("shared overrides: override of "+p+" not applied", err)
			continue
		}
		if err := s.storeOverride(p, e); err != nil {
			return err
		}
	}
	// The node's copy into Redis.
	for _, k := range s.keys.List() {
		if _, ok := rkeys[k.ID]; !ok {
			if err := s.pushKey(k); err != nil {
				return err
			}
		}
		if at := k.RevokedAt(); !at.IsZero() {
			if _, ok := rrev[k.ID]; !ok {
				if _, err := s.pushRevoke(k.ID, at); err != nil {
					return err
				}
			}
		}
	}
	s.mu.Lock()
	var push []struct {
		p string
		e overrideEntry
	}
	for p, e := range s.over {
		if v, ok := rover[p]; ok {
			if re, err := parseOverride(v); err == nil && re.ver >= e.ver {
				continue
			}
		}
		push = append(push, struct {
			p string
			e overrideEntry
		}{p, e})
	}
	s.mu.Unlock()
	for _, x := range push {
		if _, err := s.pushOverride(x.p, x.e.ver, x.e.raw); err != nil {
			return err
		}
	}
	s.epoch, s.seen = epoch, ver
	return nil
}

// follow runs the checks: every PollInterval and when the channel wakes it.
func (s *State) follow() {
	defer s.wg.Done()
	t := time.NewTicker(s.pollInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.wake:
		}
		err := s.Sync()
		if err != nil && !failing {
			s.report("shared keys and overrides: redis unreachable; deciding from the node's copy", err)
		}
		if err == nil && failing {
			s.report("shared keys and overrides: redis reachable again; synced", nil)
		}
		failing = err != nil
	}
}

// subscribe listens on the channel and wakes the follower at every
// message and after every (re)subscription.
func (s *State) subscribe() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	for ctx.Err() == nil {
		s.poke()
		err := s.c.rdb.Receive(ctx, s.c.rdb.B().Subscribe().Channel(s.channel()).Build(), func(rueidis.PubSubMessage) { s.poke() })
		if ctx.Err() != nil {
			return
		}
		_ = err // the follower's checks report Redis failures
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.pollInterval):
		}
	}
}

func (s *State) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Keys returns the cluster's key store.
func (s *State) Keys() *Keys { return &Keys{s: s} }

// Overrides returns the cluster's override store.
func (s *State) Overrides() *Overrides { return &Overrides{s: s} }

// ErrUnavailable: the shared state could not be written (Redis did not
// answer); nothing was changed.
var ErrUnavailable = errors.New("cluster: shared state unavailable")
