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
	"github.com/toolgate/toolgate/money"
)

// DefaultReservationTTL is how long an open reservation holds its cost
// when Spend.TTL is 0: longer than any call can take (a tool's timeout is
// at most 10 minutes, plus settlement), so that a live node's reservation
// never expires under it, while a dead node's is given back.
const DefaultReservationTTL = 15 * time.Minute

// maxExact is the largest figure Lua's doubles hold exactly (2^53 - 1
// micro-USD, about 9 billion USD); Spend refuses sums past it with
// meter.ReasonOverflow, as meter.Spend does past money.Micros.
const maxExact = 1<<53 - 1

// Spend is gateway.SpendStore on Redis: per-day spend under a cap and
// prepaid credits, shared by every node, with meter.Spend's semantics.
//
// Keys of a principal p (all under the hash tag {p}):
//
//	prefix{p}:c:<day>  hash node → micro-USD that node committed on day
//	                   (its own contribution; expires after three days)
//	prefix{p}:r        hash reservation id → "<day>:<cost>:<credits 0|1>"
//	prefix{p}:rx       sorted set reservation id → expiry (Redis ms)
//	prefix{p}:a        hash bal (credits, exists iff prepaid), held
//	                   (credits held by open reservations), r:<day>
//	                   (cost held on day by open reservations)
//
// Every check and hold in Redis is one Lua script, atomic across nodes.
// For a principal without credits Reserve takes a budget slice (one
// reservation for many calls, slices.go) and reserves calls from it in
// memory; commits of slice reservations are queued and batched
// (commits.go). Per-call reservations (credits, a budget within a few
// calls of its cap, the Decider's one-script decision) are one script
// each, as are their commits. Reservations expire TTL after they were
// made (on Redis's clock): every script first gives back the expired
// ones, so a dead node's reservations stop holding the cap. Commit and
// Release are idempotent by reservation id: the first one closes it,
// later ones report false (this node knows which of its reservations
// are open).
//
// A node's committed spend is its own hash field, so Restore (from the
// node's ledger at start) sets that field and never adds to it: restoring
// after Redis lost data, from several nodes at once, gives the exact sum.
// RestoreBalance seeds a balance only where Redis has none (the shared
// balance, topped up and debited by every node, is newer than any one
// node's ledger).
//
// Commit and TopUp call fn after the script, with the figures it
// returned: they are exact for that write, but the order in which
// concurrent callers on one node run fn need not be the order of the
// writes. Figures are exact up to 2^53-1 micro-USD. Safe for concurrent
// use.
type Spend struct {
	c *Client
	// TTL is how long a reservation holds its cost (0:
	// DefaultReservationTTL). Set before use.
	TTL time.Duration
	// OnLost, if set, is called (on a goroutine of its own) when queued
	// commits could not be confirmed by Redis after retries: this node's
	// contribution then lacks them until it is set from the ledger again
	// (the caller's Gateway.RestoreSpend). Set before use.
	OnLost func(err error)
	// SliceFor is how long a budget slice serves reservations (0:
	// DefaultSliceFor); MaxSlice caps a slice at that many calls' cost
	// (0: DefaultMaxSlice; 1 turns slices off: every reservation is one
	// round trip). Nodes reports the live nodes (nil: 1). Set before use.
	SliceFor time.Duration
	MaxSlice int
	Nodes    func() int

	ids     atomic.Uint64
	seed    maphash.Seed
	open    [32]openShard
	slices  [32]sliceShard
	cm      committer
	backs   giveBacks
	tick    sync.Once
	stop    chan struct{}
	stopped sync.Once
}

// openShard holds the reservations this Spend made that are still open
// here: id → its state (and its slice).
type openShard struct {
	mu sync.Mutex
	m  map[uint64]openRes
}

type openRes struct {
	state uint8
	sl    *slice // openSlice: the slice it was reserved from
}

const (
	openCap     = 1 // holds a cap's figure only
	openCredits = 2 // holds credits: committed synchronously
	committing  = 3 // queued for the shared store
	openSlice   = 4 // reserved from a budget slice (slices.go)
)

var (
	_ gateway.SpendStore    = (*Spend)(nil)
	_ gateway.LocalReserver = (*Spend)(nil)
)

