package meter

import "time"

// MaxClasses is the number of rate classes a Quotas tracks per principal.
// Valid classes are 0 through MaxClasses-1 (catalog.Light, Medium, Heavy).
const MaxClasses = 3

// DefaultWindow is the quota window NewQuotas uses when given 0.
const DefaultWindow = 60 * time.Second

// Quotas counts calls per (principal, rate class) in an exact sliding
// window: no window-long interval ever holds more admitted calls than the
// limit in force, also under concurrent Admit calls.
//
// For each principal and class it keeps the calls still inside the
// window, oldest first, in a ring that grows on demand up to the limit:
// each call's admission time and the call id its caller gave, by which
// Undo finds it. A call is admitted when fewer than limit calls are
// younger than the window; a call leaves the window exactly one window
// after it was admitted. Admission times are kept in nondecreasing order
// per ring: a call whose now runs behind the ring's newest time (clock
// skew between goroutines) is stamped with that newest time instead,
// which can only make later decisions stricter.
//
// Quotas is safe for concurrent use. Principals are spread over the 64
// independently locked shards of a shardedMap; Admit, Undo and Peek for a
// known principal allocate nothing. Memory is proportional to the
// principals with calls in the window, provided Sweep runs periodically.
// Use NewQuotas; the zero value is not usable.
type Quotas struct {
	window int64 // nanoseconds
	m      *shardedMap[string, *quotaEntry]
}

// quotaEntry is one principal's windows, guarded by its shard's lock.
type quotaEntry struct {
	rings [MaxClasses]ring
}

// QuotaResult is the outcome of Quotas.Admit.
type QuotaResult struct {
	// Allowed reports whether the call was admitted (and counted).
	Allowed bool
	// Used is the number of calls in the window after this decision,
	// including this one when allowed. 0 for unlimited classes.
	Used int
	// Limit echoes the limit the decision was made against.
	Limit int
	// ResetIn is, when allowed, the time until the oldest call in the
	// window leaves it; when denied, the time until a call could pass
	// (0 when the limit is 0: the class is blocked, not waiting).
	ResetIn time.Duration
	// At is the time the call was counted at. It equals the now given to
	// Admit unless that ran behind the principal's newest call. Zero when
	// nothing was counted: the call was denied or the class is unlimited,
	// so there is nothing to Undo.
	At time.Time
	// Err is set when the store could not decide (a shared store that
	// could not be reached); the call was then not counted and the other
	// fields are zero. The local Quotas never sets it.
	Err error
}

// NewQuotas returns an empty Quotas with the given window; 0 means
// DefaultWindow (60 s). A negative window panics.
func NewQuotas(window time.Duration) *Quotas {
	if window < 0 {
		panic("meter: negative quota window")
	}
	if window == 0 {
		window = DefaultWindow
	}
	return &Quotas{window: int64(window), m: newShardedMap[string, *quotaEntry]()}
}

// Window returns the length of the sliding window.
func (q *Quotas) Window() time.Duration { return time.Duration(q.window) }

func checkClass(class int) {
	if uint(class) >= MaxClasses {
		panic("meter: rate class out of range")
	}
}

// Admit decides one call by principal in class at now and, when it is
// allowed, counts it under callID. limit < 0 means unlimited: allowed,
// nothing stored. limit 0 blocks the class: denied with ResetIn 0. A
// changed limit applies at once to the calls already in the window:
// lowering it denies until enough of them have left, raising it admits
// more right away.
//
// callID names the call for Undo. It must be unique among the calls of
// principal and class in the window (the gateway uses a per-process
// counter); reusing one makes Undo give back either of the calls.
//
// principal is kept as a map key for as long as the principal has calls in
// the window; it must be an ordinary immutable string, not one aliasing a
// reused buffer. Admit panics if class is not in [0, MaxClasses).
func (q *Quotas) Admit(principal string, class int, limit int, now time.Time, callID uint64) QuotaResult {
	checkClass(class)
	if limit < 0 {
		return QuotaResult{Allowed: true, Limit: limit}
	}
	t := now.UnixNano()
	sh := q.m.lock(principal)
	e, _ := sh.get(principal)
	if e == nil {
		if limit == 0 {
			sh.mu.Unlock()
			return QuotaResult{Limit: 0}
		}
		e = &quotaEntry{}
		sh.put(principal, e)
	}
	r := &e.rings[class]
	if r.n > 0 {
		if nw := r.newest(); t < nw {
			t = nw
		}
	}
	r.prune(t - q.window)
	res := QuotaResult{Limit: limit}
	switch {
	case limit == 0:
		res.Used = r.n
		if r.n == 0 && r.buf != nil {
			r.buf, r.head = nil, 0
		}
	case r.n < limit:
		if len(r.buf) > limit {
			r.resize(limit) // the limit was lowered: give the memory back
		}
		r.push(stamp{t: t, id: callID}, limit)
		res.Allowed = true
		res.Used = r.n
		res.ResetIn = time.Duration(r.at(0) + q.window - t)
		if t == now.UnixNano() {
			res.At = now
		} else {
			res.At = time.Unix(0, t)
		}
	default: // r.n >= limit: the call at index n-limit must leave first
		res.Used = r.n
		res.ResetIn = time.Duration(r.at(r.n-limit) + q.window - t)
	}
	sh.mu.Unlock()
	return res
}

