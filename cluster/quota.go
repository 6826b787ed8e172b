package cluster

import (
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
)

// Quotas is gateway.QuotaStore on Redis: an exact sliding window per
// (principal, rate class) shared by every node, with meter.Quotas's
// semantics at microsecond resolution.
//
// Each window is a sorted set prefix{principal}:q<class> of the calls in
// it, scored by admission time in Unix microseconds, the member being
// "<node>:<callID>" (call ids are unique per node, so members are unique
// in the cluster). Admit is one Lua script (one round trip): drop the
// calls out of the window, count, add when under the limit, and set the
// key to expire one window after its newest call. As in meter.Quotas, a
// call whose now runs behind the window's newest call (clock skew between
// nodes) is stamped with that newest time, so no window-long interval of
// stamps ever holds more than the limit. Nodes' clocks should be in sync
// (NTP): a node running ahead by d lets calls leave its view of the window
// d early.
//
// Undo is ZREM of the call's member. Sweep does nothing: Redis expires
// idle windows itself. Safe for concurrent use.
type Quotas struct {
	c      *Client
	window int64 // microseconds
}

var _ gateway.QuotaStore = (*Quotas)(nil)

// NewQuotas returns the shared quota store on c with the given window (0:
// meter.DefaultWindow).
func NewQuotas(c *Client, window time.Duration) *Quotas {
	if window <= 0 {
		window = meter.DefaultWindow
	}
	return &Quotas{c: c, window: window.Microseconds()}
}

// admitScript: KEYS[1] the window; ARGV now (µs), window (µs), limit,
// member. Returns {allowed, used, resetIn µs, at µs}.
var admitScript = rueidis.NewLuaScript(`
local k = KEYS[1]
local t = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local newest = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) > t then t = tonumber(newest[2]) end
redis.call('ZREMRANGEBYSCORE', k, '-inf', t - w)
local n = redis.call('ZCARD', k)
if limit == 0 then return {0, n, 0, 0} end
if n < limit then
  redis.call('ZADD', k, t, ARGV[4])
  redis.call('PEXPIRE', k, math.floor(w / 1000) + 1000)
  local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  return {1, n + 1, tonumber(oldest[2]) + w - t, t}
end
local at = redis.call('ZRANGE', k, n - limit, n - limit, 'WITHSCORES')
return {0, n, tonumber(at[2]) + w - t, 0}
`)

// peekScript: KEYS[1] the window; ARGV now (µs), window (µs), limit.
// Returns {used, resetIn µs}, as meter.Quotas.Peek.
var peekScript = rueidis.NewLuaScriptReadOnly(`
local t = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local s = redis.call('ZRANGE', KEYS[1], '(' .. (t - w), '+inf', 'BYSCORE', 'WITHSCORES')
local used = #s / 2
if limit == 0 or used == 0 then return {used, 0} end
local i = 1
if limit > 0 and used >= limit then i = used - limit + 1 end
local r = tonumber(s[2 * i]) + w - t
if r < 0 then r = 0 end
if r > w then r = w end
return {used, r}
`)

func (q *Quotas) key(principal string, class int) string {
	return q.c.key(principal, "q"+strconv.Itoa(class))
}

func (q *Quotas) member(callID uint64) string {
	return q.c.node + ":" + strconv.FormatUint(callID, 10)
}

func checkClass(class int) {
	if uint(class) >= meter.MaxClasses {
		panic("cluster: rate class out of range")
	}
}

// Admit decides one call as meter.Quotas.Admit does, in one round trip.
// On a Redis failure it returns a result with Err set and nothing
// counted (the script either ran whole or not at all; its answer may
// have been lost, in which case the slot stays taken until it leaves the
// window: stricter, never looser).
func (q *Quotas) Admit(principal string, class, limit int, now time.Time, callID uint64) meter.QuotaResult {
	checkClass(class)
	if limit < 0 {
		return meter.QuotaResult{Allowed: true, Limit: limit}
	}
	t := now.UnixMicro()
	v, err := ints(q.c.run(admitScript, []string{q.key(principal, class)},
		[]string{strconv.FormatInt(t, 10), strconv.FormatInt(q.window, 10), strconv.Itoa(limit), q.member(callID)}))
	if err == nil && len(v) != 4 {
		err = ErrRedis
	}
	if err != nil {
		return meter.QuotaResult{Limit: limit, Err: err}
	}
	res := meter.QuotaResult{Allowed: v[0] == 1, Used: int(v[1]), Limit: limit, ResetIn: time.Duration(v[2]) * time.Microsecond}
	if res.Allowed {
		if v[3] == t {
			res.At = now
		} else {
			res.At = time.UnixMicro(v[3])
		}
	}
	return res
}

// Undo gives back the slot of callID (ZREM); idempotent. A Redis failure
// leaves the slot taken until it leaves the window.
func (q *Quotas) Undo(principal string, class int, callID uint64) {
	checkClass(class)
	ctx, cancel := q.c.ctx()
	defer cancel()
	q.c.rdb.Do(ctx, q.c.rdb.B().Zrem().Key(q.key(principal, class)).Member(q.member(callID)).Build())
}

// Peek reports the calls in the window ending at now, cluster-wide, and
// the time until the next could pass; 0, 0 when Redis cannot be read.
func (q *Quotas) Peek(principal string, class, limit int, now time.Time) (used int, resetIn time.Duration) {
	checkClass(class)
	v, err := ints(q.c.run(peekScript, []string{q.key(principal, class)},
		[]string{strconv.FormatInt(now.UnixMicro(), 10), strconv.FormatInt(q.window, 10), strconv.Itoa(limit)}))
	if err != nil || len(v) != 2 {
		return 0, 0
	}
	return int(v[0]), time.Duration(v[1]) * time.Microsecond
}

// Sweep does nothing: every window expires in Redis one window after its
// newest call.
func (q *Quotas) Sweep(time.Time) int { return 0 }