// NewSpend returns the shared spend store on c.
func NewSpend(c *Client) *Spend {
	s := &Spend{c: c, seed: maphash.MakeSeed(), stop: make(chan struct{})}
	for i := range s.open {
		s.open[i].m = map[uint64]openRes{}
	}
	for i := range s.slices {
		s.slices[i].m = map[sliceKey]*slices{}
	}
	s.cm.idle = sync.NewCond(&s.cm.mu)
	s.cm.pendingOf = map[string]int{}
	var b [8]byte
	rand.Read(b[:])
	// Ids start at a random point of a 62-bit space: distinct from other
	// nodes' and from this node's before a restart (Reserve also refuses
	// an id still open, and draws the next).
	s.ids.Store(binary.BigEndian.Uint64(b[:]) >> 2)
	return s
}

// purgeLua gives back the reservations whose expiry has passed; it
// expects r, rx and acct to be set and defines nowms.
const purgeLua = `
local tm = redis.call('TIME')
local nowms = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local function giveback(id)
  local v = redis.call('HGET', r, id)
  if v then
    local d, c, cr = string.match(v, '^(%-?%d+):(%d+):(%d)$')
    if redis.call('HINCRBY', acct, 'r:' .. d, '-' .. c) == 0 then redis.call('HDEL', acct, 'r:' .. d) end
    if cr == '1' then redis.call('HINCRBY', acct, 'held', '-' .. c) end
    redis.call('HDEL', r, id, 'a:' .. id)
  end
  redis.call('ZREM', rx, id)
  return v
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', rx, '-inf', nowms)) do giveback(id) end
local function committed(k)
  local sum = 0
  for _, v in ipairs(redis.call('HVALS', k)) do sum = sum + tonumber(v) end
  return sum
end
`

// reserveScript: KEYS committed(day), r, rx, acct; ARGV day, cost, limit,
// hasLimit (1|0), id, ttl ms. Returns {code, spent, reserved, hasBalance,
// available}: code 0 reserved, 1 cap, 2 credits, 3 overflow, 4 id in use.
var reserveScript = rueidis.NewLuaScript(`
local r, rx, acct = KEYS[2], KEYS[3], KEYS[4]
` + purgeLua + `
local a = redis.call('HMGET', acct, 'bal', 'held', 'r:' .. ARGV[1])
local hasBal = a[1] and 1 or 0
local bal, held, reserved = tonumber(a[1] or '0'), tonumber(a[2] or '0'), tonumber(a[3] or '0')
local spent = committed(KEYS[1]) + reserved
local cost, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local avail = bal - held
local out = {0, spent, reserved, hasBal, avail}
if ARGV[4] == '1' and spent + cost > limit then out[1] = 1 return out end
if spent + cost > ` + strconv.Itoa(maxExact) + ` or held + cost > ` + strconv.Itoa(maxExact) + ` then out[1] = 3 return out end
if hasBal == 1 and cost > avail then out[1] = 2 return out end
if redis.call('HSETNX', r, ARGV[5], ARGV[1] .. ':' .. ARGV[2] .. ':' .. hasBal) == 0 then out[1] = 4 return out end
redis.call('ZADD', rx, nowms + tonumber(ARGV[6]), ARGV[5])
redis.call('HINCRBY', acct, 'r:' .. ARGV[1], ARGV[2])
if hasBal == 1 then redis.call('HINCRBY', acct, 'held', ARGV[2]) end
return out
`)

// commitScript: KEYS committed(day), r, rx, acct; ARGV id, node, keep ms.
// Returns {1, spentToday, balance, hasBalance} or {0}.
var commitScript = rueidis.NewLuaScript(`
local r, rx, acct = KEYS[2], KEYS[3], KEYS[4]
` + purgeLua + `
local v = redis.call('HGET', r, ARGV[1])
if not v then return {0} end
giveback(ARGV[1])
local d, c, cr = string.match(v, '^(%-?%d+):(%d+):(%d)$')
if cr == '1' then redis.call('HINCRBY', acct, 'bal', '-' .. c) end
redis.call('HINCRBY', KEYS[1], ARGV[2], c)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local a = redis.call('HMGET', acct, 'bal', 'r:' .. d)
return {1, committed(KEYS[1]) + tonumber(a[2] or '0'), tonumber(a[1] or '0'), a[1] and 1 or 0}
`)

