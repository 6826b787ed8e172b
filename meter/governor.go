package meter

import (
	"time"

	"github.com/toolgate/toolgate/money"
)

// Governor keeps a principal's governance counts in one entry behind one
// lock: its calls in flight (as InFlight), its quota windows (as Windows)
// and its breakers (as Breakers). Admit runs all of a call's checks under
// that one lock and Release gives back what it holds, so a governed call
// costs one map lookup to admit and one to end, whatever its policy turns
// on. Each part behaves exactly as its standalone type documents. Safe for
// concurrent use; use NewGovernor.
type Governor struct {
	m *shardedMap[string, *govEntry]
}

// govEntry is one principal's governance state, guarded by its shard's
// lock. dead is set when Sweep removes it from the shard.
type govEntry struct {
	flights flights
	windows windowEntry
	brk     breakerEntry
	dead    bool
}

// NewGovernor returns an empty Governor.
func NewGovernor() *Governor { return &Governor{m: newShardedMap[string, *govEntry]()} }

// GovCall is what Admit checks for one call: each part is off when its
// limit says so.
type GovCall struct {
	Class int
	// Concurrency caps (< 0: none); both < 0 counts nothing.
	InFlightAll, InFlightClass int
	// Quota windows; none when empty.
	Windows []WindowRule
	// Loop breaker; off when LoopRepeats <= 0.
	LoopHash             uint64
	LoopRepeats          int
	LoopWithin, Cooldown time.Duration
	// Spend burst; off when BurstOn is false or Cost <= 0.
	BurstOn     bool
	Cost, Burst money.Micros
	BurstWithin time.Duration
	// A shadow policy's checks, made without counting before anything is
	// counted (GovResult.Shadow), against what the enforced checks count:
	// its concurrency caps and windows, and its loop breaker and spend
	// burst, read from the identical calls and held costs the enforced
	// breakers keep (so only when they are on); off unless Shadow.
	Shadow                 bool
	ShadowAll, ShadowClass int
	ShadowWindows          []WindowRule
	ShadowLoopRepeats      int // <= 0: none
	ShadowLoopWithin       time.Duration
	ShadowBurstOn          bool
	ShadowBurst            money.Micros
	ShadowBurstWithin      time.Duration
}

// GovCheck names the check that refused a call.
type GovCheck uint8

// The checks, in the order Admit runs them.
const (
	GovNone GovCheck = iota
	GovLoop
	GovInFlight
	GovWindow
	GovBurst
)

// GovHold is what an admitted call holds, for Release. The zero value
// holds nothing.
type GovHold struct {
	// sh and e are where Admit found the principal's entry, so that
	// Release and Served lock the shard without hashing the principal and
	// find the entry without a map lookup (unless Sweep removed it).
	sh       *shard[string, *govEntry]
	e        *govEntry
	class    int
	inFlight bool
	windows  []WindowRule
	winAt    int64
	loopHash uint64
	loopAt   int64
	burstID  uint64
}

// InFlight reports whether a concurrency slot is held.
func (h *GovHold) InFlight() bool { return h.inFlight }

// Holds reports whether anything is held.
func (h *GovHold) Holds() bool { return h.inFlight || h.winAt != 0 || h.loopAt != 0 || h.burstID != 0 }

// GovResult is the outcome of Admit: Refused names the check that refused
// the call (GovNone: admitted, Hold set), with that check's result.
type GovResult struct {
	Refused GovCheck
	// Shadow is the check the shadow policy would have refused the call
	// at (GovInFlight or GovWindow), GovNone for none.
	Shadow   GovCheck
	Loop     LoopResult
	InFlight InFlightResult
	Window   WindowResult
	Burst    BurstResult
}

