package cluster

import (
	"crypto/rand"
	"encoding/binary"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
)

// Quotas is gateway.QuotaStore on Redis: an exact sliding window per
// (principal, rate class) shared by every node, with meter.Quotas's
// semantics at microsecond resolution, decided from leases.
//
// # Leases
//
// A node does not ask Redis for every call: it takes a lease of n slots
// of the window in one script and hands them to its calls from memory
// (no round trip), asking for the next lease when they are used up. A
// lease of n > 1 slots taken at t is stamped t+LeaseFor in the shared
// window, and this node uses its slots only for calls whose now is at
// most that stamp: a slot used at u ≤ t+LeaseFor is counted cluster-wide
// from t to t+LeaseFor+window ⊇ [u, u+window], so the shared count of
// every window-long interval stays at most the limit, whatever the nodes
// do. A lease of one slot is stamped t and serves only the call that
// asked (and calls whose now is not after t): exactly the per-call
// decision. Sizes adapt: a node asks for twice its last lease when it
// used it up, for what it used when the lease ran out of time; Redis
// grants at most a quarter of the free slots divided by the live nodes
// (at least one), so a key with a small limit (below 8 per node) gets
// leases of one slot, decided per call, exact to the call. Unused slots
// of an expired lease go back to the window with this node's next lease
// of that window, at Sweep, or at Close; a dead node's stay counted until
// their stamp leaves the window (at most LeaseFor + window). A lease
// slot is therefore counted a little longer than the call it served
// (≤ LeaseFor): at the limit the cluster admits slightly less than the
// limit, never more.
//
// Each window is a sorted set prefix{principal}:q<class> of leases
// ("<node>:<lease id>") scored by their stamp in Unix microseconds, and a
// hash prefix{principal}:q<class>:n holding each lease's slot count, the
// total ("n") and the highest now any node decided at ("t"). Every
// script decides at t = max(now, "t"): a node whose clock runs behind
// the others is decided at their time, so no window-long interval of
// stamps ever holds more than the limit. Nodes' clocks should be in sync
// (NTP): a node running ahead by d lets calls leave the window d early.
//
// Undo gives a call's slot back to the window (one round trip) when the
// call is among the last leases' (leaseHistory) of its window on this
// node; otherwise the slot stays counted until it leaves the window
// (stricter, never looser). Safe for concurrent use.
type Quotas struct {
	c      *Client
	window int64 // microseconds
	// LeaseFor is how long a lease of more than one slot serves calls (0:
	// DefaultLeaseFor); MaxLease caps a lease's size (0: DefaultMaxLease;
	// 1 turns leasing off: every call is one round trip). Nodes reports
	// the live nodes (nil: 1), dividing the free slots among them. Set
	// before use.
	LeaseFor time.Duration
	MaxLease int
	Nodes    func() int

	ids    atomic.Uint64
	seed   maphash.Seed
	shards [64]quotaShard
}

// DefaultLeaseFor and DefaultMaxLease bound leases when Quotas leaves
// them 0: a lease serves calls for at most a second, and at most 1024 of
// them.
const (
	DefaultLeaseFor = time.Second
	DefaultMaxLease = 1024
)

// leaseHistory is how many of a window's last leases on this node Undo
// can give a slot back to.
const leaseHistory = 32

var _ gateway.QuotaStore = (*Quotas)(nil)

// NewQuotas returns the shared quota store on c with the given window (0:
// meter.DefaultWindow).
func NewQuotas(c *Client, window time.Duration) *Quotas {
	if window <= 0 {
		window = meter.DefaultWindow
	}
	q := &Quotas{c: c, window: window.Microseconds(), seed: maphash.MakeSeed()}
	var b [8]byte
	rand.Read(b[:])
	q.ids.Store(binary.BigEndian.Uint64(b[:]) >> 2) // distinct from another run's
	for i := range q.shards {
		q.shards[i].m = map[winKey]*qwindow{}
	}
	return q
}

type winKey struct {
	principal string
	class     int
}

type quotaShard struct {
	mu sync.Mutex
	m  map[winKey]*qwindow
}