// releaseScript: KEYS r, rx, acct; ARGV id. Returns 1 when released.
var releaseScript = rueidis.NewLuaScript(`
local r, rx, acct = KEYS[1], KEYS[2], KEYS[3]
` + purgeLua + `
if giveback(ARGV[1]) then return {1} end
return {0}
`)

// statusScript: KEYS committed(day), r, rx, acct; ARGV day. Returns
// {committed, reserved, balance, hasBalance}.
var statusScript = rueidis.NewLuaScript(`
local r, rx, acct = KEYS[2], KEYS[3], KEYS[4]
` + purgeLua + `
local a = redis.call('HMGET', acct, 'bal', 'r:' .. ARGV[1])
return {committed(KEYS[1]), tonumber(a[2] or '0'), tonumber(a[1] or '0'), a[1] and 1 or 0}
`)

// topUpScript: KEYS acct; ARGV amount. Returns {ok, balance}.
var topUpScript = rueidis.NewLuaScript(`
local b = tonumber(redis.call('HGET', KEYS[1], 'bal') or '0')
local n = b + tonumber(ARGV[1])
if n > ` + strconv.Itoa(maxExact) + ` or n < -` + strconv.Itoa(maxExact) + ` then return {0, b} end
return {1, redis.call('HINCRBY', KEYS[1], 'bal', ARGV[1])}
`)

// keepCommitted is how long a day's committed spend stays in Redis after
// its last commit (meter.Spend keeps two days before the UTC date).
const keepCommitted = 3 * 24 * time.Hour

func (s *Spend) keys(principal string, day meter.Day) []string {
	return []string{
		s.c.key(principal, "c:"+strconv.Itoa(int(day))),
		s.c.key(principal, "r"),
		s.c.key(principal, "rx"),
		s.c.key(principal, "a"),
	}
}

func (s *Spend) ttl() time.Duration {
	if s.TTL > 0 {
		return s.TTL
	}
	return DefaultReservationTTL
}

func (s *Spend) nextID() uint64 {
	for {
		if id := s.ids.Add(1); id != 0 {
			return id
		}
	}
}

// Reserve reserves cost as meter.Spend.Reserve does, in one round trip
// (two, rarely, when the drawn id is still open). A cost of 0 passes
// without a round trip, holding nothing and reporting no figures. On a
// Redis failure the result has Err set and nothing is held (or, if the
// script ran and its answer was lost, a hold that expires after TTL).
func (s *Spend) Reserve(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) (meter.Reservation, meter.SpendResult) {
	cost = max(cost, 0)
	res := meter.SpendResult{Limit: limit}
	if cost == 0 {
		res.OK = true
		return meter.NewReservation(0, principal, day, 0), res
	}
	if s.MaxSlice != 1 {
		if r, res, per := s.reserveSliced(principal, day, cost, limit, hasLimit); !per {
			return r, res
		}
	}
	return s.reservePlain(principal, day, cost, limit, hasLimit)
}

// reservePlain reserves cost for one call in one round trip.
func (s *Spend) reservePlain(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) (meter.Reservation, meter.SpendResult) {
	res := meter.SpendResult{Limit: limit}
	hl := "0"
	if hasLimit {
		hl = "1"
	}
	keys := s.keys(principal, day)
	for range 3 {
		id := s.nextID()
		v, err := ints(s.c.run(reserveScript, keys, []string{strconv.Itoa(int(day)), strconv.FormatInt(int64(cost), 10),
			strconv.FormatInt(int64(limit), 10), hl, strconv.FormatUint(id, 10), strconv.FormatInt(s.ttl().Milliseconds(), 10)}))
		if err == nil && len(v) != 5 {
			err = ErrRedis
		}
		if err != nil {
			if !notSent(err) {
				s.dropOrphan(principal, day, id) // the script may have reserved it
			}
			res.Err = err
			return meter.NewReservation(0, principal, day, 0), res
		}
		res.SpentToday, res.Reserved = money.Micros(v[1]), money.Micros(v[2])
		res.HasBalance = v[3] == 1
		if res.HasBalance {
			res.Balance = money.Micros(v[4])
		}
		switch v[0] {
		case 0:
			res.OK = true
			s.track(id, res.HasBalance)
			return meter.NewReservation(id, principal, day, cost), res
		case 1:
			res.Reason = meter.ReasonCapExceeded
		case 2:
			res.Reason = meter.ReasonInsufficientCredits
		case 3:
			res.Reason = meter.ReasonOverflow
		case 4:
			continue // the id is open already: draw the next
		}
		return meter.NewReservation(0, principal, day, 0), res
	}
	res.Err = ErrRedis
	return meter.NewReservation(0, principal, day, 0), res
}