// Admit runs the checks of call for principal at now, in order: loop
// breaker, concurrency, quota windows, spend burst. The first refusal
// ends it, undoing what the earlier checks counted; otherwise everything
// is counted and recorded in hold. principal is kept as a map key.
func (g *Governor) Admit(principal string, call *GovCall, now time.Time, hold *GovHold) GovResult {
	*hold = GovHold{class: call.Class}
	loop := call.LoopRepeats > 0
	inFlight := call.InFlightAll >= 0 || call.InFlightClass >= 0
	burst := call.BurstOn && call.Cost > 0
	shadow := call.Shadow && (call.ShadowAll >= 0 || call.ShadowClass >= 0 || len(call.ShadowWindows) > 0 ||
		loop && call.ShadowLoopRepeats > 0 || burst && call.ShadowBurstOn)
	if !loop && !inFlight && len(call.Windows) == 0 && !burst && !shadow {
		return GovResult{}
	}
	checkClass(call.Class)
	t := now.UnixNano()
	sh := g.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		e = &govEntry{}
		sh.put(principal, e)
	}
	hold.sh, hold.e = sh, e
	var res GovResult
	if shadow {
		res.Shadow = e.shadowCheck(call, loop, burst, t)
	}
	if loop {
		if res.Loop = e.brk.loop(call.LoopHash, call.LoopRepeats, call.LoopWithin, call.Cooldown, t); !res.Loop.OK {
			res.Refused = GovLoop
			return res
		}
		hold.loopHash, hold.loopAt = call.LoopHash, res.Loop.At
	}
	if inFlight {
		if res.InFlight = e.flights.acquire(call.Class, call.InFlightAll, call.InFlightClass); !res.InFlight.OK {
			res.Refused = GovInFlight
			e.release(hold)
			return res
		}
		hold.inFlight = res.InFlight.Held
	}
	if len(call.Windows) > 0 {
		if res.Window = e.windows.admit(call.Windows, t); !res.Window.OK {
			res.Refused = GovWindow
			e.release(hold)
			return res
		}
		hold.windows, hold.winAt = call.Windows, res.Window.At
	}
	if burst {
		if res.Burst = e.brk.admitBurst(call.Cost, call.Burst, call.BurstWithin, t); !res.Burst.OK {
			res.Refused = GovBurst
			e.release(hold)
			return res
		}
		hold.burstID = res.Burst.ID
	}
	return res
}

// release gives back what h holds and clears it; the shard is locked.
func (e *govEntry) release(h *GovHold) {
	if h.inFlight {
		e.flights.release(h.class)
	}
	if h.winAt != 0 {
		e.windows.undo(h.windows, h.winAt)
	}
	if h.loopAt != 0 {
		e.brk.loopUndo(h.loopHash, h.loopAt)
	}
	if h.burstID != 0 {
		e.brk.burstUndo(h.burstID)
	}
	*h = GovHold{class: h.class}
}

// locked returns the shard and entry of principal's hold h, the shard
// locked; e is nil when principal has no entry.
func (g *Governor) locked(principal string, h *GovHold) (sh *shard[string, *govEntry], e *govEntry) {
	if h.sh != nil {
		h.sh.mu.Lock()
		if !h.e.dead {
			return h.sh, h.e
		}
		h.sh.mu.Unlock()
	}
	sh = g.m.lock(principal)
	e, _ = sh.get(principal)
	return sh, e
}

// Release gives back what hold holds: everything, for a call that was not
// served. Idempotent: hold is cleared.
func (g *Governor) Release(principal string, hold *GovHold) {
	if !hold.Holds() {
		return
	}
	sh, e := g.locked(principal, hold)
	if e != nil {
		e.release(hold)
	}
	*hold = GovHold{class: hold.class}
	sh.mu.Unlock()
}

// Served ends the hold of a call that reached its upstream: its
// concurrency slot goes back, its places in the quota windows and the
// loop breaker are kept, and its spend-burst hold is kept when billed
// (else given back). Idempotent.
func (g *Governor) Served(principal string, hold *GovHold, billed bool) {
	h := GovHold{sh: hold.sh, e: hold.e, class: hold.class, inFlight: hold.inFlight}
	if !billed {
		h.burstID = hold.burstID
	}
	*hold = GovHold{class: hold.class}
	if h.Holds() {
		sh, e := g.locked(principal, &h)
		if e != nil {
			e.release(&h)
		}
		sh.mu.Unlock()
	}
}