// qwindow is this node's view of one shared window: its current lease and
// the fetch of the next.
type qwindow struct {
	mu    sync.Mutex
	cur   lease
	past  [leaseHistory]lease // ring of the last leases, for Undo
	pi    int
	next  int    // size to ask for next
	fetch *fetch // in flight, or nil
	last  int64  // µs, the latest now seen (Sweep)
	gone  bool   // evicted from the map: look it up again
}

type lease struct {
	member  string
	limit   int
	n       int      // slots in the lease
	used    int      // slots handed out
	until   int64    // µs: the latest now a slot may serve
	total   int      // window's count when granted
	resetIn int64    // µs, when granted
	calls   []uint64 // call ids served, for Undo
}

// fetch is one lease request in flight; calls arriving meanwhile wait
// for it and share its refusal.
type fetch struct {
	done    chan struct{}
	res     meter.QuotaResult // when refused or failed
	t       int64             // µs: the time it was decided at
	granted bool
}

// quotaLua decides on a window at t = max(now, the highest now seen) and
// first gives back slots: KEYS[1] the window's sorted set, KEYS[2] its
// hash; ARGV[1] now µs, ARGV[2] window µs, ARGV[8] a lease member and
// ARGV[9] its unused slots to give back ("" none). It drops the leases
// out of the window and defines t, total, w, drop, save, waitFor, grant.
const quotaLua = `
local z, h = KEYS[1], KEYS[2]
local w = tonumber(ARGV[2])
local t = tonumber(ARGV[1])
local hv = redis.call('HMGET', h, 't', 'n')
local hi = tonumber(hv[1] or '0')
if hi > t then t = hi end
local total = tonumber(hv[2] or '0')
local function drop(m, c)
  local have = tonumber(redis.call('HGET', h, m) or '0')
  if have == 0 or (c ~= nil and c <= 0) then return end
  if c == nil or c >= have then
    redis.call('HDEL', h, m)
    redis.call('ZREM', z, m)
    total = total - have
  else
    redis.call('HINCRBY', h, m, -c)
    total = total - c
  end
end
if ARGV[8] ~= '' then drop(ARGV[8], tonumber(ARGV[9])) end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', t - w)) do drop(m) end
local function save(d)
  redis.call('HSET', h, 't', t, 'n', total)
  local ms = math.floor((w + d) / 1000) + 1000
  redis.call('PEXPIRE', h, ms)
  redis.call('PEXPIRE', z, ms)
end
local function waitFor(limit)
  local need = total - limit + 1
  local acc = 0
  local s = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  for i = 1, #s, 2 do
    acc = acc + tonumber(redis.call('HGET', h, s[i]) or '0')
    if acc >= need then return tonumber(s[i + 1]) + w - t end
  end
  return w
end
local function grant(limit, req, d, member, nodes)
  local free = limit - total
  local n = math.floor(free / (4 * nodes))
  if n > req then n = req end
  if n < 1 then n = 1 end
  local s = t
  if n > 1 then s = t + d end
  redis.call('ZADD', z, s, member)
  redis.call('HSET', h, member, n)
  total = total + n
  save(d)
  local oldest = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  return n, s, tonumber(oldest[2]) + w - t
end
`

// leaseScript: quotaLua's KEYS and ARGV, and ARGV[3] limit (≥ 0),
// ARGV[4] slots asked, ARGV[5] lease duration µs, ARGV[6] the new lease's
// member, ARGV[7] live nodes. Returns {granted (0 refused, -1 member in
// use), used, resetIn µs, t µs, stamp µs}.
var leaseScript = rueidis.NewLuaScript(quotaLua + `
local limit = tonumber(ARGV[3])
if redis.call('ZSCORE', z, ARGV[6]) then return {-1, 0, 0, 0, 0} end
if limit == 0 or total >= limit then
  save(tonumber(ARGV[5]))
  local r = 0
  if limit > 0 then r = waitFor(limit) end
  return {0, total, r, t, 0}
end
local n, s, r = grant(limit, tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]))
return {n, total, r, t, s}
`)

// undoScript: quotaLua's KEYS and ARGV (ARGV[8], ARGV[9]: the lease and
// the slots to give back), ARGV[5] lease duration µs.
var undoScript = rueidis.NewLuaScript(quotaLua + `
save(tonumber(ARGV[5]))
return {total}
`)

