package meter

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/money"
)

// Spend tracks, per principal, the micro-USD spent per Day, with
// reservations for calls in flight, and an optional prepaid credits
// balance.
//
// A call reserves its price (Reserve), then either commits it once it is
// billed (Commit) or releases it (Release). Reserve checks and reserves
// under one lock, so concurrent calls never push a day's spend past the
// cap nor hold more credits than the balance. A principal without a
// balance is postpaid: its spend is tracked and capped, never refused for
// lack of credits.
//
// A reservation is named by its ID, unique in the Spend. Commit and
// Release are idempotent by that ID: the first Commit or Release of a
// reservation closes it and later ones report false and change nothing,
// so a reservation is never billed twice nor both billed and returned.
//
// Spend is safe for concurrent use. Principals are spread over the 64
// locked shards of a shardedMap, each principal with its own lock;
// Reserve, Commit and Release for a known principal allocate nothing. Nothing is persisted: the gateway
// rebuilds state from its ledger with Restore and RestoreBalance before
// serving, and calls Sweep periodically to drop old days. Use NewSpend;
// the zero value is not usable.
type Spend struct {
	m   *shardedMap[string, *account]
	ids atomic.Uint64 // last reservation ID issued
}

// account is one principal's state, guarded by mu. Lock order: shard, then
// account; lookups release the shard before taking the account.
type account struct {
	mu         sync.Mutex
	dead       bool // removed from its shard by Sweep; look it up again
	hasBalance bool
	balance    money.Micros
	held       money.Micros // credits held by open reservations
	days       []daySpend
	open       []hold
	// group and groupKey are the account of the group whose cap the
	// principal's calls last reserved against (ReserveWithGroup).
	group    *account
	groupKey string
}

type daySpend struct {
	day       Day
	committed money.Micros
	reserved  money.Micros
}

// hold is an open reservation.
type hold struct {
	id      uint64
	day     Day
	cost    money.Micros
	credits bool // also held against the balance
}

// SpendReason says why Reserve refused.
type SpendReason uint8

// The reasons Reserve refuses.
const (
	ReasonNone                SpendReason = iota // reserved
	ReasonCapExceeded                            // the daily cap would be exceeded (429)
	ReasonInsufficientCredits                    // the prepaid balance does not cover the cost (402)
	ReasonOverflow                               // the day's spend or the credits held would not fit in money.Micros
)

// String returns the reason as a snake_case word: "cap_exceeded".
func (r SpendReason) String() string {
	switch r {
	case ReasonNone:
		return "none"
	case ReasonCapExceeded:
		return "cap_exceeded"
	case ReasonInsufficientCredits:
		return "insufficient_credits"
	case ReasonOverflow:
		return "spend_overflow"
	}
	return "invalid"
}

// SpendResult is the outcome of Spend.Reserve.
type SpendResult struct {
	// OK reports whether the cost was reserved.
	OK bool
	// Reason is why not; ReasonNone when OK.
	Reason SpendReason
	// SpentToday is the day's committed plus reserved spend before this
	// call.
	SpentToday money.Micros
	// Reserved is the part of SpentToday held by calls still in flight
	// (reserved, not yet committed or released).
	Reserved money.Micros
	// Limit echoes the cap given to Reserve.
	Limit money.Micros
	// Balance is the credits available to this call before it: the
	// balance minus what open reservations hold. Meaningful only when
	// HasBalance.
	Balance    money.Micros
	HasBalance bool
	// Err is set when the store could not decide (a shared store that
	// could not be reached); nothing was then reserved and OK is false.
	// The local Spend never sets it.
	Err error
}

// Reservation names a cost reserved by Reserve, to be passed to Commit or
// Release. It is a plain value (an ID, the principal, the day and the
// cost): copying one does not duplicate what it holds, and it stays valid
// however long it is kept; once its reservation is closed, Commit and
// Release of it do nothing. It is passed back to the Spend that issued it
// (its ID means nothing to another). The zero value, like the reservation
// of a zero cost, holds nothing (ID 0).
type Reservation struct {
	id        uint64 // 0 when nothing is held
	principal string
	day       Day
	cost      money.Micros
	// acct is the account Reserve held the cost on, so that Commit and
	// Release lock it without looking the principal up again; nil from
	// NewReservation. An open reservation keeps its account from being
	// swept, so a swept (dead) one no longer holds r.
	acct *account
}

