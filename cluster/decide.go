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
// priced call's quota admission and spend reservation in one round trip
// (a slot of the node's quota lease and a reservation script, or one
// script taking the next lease and reserving). The quota slot is taken only when the reservation is
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

// admitReserveScript is leaseScript with a spend reservation: KEYS
// window, window hash, committed(day), r, rx, acct; ARGV leaseScript's
// (1-9), then day, cost, cap, hasCap, reservation id, ttl ms (10-15).
// Returns leaseScript's five figures, then {spend code (0 reserved, 1
// cap, 2 credits, 3 overflow, 4 id in use), spent, reserved, hasBalance,
// available}. The lease is granted only when the reservation is made.
var admitReserveScript = rueidis.NewLuaScript(quotaLua + `
local limit = tonumber(ARGV[3])
local d = tonumber(ARGV[5])
if redis.call('ZSCORE', z, ARGV[6]) then save(d) return {-1, 0, 0, 0, 0, 0, 0, 0, 0, 0} end
if limit == 0 or total >= limit then
  save(d)
  local rr = 0
  if limit > 0 then rr = waitFor(limit) end
  return {0, total, rr, t, 0, 0, 0, 0, 0, 0}
end
local r, rx, acct = KEYS[4], KEYS[5], KEYS[6]
` + purgeLua + `
local day = ARGV[10]
local a = redis.call('HMGET', acct, 'bal', 'held', 'r:' .. day)
local hasBal = a[1] and 1 or 0
local bal, held, reserved = tonumber(a[1] or '0'), tonumber(a[2] or '0'), tonumber(a[3] or '0')
local spent = committed(KEYS[3]) + reserved
local cost, cap = tonumber(ARGV[11]), tonumber(ARGV[12])
local avail = bal - held
local code = 0
if ARGV[13] == '1' and spent + cost > cap then code = 1
elseif spent + cost > ` + strconv.Itoa(maxExact) + ` or held + cost > ` + strconv.Itoa(maxExact) + ` then code = 3
elseif hasBal == 1 and cost > avail then code = 2
elseif redis.call('HSETNX', r, ARGV[14], day .. ':' .. ARGV[11] .. ':' .. hasBal) == 0 then code = 4 end
if code ~= 0 then save(d) return {1, total, 0, t, 0, code, spent, reserved, hasBal, avail} end
redis.call('ZADD', rx, nowms + tonumber(ARGV[15]), ARGV[14])
redis.call('HINCRBY', acct, 'r:' .. day, ARGV[11])
if hasBal == 1 then redis.call('HINCRBY', acct, 'held', ARGV[11]) end
local n, s, rr = grant(limit, tonumber(ARGV[4]), d, ARGV[6], tonumber(ARGV[7]))
return {n, total, rr, t, s, 0, spent, reserved, hasBal, avail}
`)

// AdmitReserve decides the quota and reserves cost (gateway.AdmitReserver):
// from the node's quota lease and one reservation script when the lease
// has a slot for the call, else in one script taking the next lease and
// reserving together. Either way one round trip. On a Redis failure both
// results carry Err and nothing is held (or, if the answer was lost, a
// lease and a hold that expire: stricter, never looser).
func (d *Decider) AdmitReserve(principal string, class, limit int, now time.Time, callID uint64,
	day meter.Day, cost, spendLimit money.Micros, hasLimit bool) (meter.QuotaResult, meter.Reservation, meter.SpendResult) {
	checkClass(class)
	cost = max(cost, 0)
	none := meter.NewReservation(0, principal, day, 0)
	if limit < 0 {
		res, sr := d.s.Reserve(principal, day, cost, spendLimit, hasLimit)
		return meter.QuotaResult{Allowed: true, Limit: limit, Err: sr.Err}, res, sr
	}
	hl := "0"
	if hasLimit {
		hl = "1"
	}
	var (
		mine    meter.SpendResult // decided by this call's own lease script
		mineRes = none
		decided bool
	)
	q, _, spendRefused := d.q.acquire(principal, class, limit, now, callID, func(req int, member, ret string, unused int) (leaseResult, bool, error) {
		keys := d.q.keys(principal, class)
		if d.s.sliceServes(principal, day, cost, spendLimit, hasLimit) {
			// The budget slice reserves the call: the quota lease alone.
			lr, err := d.q.runLease(leaseScript, keys, d.q.leaseArgs(now.UnixMicro(), limit, req, member, ret, unused), 5)
			return lr, false, err
		}
		keys = append(keys, d.s.keys(principal, day)...)
		id := d.s.nextID()
		lr, err := d.q.runLease(admitReserveScript, keys, d.q.leaseArgs(now.UnixMicro(), limit, req, member, ret, unused,
			strconv.Itoa(int(day)), strconv.FormatInt(int64(cost), 10), strconv.FormatInt(int64(spendLimit), 10), hl,
			strconv.FormatUint(id, 10), strconv.FormatInt(d.s.ttl().Milliseconds(), 10)), 10)
		if err != nil && !notSent(err) {
			d.s.dropOrphan(principal, day, id) // the script may have reserved it
		}
		if err != nil || lr.granted <= 0 {
			return lr, false, err
		}
		v := lr.rest
		sr := meter.SpendResult{Limit: spendLimit, SpentToday: money.Micros(v[1]), Reserved: money.Micros(v[2]), HasBalance: v[3] == 1}
		if sr.HasBalance {
			sr.Balance = money.Micros(v[4])
		}
		switch v[0] {
		case 0:
			sr.OK = true
			mineRes = meter.NewReservation(id, principal, day, cost)
			d.s.track(id, sr.HasBalance)
		case 1:
			sr.Reason = meter.ReasonCapExceeded
		case 2:
			sr.Reason = meter.ReasonInsufficientCredits
		case 3:
			sr.Reason = meter.ReasonOverflow
		case 4:
			return leaseResult{granted: -1}, false, nil // the id is open already: draw the next
		}
		mine, decided = sr, true
		return lr, !sr.OK, nil
	})
	if q.Err != nil {
		return q, none, meter.SpendResult{Limit: spendLimit, Err: q.Err}
	}
	if !q.Allowed {
		return q, none, meter.SpendResult{Limit: spendLimit}
	}
	if spendRefused {
		return q, none, mine // no slot taken (At zero)
	}
	if decided {
		return q, mineRes, mine
	}
	// A slot of a lease: the reservation alone, one round trip.
	res, sr := d.s.Reserve(principal, day, cost, spendLimit, hasLimit)
	if sr.Err != nil || !sr.OK {
		// The slot goes back to the shared window at once (not to the
		// lease, where it would sit counted but unused): a refused call
		// takes no quota slot.
		d.q.Undo(principal, class, callID)
		if sr.Err != nil {
			return meter.QuotaResult{Limit: limit, Err: sr.Err}, none, sr
		}
		q.At = time.Time{}
		return q, none, sr
	}
	return q, res, sr
}
