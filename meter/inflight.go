package meter

// InFlight counts the calls each principal has in flight (admitted, not
// yet answered), in total and per rate class, against limits given per
// call: the concurrency cap of a policy's max_in_flight and
// max_in_flight_class.
//
// Acquire checks and counts under the principal's shard lock, so
// concurrent calls never hold more slots than the limit; Release gives a
// slot back. The counts are this process's: a cluster caps each node.
// Entries whose counts are all zero stay until Sweep evicts them, so the
// hot path for a known principal allocates nothing. Safe for concurrent
// use; use NewInFlight, the zero value is not usable.
type InFlight struct {
	m *shardedMap[string, *flights]
}

// flights is one principal's counts, guarded by its shard's lock: [0] all
// calls, [1+class] per rate class.
type flights struct {
	n [1 + MaxClasses]int32
}

// InFlightResult is the outcome of InFlight.Acquire.
type InFlightResult struct {
	// OK reports whether a slot was taken (or no limit applies).
	OK bool
	// Held reports whether a slot was counted, to give back with Release.
	Held bool
	// Limit is the limit that refused the call and InFlight the calls in
	// flight it counted (this one excluded); PerClass says the class's
	// limit refused it rather than the total. Zero when OK.
	Limit, InFlight int
	PerClass        bool
}

// NewInFlight returns an empty InFlight.
func NewInFlight() *InFlight { return &InFlight{m: newShardedMap[string, *flights]()} }

// Acquire takes a slot for one call by principal in class when the calls
// it has in flight stay within all (every class) and perClass (the
// class); a limit < 0 is no limit, 0 refuses every call. With neither
// limit nothing is counted (Held false). principal is kept as a map key;
// it must be an ordinary immutable string. Panics if class is out of
// range.
func (f *InFlight) Acquire(principal string, class, all, perClass int) InFlightResult {
	checkClass(class)
	if all < 0 && perClass < 0 {
		return InFlightResult{OK: true}
	}
	sh := f.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		e = &flights{}
		sh.put(principal, e)
	}
	return e.acquire(class, all, perClass)
}

func (e *flights) acquire(class, all, perClass int) InFlightResult {
	if all >= 0 && int(e.n[0]) >= all {
		return InFlightResult{Limit: all, InFlight: int(e.n[0])}
	}
	if perClass >= 0 && int(e.n[1+class]) >= perClass {
		return InFlightResult{Limit: perClass, InFlight: int(e.n[1+class]), PerClass: true}
	}
	e.n[0]++
	e.n[1+class]++
	return InFlightResult{OK: true, Held: true}
}

// Release gives back a slot Acquire counted (Held) for principal in
// class. Releasing more than was acquired is a caller bug; the counts
// never go below zero. Panics if class is out of range.
func (f *InFlight) Release(principal string, class int) {
	checkClass(class)
	sh := f.m.lock(principal)
	if e, _ := sh.get(principal); e != nil {
		e.release(class)
	}
	sh.mu.Unlock()
}

func (e *flights) release(class int) {
	if e.n[0] > 0 {
		e.n[0]--
	}
	if e.n[1+class] > 0 {
		e.n[1+class]--
	}
}

// Count returns principal's calls in flight, in total and in class (class
// < 0: the total twice). For the status endpoint.
func (f *InFlight) Count(principal string, class int) (all, inClass int) {
	sh := f.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		return 0, 0
	}
	if class < 0 || class >= MaxClasses {
		return int(e.n[0]), int(e.n[0])
	}
	return int(e.n[0]), int(e.n[1+class])
}

// Sweep evicts the principals with nothing in flight and returns how many
// it evicted.
func (f *InFlight) Sweep() (evicted int) {
	return f.m.sweep(func(_ string, e *flights) bool { return e.n[0] != 0 })
}

// Len returns the number of principals tracked.
func (f *InFlight) Len() int { return f.m.len() }