// NewReservation returns the Reservation with the given parts, for other
// implementations of the spend store (which issue their own IDs, never 0
// for a held cost) and for tests.
func NewReservation(id uint64, principal string, day Day, cost money.Micros) Reservation {
	return Reservation{id: id, principal: principal, day: day, cost: cost}
}

// ID returns the reservation's ID, unique among the reservations of its
// Spend; 0 when it holds nothing.
func (r Reservation) ID() uint64 { return r.id }

// Principal returns the principal the cost is reserved for.
func (r Reservation) Principal() string { return r.principal }

// Cost returns the reserved amount.
func (r Reservation) Cost() money.Micros { return r.cost }

// Day returns the day the cost is charged to.
func (r Reservation) Day() Day { return r.day }

// SpendStatus is a principal's spend on one day and its credits, as
// Spend.Status reads them at one instant.
type SpendStatus struct {
	// Committed is the day's billed spend; Reserved what calls in flight
	// hold on that day. Committed + Reserved is what the cap is checked
	// against (Today).
	Committed, Reserved money.Micros
	// Balance is the credits balance (committed debits only; open
	// reservations do not lower it); meaningful only when HasBalance.
	Balance    money.Micros
	HasBalance bool
}

// Committed is what Commit reports to its callback, after the commit.
type Committed struct {
	// SpentToday is the day's committed plus reserved spend.
	SpentToday money.Micros
	// BalanceAfter is the credits balance after the debit; meaningful only
	// when HasBalance.
	BalanceAfter money.Micros
	HasBalance   bool
}

// NewSpend returns an empty Spend.
func NewSpend() *Spend { return &Spend{m: newShardedMap[string, *account]()} }

// lock returns principal's account, locked, creating it when create is
// set; nil when it does not exist and create is not set.
func (s *Spend) lock(principal string, create bool) *account {
	for {
		sh := s.m.lock(principal)
		a, _ := sh.get(principal)
		if a == nil {
			if !create {
				sh.mu.Unlock()
				return nil
			}
			a = &account{}
			sh.put(principal, a)
		}
		sh.mu.Unlock()
		a.mu.Lock()
		if !a.dead {
			return a
		}
		a.mu.Unlock() // swept in between: retry with a fresh account
	}
}

// lockHeld returns the account of the open reservation r, locked, or nil
// when it is gone (swept, so r is no longer open): the account Reserve
// found, else the principal's, looked up.
func (s *Spend) lockHeld(r Reservation) *account {
	a := r.acct
	if a == nil {
		return s.lock(r.principal, false)
	}
	a.mu.Lock()
	if a.dead {
		a.mu.Unlock()
		return nil
	}
	return a
}

// dayAt returns the index of day in a.days, or -1.
func (a *account) dayAt(day Day) int {
	for i := range a.days {
		if a.days[i].day == day {
			return i
		}
	}
	return -1
}

// dayEntry returns day's entry, adding it if missing.
func (a *account) dayEntry(day Day) *daySpend {
	if i := a.dayAt(day); i >= 0 {
		return &a.days[i]
	}
	a.days = append(a.days, daySpend{day: day})
	return &a.days[len(a.days)-1]
}

// spent returns day's committed plus reserved spend, and false when that
// sum does not fit (Restore can set any committed figure); the figure is
// then saturated at the largest Micros, never wrapped.
func (a *account) spent(day Day) (money.Micros, bool) {
	if i := a.dayAt(day); i >= 0 {
		if s, ok := a.days[i].committed.Add(a.days[i].reserved); ok {
			return s, true
		}
		return math.MaxInt64, false
	}
	return 0, true
}

// spentToday is spent without the flag, for reports.
func (a *account) spentToday(day Day) money.Micros {
	s, _ := a.spent(day)
	return s
}

// available returns the balance not held by open reservations.
func (a *account) available() (money.Micros, bool) { return a.balance.Sub(a.held) }

