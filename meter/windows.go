package meter

import "time"

// Windows counts calls per principal in several exact sliding windows at
// once: the quotas of a policy beyond the per-minute rate-class quota
// ({"class":"heavy","per":"1h","limit":100}, {"tool":"email/send","per":"24h",
// "limit":500}). Each rule of a call is a WindowRule; a call is admitted
// only when every one of its rules has room, and then counted in all of
// them under one lock, so no window-long interval of any rule ever holds
// more admitted calls than its limit, also under concurrency.
//
// For each principal and rule key it keeps the admission times of the
// calls still inside that rule's window, oldest first (8 bytes a call), in
// a ring that grows on demand up to the limit: memory is proportional to
// the calls in the windows, bounded by the limits, and Sweep evicts the
// principals with none. Times are kept nondecreasing per principal, as in
// Quotas. Safe for concurrent use; use NewWindows.
type Windows struct {
	m *shardedMap[string, *windowEntry]
}

// WindowRule is one window a call counts in: Key names it (stable across
// policy reloads for the same selector and length), Per is its length and
// Limit the calls it admits (0 blocks). It is an alias of an unnamed
// struct type, identical to policy.WindowRule, so that compiled policies
// hand their rules to Windows as they are, without either package
// importing the other.
type WindowRule = struct {
	Key   uint64
	Per   time.Duration
	Limit int
}

// WindowResult is the outcome of Windows.Admit.
type WindowResult struct {
	// OK reports whether the call was admitted (and counted in every rule).
	OK bool
	// Rule is the index, in the rules given, of the rule that refused the
	// call; Used the calls in its window and ResetIn the time until a call
	// could pass (0 for a blocked rule). Meaningless when OK.
	Rule    int
	Used    int
	ResetIn time.Duration
	// At is the time the call was counted at (Unix ns), for Undo; 0 when
	// nothing was counted.
	At int64
}

type windowEntry struct {
	newest int64 // the newest time counted, for monotonic stamps
	rings  []wring
}

type wring struct {
	key  uint64
	per  int64
	buf  []int64
	head int32
	n    int32
}

// NewWindows returns an empty Windows.
func NewWindows() *Windows { return &Windows{m: newShardedMap[string, *windowEntry]()} }

func (e *windowEntry) ring(r WindowRule) *wring {
	for i := range e.rings {
		if e.rings[i].key == r.Key {
			w := &e.rings[i]
			w.per = int64(r.Per)
			return w
		}
	}
	e.rings = append(e.rings, wring{key: r.Key, per: int64(r.Per)})
	return &e.rings[len(e.rings)-1]
}

func (w *wring) idx(i int32) int32 {
	j := w.head + i
	if j >= int32(len(w.buf)) {
		j -= int32(len(w.buf))
	}
	return j
}

func (w *wring) at(i int32) int64 { return w.buf[w.idx(i)] }

func (w *wring) prune(now int64) {
	cutoff := now - w.per
	for w.n > 0 && w.buf[w.head] <= cutoff {
		w.head++
		if w.head == int32(len(w.buf)) {
			w.head = 0
		}
		w.n--
	}
	if w.n == 0 {
		w.head = 0
	}
}

func (w *wring) push(t int64, limit int) {
	if int(w.n) == len(w.buf) {
		size := max(min(max(2*len(w.buf), 2), limit), int(w.n)+1)
		nb := make([]int64, size)
		for i := int32(0); i < w.n; i++ {
			nb[i] = w.at(i)
		}
		w.buf, w.head = nb, 0
	}
	w.buf[w.idx(w.n)] = t
	w.n++
}

// Admit decides one call by principal at now against every rule and, when
// all have room, counts it in each. No rules: admitted, nothing counted.
// principal is kept as a map key; it must be an ordinary immutable string.
func (ws *Windows) Admit(principal string, rules []WindowRule, now time.Time) WindowResult {
	if len(rules) == 0 {
		return WindowResult{OK: true}
	}
	sh := ws.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		e = &windowEntry{rings: make([]wring, 0, len(rules))}
		sh.put(principal, e)
	}
	return e.admit(rules, now.UnixNano())
}

func (e *windowEntry) admit(rules []WindowRule, t int64) WindowResult {
	t = max(t, e.newest)
	for i, r := range rules {
		w := e.ring(r)
		w.prune(t)
		if int(w.n) >= r.Limit {
			res := WindowResult{Rule: i, Used: int(w.n)}
			if r.Limit > 0 {
				res.ResetIn = time.Duration(w.at(w.n-int32(r.Limit)) + w.per - t)
			}
			return res
		}
	}
	for _, r := range rules {
		e.ring(r).push(t, r.Limit)
	}
	e.newest = t
	return WindowResult{OK: true, At: t}
}

// Undo takes back the call counted at at (WindowResult.At) in every rule,
// for a call a later stage refused. Calls counted at the same instant are
// alike, so any one of them goes. Undoing what is not there does nothing.
func (ws *Windows) Undo(principal string, rules []WindowRule, at int64) {
	if at == 0 || len(rules) == 0 {
		return
	}
	sh := ws.m.lock(principal)
	defer sh.mu.Unlock()
	if e, _ := sh.get(principal); e != nil {
		e.undo(rules, at)
	}
}

func (e *windowEntry) undo(rules []WindowRule, at int64) {
	for _, r := range rules {
		w := e.ring(r)
		for i := w.n - 1; i >= 0; i-- {
			if w.at(i) == at {
				for ; i < w.n-1; i++ {
					w.buf[w.idx(i)] = w.buf[w.idx(i+1)]
				}
				w.n--
				break
			}
		}
	}
}

// Peek reports the calls of principal in rule's window ending at now and
// the time until the next could pass (when full) or until the oldest
// leaves, without counting one.
func (ws *Windows) Peek(principal string, rule WindowRule, now time.Time) (used int, resetIn time.Duration) {
	sh := ws.m.lock(principal)
	defer sh.mu.Unlock()
	e, _ := sh.get(principal)
	if e == nil {
		return 0, 0
	}
	return e.peek(rule, now.UnixNano())
}

func (e *windowEntry) peek(rule WindowRule, t int64) (used int, resetIn time.Duration) {
	for i := range e.rings {
		w := &e.rings[i]
		if w.key != rule.Key {
			continue
		}
		cutoff := t - int64(rule.Per)
		first := int32(0)
		for first < w.n && w.at(first) <= cutoff {
			first++
		}
		used = int(w.n - first)
		switch {
		case used == 0 || rule.Limit == 0:
		case used >= rule.Limit:
			resetIn = time.Duration(w.at(first+int32(used-rule.Limit)) + int64(rule.Per) - t)
		default:
			resetIn = time.Duration(w.at(first) + int64(rule.Per) - t)
		}
		return used, max(resetIn, 0)
	}
	return 0, 0
}

// Sweep forgets the calls out of their windows by now, drops empty rings
// and evicts principals left with none; it returns how many it evicted.
func (ws *Windows) Sweep(now time.Time) (evicted int) {
	t := now.UnixNano()
	return ws.m.sweep(func(_ string, e *windowEntry) bool {
		kept := e.rings[:0]
		for _, w := range e.rings {
			w.prune(t)
			if w.n > 0 {
				kept = append(kept, w)
			}
		}
		clear(e.rings[len(kept):])
		e.rings = kept
		return len(kept) > 0
	})
}

// Len returns the number of principals tracked.
func (ws *Windows) Len() int { return ws.m.len() }