// peekScript: KEYS the window; ARGV now (µs), window (µs), limit.
// Returns {used, resetIn µs}, as meter.Quotas.Peek.
var peekScript = rueidis.NewLuaScriptReadOnly(`
local z, h = KEYS[1], KEYS[2]
local w = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local t = tonumber(ARGV[1])
local hi = tonumber(redis.call('HGET', h, 't') or '0')
if hi > t then t = hi end
local s = redis.call('ZRANGE', z, '(' .. (t - w), '+inf', 'BYSCORE', 'WITHSCORES')
local counts, used = {}, 0
for i = 1, #s, 2 do
  local c = tonumber(redis.call('HGET', h, s[i]) or '0')
  counts[#counts + 1] = c
  used = used + c
end
if limit == 0 or used == 0 then return {used, 0} end
local need = 1
if limit > 0 and used >= limit then need = used - limit + 1 end
local acc, r = 0, 0
for i = 1, #counts do
  acc = acc + counts[i]
  if acc >= need then r = tonumber(s[2 * i]) + w - t break end
end
if r < 0 then r = 0 end
if r > w then r = w end
return {used, r}
`)

func (q *Quotas) keys(principal string, class int) []string {
	k := q.c.key(principal, "q"+strconv.Itoa(class))
	return []string{k, k + ":n"}
}

func (q *Quotas) leaseFor() int64 {
	if q.LeaseFor > 0 {
		return q.LeaseFor.Microseconds()
	}
	return DefaultLeaseFor.Microseconds()
}

func (q *Quotas) maxLease() int {
	if q.MaxLease > 0 {
		return q.MaxLease
	}
	return DefaultMaxLease
}

func (q *Quotas) nodes() int { return liveNodes(q.Nodes) }

// liveNodes is what a node divides shared allowances by: live() when it
// is set and positive, else 1.
func liveNodes(live func() int) int {
	if live != nil {
		if n := live(); n > 0 {
			return n
		}
	}
	return 1
}

func (q *Quotas) newMember() string {
	return q.c.node + ":" + strconv.FormatUint(q.ids.Add(1), 36)
}

func checkClass(class int) {
	if uint(class) >= meter.MaxClasses {
		panic("cluster: rate class out of range")
	}
}

// win returns this node's window for (principal, class), made if new.
func (q *Quotas) win(principal string, class int) *qwindow {
	k := winKey{principal, class}
	sh := &q.shards[maphash.String(q.seed, principal)%uint64(len(q.shards))]
	sh.mu.Lock()
	w := sh.m[k]
	if w == nil {
		w = &qwindow{next: 1}
		sh.m[k] = w
	}
	sh.mu.Unlock()
	return w
}

// take hands a slot of the current lease to callID if one serves a call
// at t under limit; w.mu held.
func (w *qwindow) take(limit int, t int64, callID uint64) bool {
	l := &w.cur
	if l.member == "" || l.limit != limit || l.used >= l.n || t > l.until {
		return false
	}
	l.used++
	l.calls = append(l.calls, callID)
	if t > w.last {
		w.last = t
	}
	return true
}

// retire moves the current lease to the history ring and returns what it
// leaves unused (its member and count), to give back; w.mu held.
func (w *qwindow) retire() (member string, unused int) {
	l := w.cur
	if l.member == "" {
		return "", 0
	}
	if l.used >= l.n {
		w.next = min(2*max(l.n, 1), DefaultMaxLease*4)
	} else {
		w.next = max(l.used, 1)
	}
	calls := w.past[w.pi].calls[:0]
	w.past[w.pi] = l
	w.pi = (w.pi + 1) % leaseHistory
	w.cur = lease{calls: calls}
	return l.member, l.n - l.used
}

// leaseResult is what a lease script answered.
type leaseResult struct {
	granted int
	used    int
	resetIn int64
	t       int64
	stamp   int64
	rest    []int64 // the script's further figures
}