// Commit bills r, adding its cost to this node's contribution to the
// day (and debiting credits if it held them), and calls fn after it. It
// reports false, not calling fn, when r is not open here (committed or
// released already, or made by another Spend).
//
// A reservation of its own (one call: credits, a budget within a few
// calls of its cap, or made with a quota lease by the Decider) is
// committed in one round trip before fn runs, fn seeing the figures the
// write produced (the balance after a debit, which the caller's ledger
// records in the order of balance changes). A reservation made from a
// budget slice of several calls (slices.go) is queued and committed
// asynchronously, batched with the others in flight (one script per
// principal and day, pipelined, idempotent by reservation id): fn is
// called at once with no figures (HasBalance false, SpentToday 0) and the
// caller does not wait for Redis. Until the queued commit lands its cost
// stays held by the slice, so the cap's figure (committed plus reserved)
// never understates the spend; Status waits for the principal's queued
// commits. A queued commit Redis does not confirm after retries (Redis
// unreachable, or the reservation expired) is reported to OnLost: the
// caller's ledger is the record, and setting the node's contribution from
// it (Restore) puts Redis right. (A node killed with commits queued has
// them in its ledger and in its slice's hold: after its restart they
// count twice in the cap's figure, stricter, until the slice's TTL.) A
// zero reservation always commits, fn seeing the current figures.
func (s *Spend) Commit(r meter.Reservation, fn func(meter.Committed)) bool {
	if r.ID() == 0 {
		if fn != nil {
			st := s.Status(r.Principal(), r.Day())
			fn(meter.Committed{SpentToday: st.Today(), BalanceAfter: st.Balance, HasBalance: st.HasBalance})
		}
		return true
	}
	switch o := s.claim(r.ID(), true); o.state {
	case openSlice:
		used, released := s.sliceCommitted(r, o.sl, r.Cost())
		s.cm.enqueue(s, commitItem{r.Principal(), r.Day(), o.sl.id, used, released, r.ID()})
		if fn != nil {
			fn(meter.Committed{})
		}
		return true
	case openCap, openCredits:
	default:
		return false
	}
	v, err := ints(s.c.run(commitScript, s.keys(r.Principal(), r.Day()),
		[]string{strconv.FormatUint(r.ID(), 10), s.c.node, strconv.FormatInt(keepCommitted.Milliseconds(), 10)}))
	if err != nil || len(v) != 4 || v[0] != 1 {
		return false
	}
	if fn != nil {
		fn(meter.Committed{SpentToday: money.Micros(v[1]), BalanceAfter: money.Micros(v[2]), HasBalance: v[3] == 1})
	}
	return true
}

// track records a reservation this Spend made.
func (s *Spend) track(id uint64, credits bool) {
	st := uint8(openCap)
	if credits {
		st = openCredits
	}
	s.setOpen(id, openRes{state: st})
}

// trackSlice records a reservation made from sl.
func (s *Spend) trackSlice(id uint64, sl *slice, _ money.Micros) {
	s.setOpen(id, openRes{state: openSlice, sl: sl})
}

func (s *Spend) setOpen(id uint64, o openRes) {
	sh := &s.open[id%uint64(len(s.open))]
	sh.mu.Lock()
	sh.m[id] = o
	sh.mu.Unlock()
}