// Undo gives back the slot of the call admitted for principal in class
// under callID. The gateway calls it when a later stage denies the call,
// so a denied call does not burn quota. Undo is idempotent: undoing a call
// that is unknown, already undone or already out of the window does
// nothing. Safe for concurrent use; panics if class is out of range.
func (q *Quotas) Undo(principal string, class int, callID uint64) {
	checkClass(class)
	sh := q.m.lock(principal)
	if e, _ := sh.get(principal); e != nil {
		r := &e.rings[class]
		for i := r.n - 1; i >= 0; i-- { // the call to undo is usually the newest
			if r.buf[r.idx(i)].id == callID {
				r.removeAt(i)
				break
			}
		}
	}
	sh.mu.Unlock()
}

// Peek reports, without counting a call, how many calls principal made in
// class within the window ending at now, and resetIn: the time until a
// call could pass when the limit is reached (0 for a blocked class), else
// until the oldest call leaves the window (0 when there is none). For the
// status endpoint. Safe for concurrent use; panics if class is out of
// range.
func (q *Quotas) Peek(principal string, class int, limit int, now time.Time) (used int, resetIn time.Duration) {
	checkClass(class)
	t := now.UnixNano()
	cutoff := t - q.window
	sh := q.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		return 0, 0
	}
	r := &e.rings[class]
	first := 0
	for first < r.n && r.at(first) <= cutoff {
		first++
	}
	used = r.n - first
	switch {
	case limit == 0 || used == 0:
		return used, 0
	case limit > 0 && used >= limit:
		resetIn = time.Duration(r.at(first+used-limit) + q.window - t)
	default:
		resetIn = time.Duration(r.at(first) + q.window - t)
	}
	return used, min(max(resetIn, 0), time.Duration(q.window))
}

// Sweep forgets every call that left the window by now and evicts the
// principals left with none, returning how many it evicted. Run it
// periodically (every window or so) to bound memory by the principals
// active in the last window. It locks one shard at a time. Safe for
// concurrent use.
func (q *Quotas) Sweep(now time.Time) (evicted int) {
	cutoff := now.UnixNano() - q.window
	return q.m.sweep(func(_ string, e *quotaEntry) bool {
		empty := true
		for c := range e.rings {
			r := &e.rings[c]
			r.prune(cutoff)
			if r.n == 0 {
				r.buf, r.head = nil, 0
			} else {
				empty = false
			}
		}
		return !empty
	})
}

// Len returns the number of principals currently tracked. Safe for
// concurrent use.
func (q *Quotas) Len() int { return q.m.len() }

// stamp is one counted call: its admission time in Unix nanoseconds and
// the id its caller gave.
type stamp struct {
	t  int64
	id uint64
}

// ring is a FIFO of stamps, oldest first, their times nondecreasing. buf
// grows on demand; len(buf) is the capacity.
type ring struct {
	buf  []stamp
	head int // index in buf of the oldest stamp
	n    int // stamps held
}

func (r *ring) idx(i int) int {
	j := r.head + i
	if j >= len(r.buf) {
		j -= len(r.buf)
	}
	return j
}

// at returns the time of the i-th oldest stamp.
func (r *ring) at(i int) int64 { return r.buf[r.idx(i)].t }

func (r *ring) newest() int64 { return r.at(r.n - 1) }

// prune drops the stamps at or before cutoff: they are out of the window.
func (r *ring) prune(cutoff int64) {
	for r.n > 0 && r.buf[r.head].t <= cutoff {
		r.head++
		if r.head == len(r.buf) {
			r.head = 0
		}
		r.n--
	}
	if r.n == 0 {
		r.head = 0
	}
}

// push appends v as the newest stamp, growing buf (doubling, capped at
// limit but never below n+1) when full.
func (r *ring) push(v stamp, limit int) {
	if r.n == len(r.buf) {
		size := max(2*len(r.buf), 4)
		size = max(min(size, limit), r.n+1)
		r.resize(size)
	}
	r.buf[r.idx(r.n)] = v
	r.n++
}

// resize moves the stamps into a new buffer of the given size (≥ n).
func (r *ring) resize(size int) {
	nb := make([]stamp, size)
	for i := 0; i < r.n; i++ {
		nb[i] = r.buf[r.idx(i)]
	}
	r.buf, r.head = nb, 0
}

// removeAt deletes the i-th oldest stamp, shifting the newer ones down.
func (r *ring) removeAt(i int) {
	for ; i < r.n-1; i++ {
		r.buf[r.idx(i)] = r.buf[r.idx(i+1)]
	}
	r.n--
	if r.n == 0 {
		r.head = 0
	}
}