// acquire admits one call from the window's lease, fetching the next one
// with fetchFn when the current cannot serve. fetchFn runs the lease
// script (with or without a spend reservation) for req slots under member,
// giving back ret's unused slots; it reports the lease (granted > 0) or a
// refusal, and self=true when it also decided the fetching call itself
// (the spend part refused it: the caller's result is in extra, no slot
// was taken). acquire returns the decision and whether this call did the
// fetch.
func (q *Quotas) acquire(principal string, class, limit int, now time.Time, callID uint64,
	fetchFn func(req int, member, ret string, unused int) (leaseResult, bool, error)) (res meter.QuotaResult, fetched, spendRefused bool) {
	t := now.UnixMicro()
	w := q.win(principal, class)
	w.mu.Lock()
	for w.gone {
		w.mu.Unlock()
		w = q.win(principal, class)
		w.mu.Lock()
	}
	for {
		if w.take(limit, t, callID) {
			l := &w.cur
			r := meter.QuotaResult{Allowed: true, Used: l.total - (l.n - l.used), Limit: limit,
				ResetIn: time.Duration(l.resetIn) * time.Microsecond, At: now}
			if l.until != t {
				r.At = time.UnixMicro(l.until) // counted at the lease's stamp
			}
			w.mu.Unlock()
			return r, fetched, false
		}
		if f := w.fetch; f != nil {
			w.mu.Unlock()
			<-f.done
			if !f.granted {
				r := f.res
				if r.ResetIn > 0 && t > f.t {
					r.ResetIn = max(r.ResetIn-time.Duration(t-f.t)*time.Microsecond, 0)
				}
				return r, false, false
			}
			w.mu.Lock()
			continue
		}
		// Become the fetcher.
		f := &fetch{done: make(chan struct{})}
		w.fetch = f
		ret, unused := w.retire()
		req := min(w.next, q.maxLease())
		w.mu.Unlock()
		var (
			lr     leaseResult
			member string
			refuse bool
			err    error
		)
		for range 3 {
			member = q.newMember()
			lr, refuse, err = fetchFn(req, member, ret, unused)
			if err != nil || lr.granted != -1 {
				break
			}
			ret, unused = "", 0 // given back by the first try
		}
		if err == nil && lr.granted == -1 {
			err = ErrRedis
		}
		w.mu.Lock()
		w.fetch = nil
		fetched = true
		switch {
		case err != nil:
			// The unused slots may not have been given back: they stay
			// counted until they leave the window (stricter).
			f.res = meter.QuotaResult{Limit: limit, Err: err}
		case refuse:
			// The spend part refused this call and nothing was granted:
			// the waiters fetch for themselves.
			f.granted = true
			spendRefused = true
		case lr.granted == 0:
			f.res = meter.QuotaResult{Used: lr.used, Limit: limit, ResetIn: time.Duration(lr.resetIn) * time.Microsecond}
			f.t = lr.t
		default:
			f.granted = true
			w.cur = lease{member: member, limit: limit, n: lr.granted, until: lr.stamp, total: lr.used,
				resetIn: lr.resetIn, calls: w.cur.calls}
		}
		close(f.done)
		if spendRefused {
			w.mu.Unlock()
			return meter.QuotaResult{Allowed: true, Limit: limit}, true, true
		}
		if !f.granted {
			w.mu.Unlock()
			return f.res, true, false
		}
		// The fetcher takes the first slot of its lease (its now is at
		// most the stamp) at the top of the loop, the lock held since.
	}
}

// Admit decides one call as meter.Quotas.Admit does: from this node's
// lease of the window when it has a slot for the call (no round trip),
// else by taking the next lease (one round trip). On a Redis failure it
// returns a result with Err set and nothing counted (the script ran
// whole or not at all; if its answer was lost, the lease stays counted
// until it leaves the window: stricter, never looser).
func (q *Quotas) Admit(principal string, class, limit int, now time.Time, callID uint64) meter.QuotaResult {
	checkClass(class)
	if limit < 0 {
		return meter.QuotaResult{Allowed: true, Limit: limit}
	}
	res, _, _ := q.acquire(principal, class, limit, now, callID, func(req int, member, ret string, unused int) (leaseResult, bool, error) {
		lr, err := q.runLease(leaseScript, q.keys(principal, class), q.leaseArgs(now.UnixMicro(), limit, req, member, ret, unused), 5)
		return lr, false, err
	})
	return res
}

