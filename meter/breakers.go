package meter

import (
	"math"
	"time"

	"github.com/toolgate/toolgate/money"
)

// Breakers holds the two circuit breakers of a policy, per principal:
//
//   - the loop breaker: a principal that makes the same call (same tool,
//     same body: a hash its caller computes) Repeats times within Within is
//     refused further identical calls for Cooldown; other calls still pass.
//     It remembers the last loopSlots distinct calls of each principal.
//   - the spend burst: the cost a principal commits within a sliding window
//     may not exceed a limit. Costs are held while the call runs and taken
//     back (BurstUndo) when it is not billed.
//
// Safe for concurrent use; a known principal's checks allocate nothing
// once its buffers have grown. Use NewBreakers.
type Breakers struct {
	m *shardedMap[string, *breakerEntry]
}

// loopSlots is how many distinct recent calls the loop breaker follows
// per principal; the least recently seen one is forgotten first.
const loopSlots = 8

// maxBurstEntries bounds the calls one principal's spend-burst window
// holds; past it, calls are refused as if over the limit.
const maxBurstEntries = 1 << 16

type breakerEntry struct {
	loops [loopSlots]loopSlot
	burst []burstEntry // ring, oldest first
	head  int
	n     int
	sum   money.Micros // of the entries held
	ids   uint64
}

type loopSlot struct {
	hash         uint64
	used         bool
	last         int64
	blockedUntil int64
	times        []int64 // ring of the identical calls' times
	head, n      int
}

type burstEntry struct {
	t    int64
	cost money.Micros
	id   uint64
}

// NewBreakers returns empty breakers.
func NewBreakers() *Breakers { return &Breakers{m: newShardedMap[string, *breakerEntry]()} }

func (b *Breakers) entry(principal string) (*shard[string, *breakerEntry], *breakerEntry) {
	sh := b.m.lock(principal)
	e, _ := sh.get(principal)
	if e == nil {
		e = &breakerEntry{}
		sh.put(principal, e)
	}
	return sh, e
}

// LoopResult is the outcome of Breakers.Loop.
type LoopResult struct {
	OK bool
	// CooldownLeft is, when refused, the time until identical calls pass
	// again.
	CooldownLeft time.Duration
	// At is the time the call was counted at, for LoopUndo.
	At int64
}

// Loop decides one call with the given hash by principal at now: refused
// while the call's cool-down runs, or when repeats identical calls
// already fall within the last within (which starts a cool-down of
// cooldown); else counted and allowed. repeats <= 0 disables it.
func (b *Breakers) Loop(principal string, hash uint64, repeats int, within, cooldown time.Duration, now time.Time) LoopResult {
	if repeats <= 0 {
		return LoopResult{OK: true}
	}
	sh, e := b.entry(principal)
	defer sh.mu.Unlock()
	return e.loop(hash, repeats, within, cooldown, now.UnixNano())
}

func (e *breakerEntry) loop(hash uint64, repeats int, within, cooldown time.Duration, t int64) LoopResult {
	s := e.slot(hash, t)
	if s.blockedUntil > t {
		return LoopResult{CooldownLeft: time.Duration(s.blockedUntil - t)}
	}
	s.last = t
	cutoff := t - int64(within)
	for s.n > 0 && s.times[s.head] <= cutoff {
		s.head = (s.head + 1) % len(s.times)
		s.n--
	}
	if s.n >= repeats {
		s.blockedUntil = t + int64(cooldown)
		s.head, s.n = 0, 0
		return LoopResult{CooldownLeft: cooldown}
	}
	if s.n == len(s.times) {
		nb := make([]int64, min(max(2*len(s.times), 4), repeats))
		for i := 0; i < s.n; i++ {
			nb[i] = s.times[(s.head+i)%len(s.times)]
		}
		s.times, s.head = nb, 0
	}
	s.times[(s.head+s.n)%len(s.times)] = t
	s.n++
	return LoopResult{OK: true, At: t}
}

// LoopUndo takes back the call counted at at for hash, for a call a later
// stage refused.
func (b *Breakers) LoopUndo(principal string, hash uint64, at int64) {
	if at == 0 {
		return
	}
	sh := b.m.lock(principal)
	defer sh.mu.Unlock()
	if e, _ := sh.get(principal); e != nil {
		e.loopUndo(hash, at)
	}
}

func (e *breakerEntry) loopUndo(hash uint64, at int64) {
	for i := range e.loops {
		s := &e.loops[i]
		if !s.used || s.hash != hash {
			continue
		}
		for k := s.n - 1; k >= 0; k-- {
			if s.times[(s.head+k)%len(s.times)] == at {
				for ; k < s.n-1; k++ {
					s.times[(s.head+k)%len(s.times)] = s.times[(s.head+k+1)%len(s.times)]
				}
				s.n--
				return
			}
		}
	}
}

// loopRepeats counts the identical calls with hash counted within the
// last within at t, without counting one (a shadow policy's breaker). An
// identical call in a cool-down counts as over any limit.
func (e *breakerEntry) loopRepeats(hash uint64, within time.Duration, t int64) int {
	for i := range e.loops {
		s := &e.loops[i]
		if !s.used || s.hash != hash {
			continue
		}
		if s.blockedUntil > t {
			return math.MaxInt
		}
		cutoff, n := t-int64(within), 0
		for k := s.n - 1; k >= 0 && s.times[(s.head+k)%len(s.times)] > cutoff; k-- {
			n++
		}
		return n
	}
	return 0
}