// Reserve reserves cost for principal on day if it fits: when hasLimit,
// the day's committed + reserved spend plus cost must not exceed limit
// (the cap is checked first); when the principal has a credits balance,
// the balance not yet held by other reservations must cover cost. A cost
// of 0 always passes and holds nothing; a negative cost is treated as 0.
// Every sum is checked: a cost that would make the day's spend or the
// credits held overflow money.Micros is refused with ReasonOverflow (or
// ReasonCapExceeded when there is a cap, which it then exceeds), so a
// figure never wraps negative.
//
// The returned Reservation, with a new ID, must be passed to Commit or
// Release when OK; when not OK it holds nothing. principal is kept as a map key; it must be
// an ordinary immutable string. Safe for concurrent use.
func (s *Spend) Reserve(principal string, day Day, cost money.Micros, limit money.Micros, hasLimit bool) (Reservation, SpendResult) {
	cost = max(cost, 0)
	r := Reservation{principal: principal, day: day}
	res := SpendResult{Limit: limit}
	a := s.lock(principal, cost > 0)
	if a == nil { // free call by an unknown principal
		res.OK = true
		return r, res
	}
	r, res = s.reserveOn(a, r, res, cost, limit, hasLimit)
	a.mu.Unlock()
	return r, res
}

// reserveOn is Reserve on a, locked, with r and res filled in.
func (s *Spend) reserveOn(a *account, r Reservation, res SpendResult, cost, limit money.Micros, hasLimit bool) (Reservation, SpendResult) {
	day := r.day
	spent, spentOK := a.spent(day)
	avail, availOK := a.available()
	res.SpentToday, res.HasBalance = spent, a.hasBalance
	if d := a.dayAt(day); d >= 0 {
		res.Reserved = a.days[d].reserved
	}
	if availOK {
		res.Balance = avail
	}
	if cost == 0 {
		res.OK = true
		return r, res
	}
	after, afterOK := spent.Add(cost)
	var reserved, held money.Micros
	reservedOK, heldOK := true, true
	if i := a.dayAt(day); i >= 0 {
		reserved, reservedOK = a.days[i].reserved.Add(cost)
	} else {
		reserved = cost
	}
	if a.hasBalance {
		held, heldOK = a.held.Add(cost)
	}
	switch {
	case hasLimit && (!spentOK || !afterOK || after > limit):
		res.Reason = ReasonCapExceeded
		return r, res
	case !spentOK || !afterOK || !reservedOK || !heldOK || (a.hasBalance && !availOK):
		res.Reason = ReasonOverflow
		return r, res
	case a.hasBalance && cost > avail:
		res.Reason = ReasonInsufficientCredits
		return r, res
	}
	a.dayEntry(day).reserved = reserved
	if a.hasBalance {
		a.held = held
	}
	id := s.ids.Add(1)
	a.open = append(a.open, hold{id: id, day: day, cost: cost, credits: a.hasBalance})
	r.id, r.cost, r.acct = id, cost, a
	res.OK = true
	return r, res
}

// ReserveWithGroup is Reserve for principal and then, when that reserved
// the cost, Reserve of the same cost for group on groupDay against its
// cap groupLimit (a team budget shared by the group's members): the two
// reservations a call by a group member makes, in one call. Each result
// is what the Reserve of its own would have returned (gr and gres are
// zero when the member's was refused); each reservation is committed or
// released on its own. The member's account remembers its group's, so a
// member's calls find the group's account without looking it up; the
// group's is locked while the member's is held (lock order: member, then
// group; group accounts are never members). cost must be positive. Safe
// for concurrent use.
func (s *Spend) ReserveWithGroup(principal string, day Day, cost, limit money.Micros, hasLimit bool, group string, groupDay Day, groupLimit money.Micros) (r Reservation, res SpendResult, gr Reservation, gres SpendResult) {
	if cost <= 0 {
		panic("meter: ReserveWithGroup of a cost <= 0")
	}
	a := s.lock(principal, true)
	r, res = s.reserveOn(a, Reservation{principal: principal, day: day}, SpendResult{Limit: limit}, cost, limit, hasLimit)
	if !res.OK {
		a.mu.Unlock()
		return r, res, gr, gres
	}
	gr, gres = Reservation{principal: group, day: groupDay}, SpendResult{Limit: groupLimit}
	if ga := a.group; ga != nil && ga != a && a.groupKey == group {
		ga.mu.Lock()
		if !ga.dead {
			gr, gres = s.reserveOn(ga, gr, gres, cost, groupLimit, true)
			ga.mu.Unlock()
			a.mu.Unlock()
			return r, res, gr, gres
		}
		ga.mu.Unlock()
	}
	// Not linked yet (or the group's account was swept): look it up with
	// the member's account unlocked, as every lookup locks a shard first.
	a.mu.Unlock()
	ga := s.lock(group, true)
	gr, gres = s.reserveOn(ga, gr, gres, cost, groupLimit, true)
	ga.mu.Unlock()
	a.mu.Lock()
	a.group, a.groupKey = ga, group // a holds r: not swept
	a.mu.Unlock()
	return r, res, gr, gres
}

