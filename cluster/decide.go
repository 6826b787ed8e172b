package cluster

import (
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// Decider is gateway.AdmitReserver on the shared Quotas and Spend: a
// priced call's quota admission and spend reservation in one Lua script,
// one round trip. The quota slot is taken only when the reservation is
// made too, so a call the cap or the credits refuse costs no Undo. Its
// slots and reservations are the Quotas' and Spend's own (Undo, Commit
// and Release work on them). Safe for concurrent use.
type Decider struct {
	q *Quotas
	s *Spend
}

var _ gateway.AdmitReserver = (*Decider)(nil)

// NewDecider returns the one-script decision on q and s (one Client).
func NewDecider(q *Quotas, s *Spend) *Decider { return &Decider{q: q, s: s} }

// admitReserveScript: KEYS quota window, committed(day), r, rx, acct;
// ARGV now µs, window µs, quota limit (< 0 unlimited), member, day,
// cost, cap, hasCap, reservation id, ttl ms. Returns {admitted, used,
// resetIn µs, at µs, spend code (0 reserved, 1 cap, 2 credits, 3
// overflow, 4 id in use), spent, reserved, hasBalance, available}.
var admitReserveScript = rueidis.NewLuaScript(`
local k = KEYS[1]
local t = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local n = 0
if limit >= 0 then
  local newest = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
  if newest[2] and tonumber(newest[2]) > t then t = tonumber(newest[2]) end
  redis.call('ZREMRANGEBYSCORE', k, '-inf', t - w)
  n = redis.call('ZCARD', k)
  if limit == 0 then return {0, n, 0, 0, 0, 0, 0, 0, 0} end
  if n >= limit then
    local at = redis.call('ZRANGE', k, n - limit, n - limit, 'WITHSCORES')
    return {0, n, tonumber(at[2]) + w - t, 0, 0, 0, 0, 0, 0}
  end
end
local r, rx, acct = KEYS[3], KEYS[4], KEYS[5]
` + purgeLua + `
local day = ARGV[5]
local a = redis.call('HMGET', acct, 'bal', 'held', 'r:' .. day)
local hasBal = a[1] and 1 or 0
local bal, held, reserved = tonumber(a[1] or '0'), tonumber(a[2] or '0'), tonumber(a[3] or '0')
local spent = committed(KEYS[2]) + reserved
local cost, cap = tonumber(ARGV[6]), tonumber(ARGV[7])
local avail = bal - held
local code = 0
if ARGV[8] == '1' and spent + cost > cap then code = 1
elseif spent + cost > ` + strconv.Itoa(maxExact) + ` or held + cost > ` + strconv.Itoa(maxExact) + ` then code = 3
elseif hasBal == 1 and cost > avail then code = 2
elseif redis.call('HSETNX', r, ARGV[9], day .. ':' .. ARGV[6] .. ':' .. hasBal) == 0 then code = 4 end
if code ~= 0 then return {1, n, 0, 0, code, spent, reserved, hasBal, avail} end
redis.call('ZADD', rx, nowms + tonumber(ARGV[10]), ARGV[9])
redis.call('HINCRBY', acct, 'r:' .. day, ARGV[6])
if hasBal == 1 then redis.call('HINCRBY', acct, 'held', ARGV[6]) end
if limit < 0 then return {1, 0, 0, 0, 0, spent, reserved, hasBal, avail} end
redis.call('ZADD', k, t, ARGV[4])
redis.call('PEXPIRE', k, math.floor(w / 1000) + 1000)
local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
return {1, n + 1, tonumber(oldest[2]) + w - t, t, 0, spent, reserved, hasBal, avail}
`)

// AdmitReserve decides the quota and reserves cost in one round trip
// (gateway.AdmitReserver). On a Redis failure both results carry Err and
// nothing is held (or, if the answer was lost, a slot and a hold that
// expire: stricter, never looser).
func (d *Decider) AdmitReserve(principal string, class, limit int, now time.Time, callID uint64,
	day meter.Day, cost, spendLimit money.Micros, hasLimit bool) (meter.QuotaResult, meter.Reservation, meter.SpendResult) {
	checkClass(class)
	cost = max(cost, 0)
	none := meter.NewReservation(0, principal, day, 0)
	sr := meter.SpendResult{Limit: spendLimit}
	hl := "0"
	if hasLimit {
		hl = "1"
	}
	t := now.UnixMicro()
	keys := append([]string{d.q.key(principal, class)}, d.s.keys(principal, day)...)
	for range 3 {
		id := d.s.nextID()
		v, err := ints(d.q.c.run(admitReserveScript, keys, []string{
			strconv.FormatInt(t, 10), strconv.FormatInt(d.q.window, 10), strconv.Itoa(limit), d.q.member(callID),
			strconv.Itoa(int(day)), strconv.FormatInt(int64(cost), 10), strconv.FormatInt(int64(spendLimit), 10), hl,
			strconv.FormatUint(id, 10), strconv.FormatInt(d.s.ttl().Milliseconds(), 10)}))
		if err == nil && len(v) != 9 {
			err = ErrRedis
		}
		if err != nil {
			sr.Err = err
			return meter.QuotaResult{Limit: limit, Err: err}, none, sr
		}
		q := meter.QuotaResult{Allowed: v[0] == 1, Used: int(v[1]), Limit: limit, ResetIn: time.Duration(v[2]) * time.Microsecond}
		if v[3] != 0 {
			if v[3] == t {
				q.At = now
			} else {
				q.At = time.UnixMicro(v[3])
			}
		}
		if !q.Allowed {
			return q, none, sr
		}
		sr.SpentToday, sr.Reserved = money.Micros(v[5]), money.Micros(v[6])
		sr.HasBalance = v[7] == 1
		if sr.HasBalance {
			sr.Balance = money.Micros(v[8])
		}
		switch v[4] {
		case 0:
			sr.OK = true
			return q, meter.NewReservation(id, principal, day, cost), sr
		case 1:
			sr.Reason = meter.ReasonCapExceeded
		case 2:
			sr.Reason = meter.ReasonInsufficientCredits
		case 3:
			sr.Reason = meter.ReasonOverflow
		case 4:
			continue
		}
		return q, none, sr
	}
	sr.Err = ErrRedis
	return meter.QuotaResult{Limit: limit, Err: ErrRedis}, none, sr
}