// burstHeld is the cost held within the last within at t (a shadow
// policy's spend burst). Over the enforced window (enforced) it is the
// running sum, once what left the window is dropped (as admitBurst does
// first); over another, the window's costs are added up.
func (e *breakerEntry) burstHeld(within, enforced time.Duration, t int64) money.Micros {
	cutoff := t - int64(within)
	if within == enforced {
		e.pruneBurst(cutoff)
		return e.sum
	}
	var sum money.Micros
	for i := e.n - 1; i >= 0; i-- {
		x := e.burst[(e.head+i)%len(e.burst)]
		if x.t <= cutoff {
			break
		}
		sum += x.cost
	}
	return sum
}

// slot finds hash's slot, or takes the least recently used one not in a
// cool-down (else the least recently used).
func (e *breakerEntry) slot(hash uint64, now int64) *loopSlot {
	var victim *loopSlot
	for i := range e.loops {
		s := &e.loops[i]
		if s.used && s.hash == hash {
			return s
		}
		switch {
		case !s.used:
			if victim == nil || victim.used {
				victim = s
			}
		case victim == nil:
			victim = s
		case victim.used && (s.blockedUntil <= now) && (victim.blockedUntil > now || s.last < victim.last):
			victim = s
		}
	}
	victim.hash, victim.used, victim.blockedUntil, victim.head, victim.n = hash, true, 0, 0, 0
	return victim
}

// pruneBurst drops the held costs at or before cutoff.
func (e *breakerEntry) pruneBurst(cutoff int64) {
	for e.n > 0 && e.burst[e.head].t <= cutoff {
		e.sum -= e.burst[e.head].cost
		e.head = (e.head + 1) % len(e.burst)
		e.n--
	}
}

// BurstResult is the outcome of Breakers.Burst.
type BurstResult struct {
	OK bool
	// Spent is the cost held in the window before this call.
	Spent money.Micros
	// ResetIn is, when refused, the time until enough of it leaves the
	// window for the call to fit (the whole window when it never fits).
	ResetIn time.Duration
	// ID names the held cost, for BurstUndo; 0 when nothing is held.
	ID uint64
}

// Burst holds cost for principal at now if the costs held within the last
// within plus cost stay within limit. A cost of 0 always passes and holds
// nothing.
func (b *Breakers) Burst(principal string, cost, limit money.Micros, within time.Duration, now time.Time) BurstResult {
	if cost <= 0 {
		return BurstResult{OK: true}
	}
	sh, e := b.entry(principal)
	defer sh.mu.Unlock()
	return e.admitBurst(cost, limit, within, now.UnixNano())
}

func (e *breakerEntry) admitBurst(cost, limit money.Micros, within time.Duration, t int64) BurstResult {
	e.pruneBurst(t - int64(within))
	res := BurstResult{Spent: e.sum}
	if after, ok := e.sum.Add(cost); !ok || after > limit || e.n >= maxBurstEntries {
		// The oldest costs must leave until the rest plus cost fit.
		need := e.sum + cost - limit
		res.ResetIn = within
		if cost <= limit {
			var freed money.Micros
			for i := 0; i < e.n; i++ {
				x := e.burst[(e.head+i)%len(e.burst)]
				freed += x.cost
				if freed >= need {
					res.ResetIn = time.Duration(x.t + int64(within) - t)
					break
				}
			}
		}
		return res
	}
	if e.n == len(e.burst) {
		nb := make([]burstEntry, max(2*len(e.burst), 4))
		for i := 0; i < e.n; i++ {
			nb[i] = e.burst[(e.head+i)%len(e.burst)]
		}
		e.burst, e.head = nb, 0
	}
	e.ids++
	e.burst[(e.head+e.n)%len(e.burst)] = burstEntry{t: t, cost: cost, id: e.ids}
	e.n++
	e.sum += cost
	res.OK, res.ID = true, e.ids
	return res
}

// BurstUndo takes back the cost held under id, for a call not billed.
func (b *Breakers) BurstUndo(principal string, id uint64) {
	if id == 0 {
		return
	}
	sh := b.m.lock(principal)
	defer sh.mu.Unlock()
	if e, _ := sh.get(principal); e != nil {
		e.burstUndo(id)
	}
}

func (e *breakerEntry) burstUndo(id uint64) {
	for i := e.n - 1; i >= 0; i-- {
		if e.burst[(e.head+i)%len(e.burst)].id == id {
			e.sum -= e.burst[(e.head+i)%len(e.burst)].cost
			for ; i < e.n-1; i++ {
				e.burst[(e.head+i)%len(e.burst)] = e.burst[(e.head+i+1)%len(e.burst)]
			}
			e.n--
			return
		}
	}
}

// BurstSpent reports the cost held within the last within at now.
func (b *Breakers) BurstSpent(principal string, within time.Duration, now time.Time) money.Micros {
	sh := b.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		return 0
	}
	return e.burstSince(now.UnixNano() - int64(within))
}

// burstSince is the cost held in the ring by calls after cutoff.
func (e *breakerEntry) burstSince(cutoff int64) money.Micros {
	var s money.Micros
	for i := 0; i < e.n; i++ {
		if x := e.burst[(e.head+i)%len(e.burst)]; x.t > cutoff {
			s = s.SatAdd(x.cost)
		}
	}
	return s
}

// Sweep evicts the principals with no call in any window or cool-down
// that could still matter at now (older than maxAge).
func (b *Breakers) Sweep(now time.Time, maxAge time.Duration) (evicted int) {
	cutoff := now.UnixNano() - int64(maxAge)
	return b.m.sweep(func(_ string, e *breakerEntry) bool {
		for i := range e.loops {
			s := &e.loops[i]
			if s.used && (s.last > cutoff || s.blockedUntil > now.UnixNano()) {
				return true
			}
		}
		for i := 0; i < e.n; i++ {
			if e.burst[(e.head+i)%len(e.burst)].t > cutoff {
				return true
			}
		}
		return false
	})
}