// take removes the open reservation id from a and undoes its hold,
// returning it; ok is false when it is not open.
func (a *account) take(id uint64) (h hold, ok bool) {
	for i := range a.open {
		if a.open[i].id == id {
			h = a.open[i]
			last := len(a.open) - 1
			a.open[i] = a.open[last]
			a.open = a.open[:last]
			if d := a.dayAt(h.day); d >= 0 {
				a.days[d].reserved -= h.cost
			}
			if h.credits {
				a.held -= h.cost
			}
			return h, true
		}
	}
	return hold{}, false
}

// Commit turns r into committed spend of its day and, if it was held
// against credits, debits the balance. fn, if not nil, runs while the
// principal is locked, after the change, so records appended by fn follow
// the order of balance changes; it must be quick and must not call back
// into s for the same principal. Commit reports false, doing nothing and
// not calling fn, when r is no longer open (committed or released already):
// a second Commit never debits twice, and a Commit after Release never
// bills. A reservation that holds nothing
// (zero cost) always commits, calling fn with the principal's current
// figures. Safe for concurrent use.
func (s *Spend) Commit(r Reservation, fn func(Committed)) bool {
	return s.commit(r, -1, fn)
}

// CommitCost is Commit billing cost instead of the reserved amount: a
// metered call reserves its maximum and commits what it cost. cost is
// capped at the reservation's; the rest is released.
func (s *Spend) CommitCost(r Reservation, cost money.Micros, fn func(Committed)) bool {
	return s.commit(r, max(cost, 0), fn)
}

// commit commits r at cost (< 0: the reserved cost).
func (s *Spend) commit(r Reservation, cost money.Micros, fn func(Committed)) bool {
	if r.id == 0 {
		if fn == nil {
			return true
		}
		a := s.lock(r.principal, false)
		if a == nil {
			fn(Committed{})
			return true
		}
		defer a.mu.Unlock()
		fn(Committed{SpentToday: a.spentToday(r.day), BalanceAfter: a.balance, HasBalance: a.hasBalance})
		return true
	}
	a := s.lockHeld(r)
	if a == nil { // evicted: it had no open reservation left
		return false
	}
	defer a.mu.Unlock()
	h, ok := a.take(r.id)
	if !ok {
		return false
	}
	if cost >= 0 && cost < h.cost {
		h.cost = cost
	}
	// Reserve checked that committed + reserved + cost fits and that the
	// balance covers cost, so these cannot overflow unless Restore or a
	// negative TopUp moved the figures since; then they saturate rather
	// than wrap.
	d := a.dayEntry(h.day)
	if c, ok := d.committed.Add(h.cost); ok {
		d.committed = c
	} else {
		d.committed = math.MaxInt64
	}
	if h.credits {
		if b, ok := a.balance.Sub(h.cost); ok {
			a.balance = b
		} else {
			a.balance = math.MinInt64
		}
	}
	if fn != nil {
		fn(Committed{SpentToday: a.spentToday(h.day), BalanceAfter: a.balance, HasBalance: a.hasBalance})
	}
	return true
}

// Release returns r's reserved cost unused. It reports false, doing
// nothing, when r is no longer open (released or committed already): a
// second Release never returns the cost twice, and a Release after Commit
// does not undo the bill. A reservation that holds nothing always
// releases. Safe for concurrent use.
func (s *Spend) Release(r Reservation) bool {
	if r.id == 0 {
		return true
	}
	a := s.lockHeld(r)
	if a == nil {
		return false
	}
	_, ok := a.take(r.id)
	a.mu.Unlock()
	return ok
}