// InFlight returns principal's calls in flight, in total and in class.
func (g *Governor) InFlight(principal string, class int) (all, inClass int) {
	checkClass(class)
	sh := g.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		return 0, 0
	}
	return int(e.flights.n[0]), int(e.flights.n[1+class])
}

// PeekWindows reports, for each rule, the calls of principal in its
// window ending at now (used[i]) and the time until the next could pass.
// It fills used and resetIn, which must be as long as rules.
func (g *Governor) PeekWindows(principal string, rules []WindowRule, now time.Time, used []int, resetIn []time.Duration) {
	sh := g.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	for i, r := range rules {
		used[i], resetIn[i] = 0, 0
		if e != nil {
			used[i], resetIn[i] = e.windows.peek(r, now.UnixNano())
		}
	}
}

// ShadowFull reports whether principal is at a concurrency cap (all,
// perClass; < 0 none) or at the limit of one of rules, without counting:
// the shadow policy's checks, under one lock. It returns the check that
// would refuse, GovNone for none.
func (g *Governor) ShadowFull(principal string, class, all, perClass int, rules []WindowRule, now time.Time) GovCheck {
	if all < 0 && perClass < 0 && len(rules) == 0 {
		return GovNone
	}
	checkClass(class)
	sh := g.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		e = &govEntry{}
	}
	return e.shadowFull(class, all, perClass, rules, now.UnixNano())
}

// shadowCheck runs call's shadow checks in the enforced order: loop
// breaker, concurrency, windows, spend burst. The breakers are read only
// when the enforced ones count (loop, burst).
func (e *govEntry) shadowCheck(call *GovCall, loop, burst bool, t int64) GovCheck {
	if loop && call.ShadowLoopRepeats > 0 && e.brk.loopRepeats(call.LoopHash, call.ShadowLoopWithin, t) >= call.ShadowLoopRepeats {
		return GovLoop
	}
	if r := e.shadowFull(call.Class, call.ShadowAll, call.ShadowClass, call.ShadowWindows, t); r != GovNone {
		return r
	}
	if burst && call.ShadowBurstOn {
		if after, ok := e.brk.burstHeld(call.ShadowBurstWithin, call.BurstWithin, t).Add(call.Cost); !ok || after > call.ShadowBurst {
			return GovBurst
		}
	}
	return GovNone
}

func (e *govEntry) shadowFull(class, all, perClass int, rules []WindowRule, t int64) GovCheck {
	if all >= 0 && int(e.flights.n[0]) >= all || perClass >= 0 && int(e.flights.n[1+class]) >= perClass {
		return GovInFlight
	}
	for _, r := range rules {
		if used, _ := e.windows.peek(r, t); used >= r.Limit {
			return GovWindow
		}
	}
	return GovNone
}

// BurstSpent reports the cost held within the last within at now.
func (g *Governor) BurstSpent(principal string, within time.Duration, now time.Time) money.Micros {
	sh := g.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		return 0
	}
	return e.brk.burstSince(now.UnixNano() - int64(within))
}

// Sweep forgets what left the windows by now and evicts the principals
// with nothing in flight, in a window, or in a breaker that could still
// matter (maxAge: longer than any breaker window or cool-down).
func (g *Governor) Sweep(now time.Time, maxAge time.Duration) (evicted int) {
	t := now.UnixNano()
	cutoff := t - int64(maxAge)
	return g.m.sweep(func(_ string, e *govEntry) bool {
		kept := e.windows.rings[:0]
		for _, w := range e.windows.rings {
			w.prune(t)
			if w.n > 0 {
				kept = append(kept, w)
			}
		}
		clear(e.windows.rings[len(kept):])
		e.windows.rings = kept
		if e.flights.n[0] != 0 || len(kept) > 0 {
			return true
		}
		for i := range e.brk.loops {
			s := &e.brk.loops[i]
			if s.used && (s.last > cutoff || s.blockedUntil > t) {
				return true
			}
		}
		for i := 0; i < e.brk.n; i++ {
			if e.brk.burst[(e.brk.head+i)%len(e.brk.burst)].t > cutoff {
				return true
			}
		}
		e.dead = true
		return false
	})
}

// Len returns the number of principals tracked.
func (g *Governor) Len() int { return g.m.len() }