// leaseArgs are a lease script's ARGV; t 0 decides at the window's own
// time (giving back only).
func (q *Quotas) leaseArgs(t int64, limit, req int, member, ret string, unused int, more ...string) []string {
	return append([]string{strconv.FormatInt(t, 10), strconv.FormatInt(q.window, 10), strconv.Itoa(limit),
		strconv.Itoa(req), strconv.FormatInt(q.leaseFor(), 10), member, strconv.Itoa(q.nodes()), ret, strconv.Itoa(unused)}, more...)
}

// runLease runs a lease script and reads its first five figures (and
// returns them all).
func (q *Quotas) runLease(s *rueidis.Lua, keys, args []string, n int) (leaseResult, error) {
	v, err := ints(q.c.run(s, keys, args))
	if err == nil && len(v) != n {
		err = ErrRedis
	}
	if err != nil {
		return leaseResult{}, err
	}
	return leaseResult{granted: int(v[0]), used: int(v[1]), resetIn: v[2], t: v[3], stamp: v[4], rest: v[5:]}, nil
}

func indexOf(calls []uint64, id uint64) int {
	for i, c := range calls {
		if c == id {
			return i
		}
	}
	return -1
}

// Undo gives back the slot of callID to the shared window (one round
// trip); idempotent. A call not among the window's last leases on this
// node, or a Redis failure, leaves the slot taken until it leaves the
// window.
func (q *Quotas) Undo(principal string, class int, callID uint64) {
	checkClass(class)
	w := q.win(principal, class)
	w.mu.Lock()
	member := ""
	if i := indexOf(w.cur.calls, callID); i >= 0 {
		member = w.cur.member
		w.cur.calls = append(w.cur.calls[:i], w.cur.calls[i+1:]...)
	} else {
		for j := range w.past {
			l := &w.past[j]
			if i := indexOf(l.calls, callID); i >= 0 {
				member = l.member
				l.calls = append(l.calls[:i], l.calls[i+1:]...)
				break
			}
		}
	}
	w.mu.Unlock()
	if member == "" {
		return
	}
	q.c.run(undoScript, q.keys(principal, class), q.leaseArgs(0, 0, 0, "", member, 1))
}

// Peek reports the calls in the window ending at now, cluster-wide
// (leased slots included, used or not), and the time until the next
// could pass; 0, 0 when Redis cannot be read.
func (q *Quotas) Peek(principal string, class, limit int, now time.Time) (used int, resetIn time.Duration) {
	checkClass(class)
	v, err := ints(q.c.run(peekScript, q.keys(principal, class),
		[]string{strconv.FormatInt(now.UnixMicro(), 10), strconv.FormatInt(q.window, 10), strconv.Itoa(limit)}))
	if err != nil || len(v) != 2 {
		return 0, 0
	}
	return int(v[0]), time.Duration(v[1]) * time.Microsecond
}

// Sweep gives back the unused slots of leases that stopped serving
// (pipelined, one round trip in all) and forgets the windows idle for a
// window and a lease. Redis expires idle windows itself.
func (q *Quotas) Sweep(now time.Time) int {
	return q.giveBackIdle(now.UnixMicro(), false)
}

// Close gives back every lease's unused slots (at shutdown: the node
// leaves).
func (q *Quotas) Close() { q.giveBackIdle(0, true) }

func (q *Quotas) giveBackIdle(t int64, all bool) (evicted int) {
	var cmds []rueidis.LuaExec
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.Lock()
		for k, w := range sh.m {
			w.mu.Lock()
			if w.fetch == nil && (all || t > w.cur.until) {
				if member, unused := w.retire(); unused > 0 {
					cmds = append(cmds, rueidis.LuaExec{Keys: q.keys(k.principal, k.class),
						Args: q.leaseArgs(0, 0, 0, "", member, unused)})
				}
				if !all && t-w.last > q.window+q.leaseFor() {
					w.gone = true
					delete(sh.m, k)
					evicted++
				}
			}
			w.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	if len(cmds) > 0 {
		ctx, cancel := q.c.ctx()
		undoScript.ExecMulti(ctx, q.c.rdb, cmds...)
		cancel()
	}
	return evicted
}