// TopUp adds amount (negative for a correction) to principal's credits
// balance, giving the principal a balance (making it prepaid) if it had
// none, and returns the new balance and true. fn, if not nil, runs with
// the new balance while the principal is locked, as in Commit. When the
// new balance would not fit in money.Micros, TopUp refuses: it changes
// nothing, does not call fn, and returns the current balance and false.
// Safe for concurrent use.
func (s *Spend) TopUp(principal string, amount money.Micros, fn func(balanceAfter money.Micros)) (money.Micros, bool) {
	a := s.lock(principal, true)
	defer a.mu.Unlock()
	b, ok := a.balance.Add(amount)
	if !ok {
		return a.balance, false
	}
	a.balance = b
	a.hasBalance = true
	if fn != nil {
		fn(a.balance)
	}
	return a.balance, true
}

// Balance returns principal's credits balance (committed debits only; open
// reservations do not lower it) and whether it has one. Safe for
// concurrent use.
func (s *Spend) Balance(principal string) (money.Micros, bool) {
	a := s.lock(principal, false)
	if a == nil {
		return 0, false
	}
	defer a.mu.Unlock()
	return a.balance, a.hasBalance
}

// Today returns principal's committed plus reserved spend on day. Safe for
// concurrent use.
func (s *Spend) Today(principal string, day Day) (spent money.Micros) {
	a := s.lock(principal, false)
	if a == nil {
		return 0
	}
	defer a.mu.Unlock()
	return a.spentToday(day)
}

// Status returns principal's committed and reserved spend on day and its
// credits balance, read under one lock. Safe for concurrent use.
func (s *Spend) Status(principal string, day Day) SpendStatus {
	a := s.lock(principal, false)
	if a == nil {
		return SpendStatus{}
	}
	defer a.mu.Unlock()
	st := SpendStatus{Balance: a.balance, HasBalance: a.hasBalance}
	if i := a.dayAt(day); i >= 0 {
		st.Committed, st.Reserved = a.days[i].committed, a.days[i].reserved
	}
	return st
}

// Today returns Committed + Reserved, what the cap is checked against,
// saturated at the largest Micros rather than wrapped.
func (st SpendStatus) Today() money.Micros { return st.Committed.SatAdd(st.Reserved) }

// Restore sets principal's committed spend on day to spent, replacing what
// was recorded; the gateway calls it once per (principal, day) with the
// ledger's sum when it starts. Open reservations are kept. Safe for
// concurrent use.
func (s *Spend) Restore(principal string, day Day, spent money.Micros) {
	a := s.lock(principal, true)
	a.dayEntry(day).committed = spent
	a.mu.Unlock()
}

// RestoreBalance sets principal's credits balance, making it prepaid.
// Safe for concurrent use.
func (s *Spend) RestoreBalance(principal string, balance money.Micros) {
	a := s.lock(principal, true)
	a.balance, a.hasBalance = balance, true
	a.mu.Unlock()
}

// keepDays is how many days before the current UTC date Sweep keeps. Any
// zone's local date is within a day of the UTC date, so this keeps at
// least the local today and yesterday everywhere.
const keepDays = 2

// Sweep drops the day entries older than two days before now's UTC date
// (those with open reservations are kept) and evicts principals left with
// no day, no balance and no open reservation, returning how many it
// evicted. Balances are never dropped. Run it periodically, e.g. hourly.
// Safe for concurrent use.
func (s *Spend) Sweep(now time.Time) (evicted int) {
	oldest := localDay(now, time.UTC) - keepDays
	return s.m.sweep(func(_ string, a *account) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		kept := a.days[:0]
		for _, d := range a.days {
			if d.day >= oldest || d.reserved != 0 {
				kept = append(kept, d)
			}
		}
		clear(a.days[len(kept):])
		a.days = kept
		if len(a.days) == 0 && len(a.open) == 0 && !a.hasBalance {
			a.dead = true
			return false
		}
		return true
	})
}

// Len returns the number of principals tracked. Safe for concurrent use.
func (s *Spend) Len() int { return s.m.len() }