// claim returns id's state and closes it: for a commit, a cap-only
// reservation becomes committing (and leaves when its commit lands);
// otherwise it is forgotten. A reservation not open has state 0.
func (s *Spend) claim(id uint64, commit bool) openRes {
	sh := &s.open[id%uint64(len(s.open))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	o := sh.m[id]
	switch {
	case o.state == committing || o.state == 0:
		return openRes{}
	case commit && o.state == openSlice:
		sh.m[id] = openRes{state: committing}
	default:
		delete(sh.m, id)
	}
	return o
}

func (s *Spend) forget(id uint64) {
	sh := &s.open[id%uint64(len(s.open))]
	sh.mu.Lock()
	delete(sh.m, id)
	sh.mu.Unlock()
}

// Release gives r's cost back; false when it is not open here (or Redis
// could not be reached: the hold then expires after TTL).
func (s *Spend) Release(r meter.Reservation) bool {
	if r.ID() == 0 {
		return true
	}
	o := s.claim(r.ID(), false)
	switch o.state {
	case 0:
		return false
	case openSlice:
		return s.sliceRelease(r, o.sl, r.Cost())
	}
	k := s.keys(r.Principal(), r.Day())
	v, err := ints(s.c.run(releaseScript, k[1:], []string{strconv.FormatUint(r.ID(), 10)}))
	return err == nil && len(v) == 1 && v[0] == 1
}

// Status reads the principal's committed and reserved spend on day (all
// nodes) and its balance in one script; zero when Redis cannot be read.
func (s *Spend) Status(principal string, day meter.Day) meter.SpendStatus {
	s.cm.wait(principal)
	v, err := ints(s.c.run(statusScript, s.keys(principal, day), []string{strconv.Itoa(int(day))}))
	if err != nil || len(v) != 4 {
		return meter.SpendStatus{}
	}
	// This node's unused slice is budget set aside, not held by calls.
	reserved := max(money.Micros(v[1])-s.unusedSlice(principal, day), 0)
	return meter.SpendStatus{Committed: money.Micros(v[0]), Reserved: reserved,
		Balance: money.Micros(v[2]), HasBalance: v[3] == 1}
}

// Balance returns the shared credits balance and whether there is one.
func (s *Spend) Balance(principal string) (money.Micros, bool) {
	ctx, cancel := s.c.ctx()
	defer cancel()
	b, err := s.c.rdb.Do(ctx, s.c.rdb.B().Hget().Key(s.c.key(principal, "a")).Field("bal").Build()).AsInt64()
	if err != nil {
		return 0, false
	}
	return money.Micros(b), true
}

// TopUp adds amount to the shared balance, calling fn with the balance
// the write produced; false, changing nothing, when the balance would
// leave ±(2^53-1) or Redis could not be reached.
func (s *Spend) TopUp(principal string, amount money.Micros, fn func(balanceAfter money.Micros)) (money.Micros, bool) {
	v, err := ints(s.c.run(topUpScript, []string{s.c.key(principal, "a")}, []string{strconv.FormatInt(int64(amount), 10)}))
	if err != nil || len(v) != 2 {
		return 0, false
	}
	if v[0] != 1 {
		return money.Micros(v[1]), false
	}
	if fn != nil {
		fn(money.Micros(v[1]))
	}
	return money.Micros(v[1]), true
}

// Restore sets this node's contribution to principal's spend on day to
// spent (its ledger's sum): idempotent, it never adds.
func (s *Spend) Restore(principal string, day meter.Day, spent money.Micros) {
	s.Flush()
	ctx, cancel := s.c.ctx()
	defer cancel()
	k := s.keys(principal, day)[0]
	s.c.rdb.DoMulti(ctx,
		s.c.rdb.B().Hset().Key(k).FieldValue().FieldValue(s.c.node, strconv.FormatInt(int64(spent), 10)).Build(),
		s.c.rdb.B().Pexpire().Key(k).Milliseconds(keepCommitted.Milliseconds()).Build())
}

// RestoreBalance seeds principal's balance when Redis has none (HSETNX):
// a balance in Redis is the cluster's, newer than this node's ledger.
func (s *Spend) RestoreBalance(principal string, balance money.Micros) {
	ctx, cancel := s.c.ctx()
	defer cancel()
	s.c.rdb.Do(ctx, s.c.rdb.B().Hsetnx().Key(s.c.key(principal, "a")).Field("bal").Value(strconv.FormatInt(int64(balance), 10)).Build())
}

// Sweep gives back the unused rest of budget slices that stopped serving
// (also done every SliceFor once slices are in use). Committed days
// expire in Redis, reservations when their TTL passes.
func (s *Spend) Sweep(now time.Time) int {
	s.retireSlices(now, false)
	return 0
}
