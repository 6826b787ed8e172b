package cluster

import (
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// Budget slices: the spend side of leasing. For a principal without
// credits, Spend.Reserve does not ask Redis for every call: it reserves a
// slice of the remaining daily budget in Redis (one reservation, checked
// against the cap like any other) and reserves its calls from the slice
// in memory. Commits of slice reservations are queued (committer) and
// move their cost from the slice's reservation to the node's committed
// contribution; a reservation released while its slice serves goes back
// to the slice. A slice serves for SliceFor; when it is used up, runs out
// of time or the cap changed, the node takes the next one, giving back
// the unused rest in the same script. Sizes adapt like quota leases:
// twice the last slice when it was used up, what was used otherwise, and
// Redis grants at most a quarter of the remaining budget divided by the
// live nodes, never less than the call's cost and never more than what
// remains: the sum of committed spend and reservations (slices included)
// never passes the cap. A key whose cap is within a few calls of its
// spend gets slices of one call: exactly today's per-call reservation.
//
// A slice is a reservation with the reservation TTL: a dead node's
// unused slice holds its amount until that TTL gives it back. A principal
// found holding credits is reserved per call (its commits carry the
// balance after each debit); a balance topped up on a principal while a
// node holds a slice of it is seen at that node's next slice (within
// SliceFor): until then its calls are billed to the cap, not the credits.

// DefaultSliceFor is how long a budget slice serves reservations when
// Spend.SliceFor is 0; DefaultMaxSlice the most calls' worth one slice
// holds when Spend.MaxSlice is 0.
const (
	DefaultSliceFor = time.Second
	DefaultMaxSlice = 1024
)

// sliceBit marks the ids of reservations made from a slice.
const sliceBit = 1 << 63

type sliceKey struct {
	principal string
	day       meter.Day
}

type sliceShard struct {
	mu sync.Mutex
	m  map[sliceKey]*slices
}

// slices is this node's budget slice of one principal and day.
type slices struct {
	mu       sync.Mutex
	cur      *slice
	next     money.Micros // size to ask for next (0: the call's cost)
	prepaid  time.Time    // the principal held credits at the last look: per call until then
	fetch    *sliceFetch
	lastUsed time.Time
	gone     bool // evicted from the map: look it up again
}

// slice is one reserved slice; it outlives its turn while calls hold
// parts of it.
type slice struct {
	id          uint64 // its reservation in Redis
	size        money.Micros
	held, used  money.Micros // reserved by open calls, committed (queued)
	released    money.Micros // given back to Redis
	limit       money.Micros
	hasLimit    bool
	until       time.Time
	born        time.Time // when Redis reserved it (its TTL runs from there)
	retired     bool
	spent, resv money.Micros // the day's figures when taken
}

func (sl *slice) free() money.Micros { return sl.size - sl.held - sl.used - sl.released }

type sliceFetch struct {
	done chan struct{}
	res  meter.SpendResult // refusal or failure
	ok   bool              // a slice was taken: look again
	per  bool              // the principal holds credits: reserve per call
}

// sliceScript: KEYS committed(day), r, rx, acct; ARGV day, old slice id
// ("" none), its released total (settleLua), slice id, cost, asked,
// limit, hasLimit, ttl ms, live nodes. Gives back the old slice's unused
// amount (its commits are the committer's), then
// returns {code (0 granted, 1 cap, 3 overflow, 4 id in use, 5 credits),
// spent, reserved, granted}.
var sliceScript = rueidis.NewLuaScript(`
local r, rx, acct = KEYS[2], KEYS[3], KEYS[4]
` + purgeLua + settleLua + `
if ARGV[2] ~= '' then settle(ARGV[2], 0, tonumber(ARGV[3])) end
local day = ARGV[1]
local a = redis.call('HMGET', acct, 'bal', 'r:' .. day)
local reserved = tonumber(a[2] or '0')
local spent = committed(KEYS[1]) + reserved
if a[1] then return {5, spent, reserved, 0} end
local cost, ask, cap = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n = ask
if ARGV[8] == '1' then
  local left = cap - spent
  if left < cost then return {1, spent, reserved, 0} end
  local share = math.floor(left / (4 * tonumber(ARGV[10])))
  if share < cost then share = cost end
  if n > share then n = share end
  if n > left then n = left end
end
if n < cost then n = cost end
if spent + n > ` + strconv.Itoa(maxExact) + ` then return {3, spent, reserved, 0} end
if redis.call('HSETNX', r, ARGV[4], day .. ':' .. n .. ':0') == 0 then return {4, spent, reserved, 0} end
redis.call('ZADD', rx, nowms + tonumber(ARGV[9]), ARGV[4])
redis.call('HINCRBY', acct, 'r:' .. day, n)
return {0, spent, reserved, n}
`)

// settleLua defines settle(id, ca, ra, node, keep): brings what Redis
// has applied of slice id, committed and released, up to this node's
// totals ca and ra. The figures are absolute (the node's slice counts
// them up), so a message applied twice, or late after a newer one,
// changes nothing: a timed-out batch that Redis ran anyway and then ran
// again on retry commits its calls once. The difference committed moves
// from the slice's reservation to the node's contribution (ARGV node and
// keep ms are the caller's: KEYS[1] is committed(day)); the difference
// released goes back to the budget. ra < 0 gives back all that is left
// (a slice granted by a script whose answer was lost). Applied totals
// sit beside the reservation as field 'a:<id>'. Returns false when id is
// not open. Expects purgeLua.
const settleLua = `
local function settle(id, ca, ra, node, keep)
  local v = redis.call('HGET', r, id)
  if not v then return false end
  local d, c, cr = string.match(v, '^(%-?%d+):(%d+):(%d)$')
  c = tonumber(c)
  local a0, r0 = 0, 0
  local av = redis.call('HGET', r, 'a:' .. id)
  if av then
    local x, y = string.match(av, '^(%d+):(%d+)$')
    a0, r0 = tonumber(x), tonumber(y)
  end
  local commit, release = ca - a0, ra - r0
  if ra < 0 then commit, release = 0, c end
  if commit < 0 then commit = 0 end
  if release < 0 then release = 0 end
  if commit > c then commit = c end
  if release > c - commit then release = c - commit end
  local t = commit + release
  if t > 0 then
    if redis.call('HINCRBY', acct, 'r:' .. d, -t) == 0 then redis.call('HDEL', acct, 'r:' .. d) end
    if cr == '1' then redis.call('HINCRBY', acct, 'held', -t) end
  end
  if commit > 0 then
    if cr == '1' then redis.call('HINCRBY', acct, 'bal', -commit) end
    redis.call('HINCRBY', KEYS[1], node, commit)
    redis.call('PEXPIRE', KEYS[1], keep)
  end
  if c - t <= 0 then
    redis.call('HDEL', r, id, 'a:' .. id)
    redis.call('ZREM', rx, id)
  else
    redis.call('HSET', r, id, d .. ':' .. string.format('%d', c - t) .. ':' .. cr,
      'a:' .. id, string.format('%d:%d', math.max(a0, ca), math.max(r0, ra)))
  end
  return true
end
`

// sliceSettleScript: KEYS committed(day), r, rx, acct; ARGV node, keep ms,
// then triples slice id, committed total, released total (settleLua).
// Returns {triples whose slice is not open}; a triple with a released
// total below 0 (an orphan's give-back) is never counted.
var sliceSettleScript = rueidis.NewLuaScript(`
local r, rx, acct = KEYS[2], KEYS[3], KEYS[4]
` + purgeLua + settleLua + `
local missing = 0
for i = 3, #ARGV, 3 do
  local ra = tonumber(ARGV[i + 2])
  if not settle(ARGV[i], tonumber(ARGV[i + 1]), ra, ARGV[1], ARGV[2]) and ra >= 0 then missing = missing + 1 end
end
return {missing}
`)

func (s *Spend) sliceFor() time.Duration {
	if s.SliceFor > 0 {
		return s.SliceFor
	}
	return DefaultSliceFor
}

func (s *Spend) maxSlice() int64 {
	if s.MaxSlice > 0 {
		return int64(s.MaxSlice)
	}
	return DefaultMaxSlice
}

func (s *Spend) nodes() int { return liveNodes(s.Nodes) }

func (s *Spend) slicesOf(principal string, day meter.Day) *slices {
	k := sliceKey{principal, day}
	sh := &s.slices[(maphash.String(s.seed, principal)+uint64(day))%uint64(len(s.slices))]
	sh.mu.Lock()
	ss := sh.m[k]
	if ss == nil {
		ss = &slices{}
		sh.m[k] = ss
	}
	sh.mu.Unlock()
	return ss
}

// reserveSliced reserves cost from the principal's slice, taking the
// next slice when needed. per reports that the principal holds credits
// (reserve it per call instead).
func (s *Spend) reserveSliced(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) (meter.Reservation, meter.SpendResult, bool) {
	now := time.Now()
	ss := s.slicesOf(principal, day)
	ss.mu.Lock()
	for ss.gone {
		ss.mu.Unlock()
		ss = s.slicesOf(principal, day)
		ss.mu.Lock()
	}
	for {
		if now.Before(ss.prepaid) {
			ss.mu.Unlock()
			return meter.Reservation{}, meter.SpendResult{}, true
		}
		if sl := ss.cur; sl != nil && !now.After(sl.until) && sl.limit == limit && sl.hasLimit == hasLimit && sl.free() >= cost {
			res := meter.SpendResult{OK: true, Limit: limit, SpentToday: sl.spent + sl.held + sl.used, Reserved: sl.resv + sl.held}
			sl.held += cost
			ss.lastUsed = now
			id := s.nextID() | sliceBit
			s.trackSlice(id, sl, cost)
			ss.mu.Unlock()
			return meter.NewReservation(id, principal, day, cost), res, false
		}
		if f := ss.fetch; f != nil {
			ss.mu.Unlock()
			<-f.done
			if f.per {
				return meter.Reservation{}, meter.SpendResult{}, true
			}
			if !f.ok {
				return meter.NewReservation(0, principal, day, 0), f.res, false
			}
			ss.mu.Lock()
			continue
		}
		f := &sliceFetch{done: make(chan struct{})}
		ss.fetch = f
		old, unused := "", money.Micros(0)
		var oldUsed, oldReleased money.Micros
		prevSlice := ss.cur
		if sl := ss.cur; sl != nil {
			sl.retired = true
			if sl.free() == 0 {
				ss.next = s.grow(ss.next, cost)
			} else {
				ss.next = max(sl.used+sl.held, cost)
			}
			if unused = sl.free(); unused > 0 {
				old = strconv.FormatUint(sl.id, 10)
				sl.released += unused
			}
			oldUsed, oldReleased = sl.used, sl.released
			ss.cur = nil
		}
		ask := max(ss.next, cost)
		ss.mu.Unlock()
		var (
			v   []int64
			err error
			id  uint64
		)
		for range 3 {
			id = s.nextID()
			v, err = ints(s.c.run(sliceScript, s.keys(principal, day), []string{strconv.Itoa(int(day)), old,
				strconv.FormatInt(int64(oldReleased), 10), strconv.FormatUint(id, 10), strconv.FormatInt(int64(cost), 10),
				strconv.FormatInt(int64(ask), 10), strconv.FormatInt(int64(limit), 10), boolArg(hasLimit),
				strconv.FormatInt(s.ttl().Milliseconds(), 10), strconv.Itoa(s.nodes())}))
			if err == nil && len(v) != 4 {
				err = ErrRedis
			}
			if err != nil || v[0] != 4 {
				break
			}
			old, unused = "", 0 // given back by the first try
		}
		ss.mu.Lock()
		ss.fetch = nil
		res := meter.SpendResult{Limit: limit}
		switch {
		case err != nil:
			res.Err = err
			switch sl := prevSlice; {
			case sl != nil && ss.cur == nil && notSent(err):
				// Not given back (Redis was not reached): it stays this
				// node's, the local share of an open principal meanwhile.
				sl.retired = false
				sl.released -= unused
				ss.cur = sl
			case !notSent(err):
				// Redis may have run the script and may still run it: the
				// old slice's rest counts as given back (never served
				// here again) and is given back again, and the new slice,
				// if it was granted, goes back whole (both idempotent).
				if sl != nil && unused > 0 {
					s.giveBackLater(commitItem{principal, day, sl.id, oldUsed, oldReleased, 0})
				}
				s.dropOrphan(principal, day, id)
			}
		case v[0] == 0 && money.Micros(v[3]) <= cost:
			// A slice of one call is that call's own reservation
			// (committed in one round trip, as any per-call one).
			s.track(id, false)
			ss.next = s.grow(ss.next, cost)
			f.ok = true
			close(f.done)
			ss.mu.Unlock()
			return meter.NewReservation(id, principal, day, cost),
				meter.SpendResult{OK: true, Limit: limit, SpentToday: money.Micros(v[1]), Reserved: money.Micros(v[2])}, false
		case v[0] == 0:
			s.startTicker()
			ss.cur = &slice{id: id, size: money.Micros(v[3]), limit: limit, hasLimit: hasLimit, until: now.Add(s.sliceFor()),
				born: now, spent: money.Micros(v[1]), resv: money.Micros(v[2])}
			f.ok = true
		case v[0] == 5:
			ss.prepaid = now.Add(s.sliceFor())
			f.per = true
		default:
			res.SpentToday, res.Reserved = money.Micros(v[1]), money.Micros(v[2])
			switch v[0] {
			case 1:
				res.Reason = meter.ReasonCapExceeded
			case 3:
				res.Reason = meter.ReasonOverflow
			default:
				res.Err = ErrRedis
			}
		}
		f.res = res
		close(f.done)
		switch {
		case f.per:
			ss.mu.Unlock()
			return meter.Reservation{}, meter.SpendResult{}, true
		case !f.ok:
			ss.mu.Unlock()
			return meter.NewReservation(0, principal, day, 0), res, false
		}
		// Take from the new slice at the top of the loop, the lock held.
	}
}

// grow is the size to ask for after a slice of next was used up: twice
// as much, at most MaxSlice calls' worth.
func (s *Spend) grow(next, cost money.Micros) money.Micros {
	most := cost
	if int64(cost) < maxExact/s.maxSlice() {
		most = cost * money.Micros(s.maxSlice())
	}
	return min(2*max(next, cost), most)
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// sliceRelease gives a slice reservation's cost back: to its slice while
// the slice serves (no round trip), else to Redis.
func (s *Spend) sliceRelease(r meter.Reservation, sl *slice, cost money.Micros) bool {
	ss := s.slicesOf(r.Principal(), r.Day())
	ss.mu.Lock()
	sl.held -= cost
	if !sl.retired {
		ss.mu.Unlock()
		return true
	}
	sl.released += cost
	it := commitItem{r.Principal(), r.Day(), sl.id, sl.used, sl.released, 0}
	ss.mu.Unlock()
	cmd := s.settleCmd(it)
	v, err := ints(s.c.run(sliceSettleScript, cmd.Keys, cmd.Args))
	if err != nil && !notSent(err) {
		s.giveBackLater(it) // again, idempotent
	}
	return err == nil && len(v) == 1
}

// sliceCommitted moves a slice reservation's cost to used and returns
// the slice's totals, used and released, for the queued commit.
func (s *Spend) sliceCommitted(r meter.Reservation, sl *slice, cost money.Micros) (used, released money.Micros) {
	ss := s.slicesOf(r.Principal(), r.Day())
	ss.mu.Lock()
	sl.held -= cost
	sl.used += cost
	used, released = sl.used, sl.released
	ss.mu.Unlock()
	return used, released
}

// Unused is what this node's current budget slice of principal on day
// holds unused: set aside in Redis's reserved figure, not held by calls
// (Status leaves it out).
func (s *Spend) Unused(principal string, day meter.Day) money.Micros {
	return s.unusedSlice(principal, day)
}

// sliceServes reports whether the principal's current slice can reserve
// cost now (the Decider then takes a quota lease alone).
func (s *Spend) sliceServes(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) bool {
	if s.MaxSlice == 1 {
		return false
	}
	ss := s.slicesOf(principal, day)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sl := ss.cur
	return sl != nil && !time.Now().After(sl.until) && sl.limit == limit && sl.hasLimit == hasLimit && sl.free() >= cost
}

// unusedSlice is what this node's current slice of principal on day
// holds unused (Status reports reservations of calls, not of slices).
func (s *Spend) unusedSlice(principal string, day meter.Day) money.Micros {
	ss := s.slicesOf(principal, day)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.cur == nil {
		return 0
	}
	return ss.cur.free()
}

// retireSlices gives back the unused rest of slices that stopped serving
// (all of them when all), one pipeline, and forgets idle ones.
func (s *Spend) retireSlices(now time.Time, all bool) {
	var (
		cmds []rueidis.LuaExec
		back []retiredSlice
	)
	for i := range s.slices {
		sh := &s.slices[i]
		sh.mu.Lock()
		for k, ss := range sh.m {
			ss.mu.Lock()
			if sl := ss.cur; sl != nil && ss.fetch == nil && (all || now.After(sl.until)) {
				sl.retired = true
				if unused := sl.free(); unused > 0 {
					sl.released += unused
					it := commitItem{k.principal, k.day, sl.id, sl.used, sl.released, 0}
					cmds = append(cmds, s.settleCmd(it))
					back = append(back, retiredSlice{ss, sl, unused, it})
				}
				ss.cur = nil
			}
			if ss.cur == nil && ss.fetch == nil && now.Sub(ss.lastUsed) > time.Hour {
				ss.gone = true
				delete(sh.m, k)
			}
			ss.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	if len(cmds) > 0 {
		ctx, cancel := s.c.ctx()
		out := sliceSettleScript.ExecMulti(ctx, s.c.rdb, cmds...)
		cancel()
		for i, r := range out {
			err := r.Error()
			if err == nil || all {
				continue
			}
			b := back[i]
			if !notSent(err) {
				// Redis may run it yet: the rest counts as given back
				// (never served here again) and is given back again
				// (idempotent) until Redis confirms it.
				s.giveBackLater(b.sent)
				continue
			}
			// Not given back (Redis was not reached): the slice stays
			// this node's (the local share while Redis is unreachable),
			// given back once it answers.
			b.ss.mu.Lock()
			if b.ss.cur == nil && b.ss.fetch == nil {
				b.sl.retired = false
				b.sl.released -= b.unused
				b.ss.cur = b.sl
			}
			b.ss.mu.Unlock()
		}
	}
}

type retiredSlice struct {
	ss     *slices
	sl     *slice
	unused money.Micros
	sent   commitItem // the totals sent
}

// localShare is how long after Redis reserved a slice an open principal
// may still reserve from it while Redis is unreachable: half the
// reservation TTL, so that the calls it serves commit (or their hold is
// put right from the ledger) before Redis gives the slice back.
func (s *Spend) localShare() time.Duration { return s.ttl() / 2 }

// ReserveLocal reserves cost from the principal's budget slice without
// asking Redis (gateway.LocalReserver): the local share of the remaining
// daily budget of an open principal while Redis is unreachable. The
// slice was reserved in Redis for this node, so the cap is never passed;
// ok is false when the node holds no slice for the principal taken under
// this cap less than half the reservation TTL ago, or its rest cannot
// hold the call (the gateway then answers 503, not a cap refusal: the
// cluster's cap may not be reached).
func (s *Spend) ReserveLocal(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) (meter.Reservation, meter.SpendResult, bool) {
	cost = max(cost, 0)
	now := time.Now()
	ss := s.slicesOf(principal, day)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sl := ss.cur
	if sl == nil || sl.limit != limit || sl.hasLimit != hasLimit || now.Sub(sl.born) > s.localShare() {
		return meter.Reservation{}, meter.SpendResult{}, false
	}
	res := meter.SpendResult{Limit: limit, SpentToday: sl.spent + sl.held + sl.used, Reserved: sl.resv + sl.held}
	if sl.free() < cost {
		return meter.Reservation{}, meter.SpendResult{}, false // the share is spent: unavailable, not the cap
	}
	res.OK = true
	sl.held += cost
	id := s.nextID() | sliceBit
	s.trackSlice(id, sl, cost)
	return meter.NewReservation(id, principal, day, cost), res, true
}

// startTicker starts giving back expired slices every SliceFor (until
// Close), once slices are in use.
func (s *Spend) startTicker() {
	s.tick.Do(func() {
		go func() {
			t := time.NewTicker(s.sliceFor())
			defer t.Stop()
			for {
				select {
				case <-s.stop:
					return
				case now := <-t.C:
					s.retireSlices(now, false)
					s.sendGiveBacks(now)
				}
			}
		}()
	})
}

// giveBacks are settlements Redis did not confirm although it may have
// run them, or may run them yet: the unused rest of a slice given back
// when Redis did not answer, and reservations granted by a script whose
// answer was lost (orphans, which nothing here would ever commit or
// release). All are idempotent (settleLua's totals; an orphan's "all
// that is left"), so the ticker sends them again until Redis confirms
// them or the reservation TTL has given their amounts back anyway. They
// do not hold up Flush or Status, which an outage would otherwise block.
type giveBacks struct {
	mu    sync.Mutex
	items []giveBack
}

type giveBack struct {
	commitItem
	until time.Time
}

// giveBackLater queues it for the ticker.
func (s *Spend) giveBackLater(it commitItem) {
	s.backs.mu.Lock()
	s.backs.items = append(s.backs.items, giveBack{it, time.Now().Add(s.ttl())})
	s.backs.mu.Unlock()
	s.startTicker()
}

// dropOrphan gives back, later, whatever reservation id holds: a script
// that reserved it timed out and may have run, or may run yet.
func (s *Spend) dropOrphan(principal string, day meter.Day, id uint64) {
	s.giveBackLater(commitItem{principal, day, id, 0, -1, 0})
}

// sendGiveBacks sends the queued give-backs in one pipeline, keeping
// those Redis did not confirm (until their reservation's TTL).
func (s *Spend) sendGiveBacks(now time.Time) {
	s.backs.mu.Lock()
	items := s.backs.items
	s.backs.items = nil
	s.backs.mu.Unlock()
	if len(items) == 0 {
		return
	}
	cmds := make([]rueidis.LuaExec, len(items))
	for i, it := range items {
		cmds[i] = s.settleCmd(it.commitItem)
	}
	ctx, cancel := s.c.ctx()
	out := sliceSettleScript.ExecMulti(ctx, s.c.rdb, cmds...)
	cancel()
	var keep []giveBack
	for i, r := range out {

		if r.Error() != nil && now.Before(items[i].until) {
			keep = append(keep, items[i])
		}
	}
	if len(keep) > 0 {
		s.backs.mu.Lock()
		s.backs.items = append(keep, s.backs.items...)
		s.backs.mu.Unlock()
	}
}

// GiveBacksPending is how many give-backs wait for Redis to confirm them
// (for tests and /readyz).
func (s *Spend) GiveBacksPending() int {
	s.backs.mu.Lock()
	defer s.backs.mu.Unlock()
	return len(s.backs.items)
}
