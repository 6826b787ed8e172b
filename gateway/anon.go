package gateway

import (
	"encoding/json"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/toolgate/toolgate/ledger"
)

// Anonymous floods.
//
// A call from a caller that could not be identified (no key, a bad key, an
// unknown path, a malformed or unpaid payment) is recorded one record per
// call only up to a burst per source address and per interval; past it,
// such calls are counted, answered at once and recorded in aggregate: one
// record per (source, outcome, reason) and interval, carrying the count
// and the first and last time seen. A flood from one address therefore
// costs a bounded number of records per interval, while every identified
// caller's call stays one record. The sources tracked per interval are
// bounded too: beyond anonMaxSources, further sources are counted under
// the unspecified address ("0.0.0.0"), and beyond anonGlobalBurst
// individual records per interval everything is aggregated.

const (
	anonInterval    = 10 * time.Second
	anonBurst       = 20   // individual records per source and interval
	anonGlobalBurst = 2000 // individual anonymous records per interval, all sources
	anonMaxSources  = 10000
)

// An aggregate record is a "call" record with the outcome, reason, status
// and tool (or path) of the calls it counts, no principal, and State
// {"aggregate":true,"source":…,"count":…,"first_at":…,"last_at":…}.

type anonKey struct {
	src             netip.Addr
	outcome, reason string
	tool            string
}

type anonCount struct {
	n           int64
	first, last time.Time
	status      int
}

// anonBook counts the anonymous calls of the current interval.
type anonBook struct {
	mu      sync.Mutex
	single  map[netip.Addr]int // individual records this interval, by source
	total   int                // individual records this interval, all sources
	counted map[anonKey]*anonCount
}

// sourceKey folds an address to what one client controls: IPv4 as is,
// IPv6 by its /64.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// absorb reports whether an anonymous call is counted in aggregate (true)
// or recorded individually (false).
func (b *anonBook) absorb(src netip.Addr, outcome, reason, tool string, status int, at time.Time) bool {
	src = sourceKey(src)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.single == nil {
		b.single = make(map[netip.Addr]int)
		b.counted = make(map[anonKey]*anonCount)
	}
	n, known := b.single[src]
	if !known && len(b.single) >= anonMaxSources {
		src = netip.IPv4Unspecified()
		n = b.single[src]
	}
	if n < anonBurst && b.total < anonGlobalBurst {
		b.single[src] = n + 1
		b.total++
		return false
	}
	if _, ok := b.single[src]; !ok {
		b.single[src] = n
	}
	k := anonKey{src: src, outcome: outcome, reason: reason, tool: tool}
	c := b.counted[k]
	if c == nil {
		c = &anonCount{first: at, status: status}
		b.counted[k] = c
	}
	c.n++
	c.last = at
	return true
}

// drain ends the interval and returns its aggregate records, ordered by
// source, outcome and reason.
func (b *anonBook) drain(now time.Time) []*ledger.Record {
	b.mu.Lock()
	counted := b.counted
	b.single, b.counted, b.total = nil, nil, 0
	b.mu.Unlock()
	if len(counted) == 0 {
		return nil
	}
	keys := make([]anonKey, 0, len(counted))
	for k := range counted {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if c := a.src.Compare(b.src); c != 0 {
			return c < 0
		}
		if a.outcome != b.outcome {
			return a.outcome < b.outcome
		}
		if a.reason != b.reason {
			return a.reason < b.reason
		}
		return a.tool < b.tool
	})
	recs := make([]*ledger.Record, 0, len(keys))
	for _, k := range keys {
		c := counted[k]
		state, _ := json.Marshal(struct {
			Aggregate bool      `json:"aggregate"`
			Source    string    `json:"source"`
			Count     int64     `json:"count"`
			FirstAt   time.Time `json:"first_at"`
			LastAt    time.Time `json:"last_at"`
		}{true, k.src.String(), c.n, c.first.UTC(), c.last.UTC()})
		recs = append(recs, &ledger.Record{Type: ledger.TypeCall, At: now, Tool: k.tool,
			Outcome: k.outcome, Reason: k.reason, Status: c.status, State: state})
	}
	return recs
}

// flushAnon appends the aggregate records of the interval that ended.
func (g *Gateway) flushAnon() {
	recs := g.anon.drain(g.now())
	if len(recs) == 0 {
		return
	}
	if g.space.low.Load() {
		g.log.Warn("store low on space: anonymous call counts not recorded", "records", len(recs))
		return
	}
	if err := g.led.Append(recs...).Wait(); err != nil {
		g.log.Error("record anonymous call counts", "err", err)
	}
}
