// Package storetest holds the contract suites of the gateway's state
// interfaces (gateway.QuotaStore, SpendStore, NonceStore, KeyStore,
// OverrideStore, AnswerStore). Every implementation, local or shared, runs the suite of
// its interface from its own tests:
//
//	func TestQuotaContract(t *testing.T) {
//		storetest.QuotaContract(t, func(t *testing.T) gateway.QuotaStore { return meter.NewQuotas(0) })
//	}
//
// Each suite is a set of t.Run subtests with exact expectations; each
// subtest asks newStore for a fresh, empty store. Run them with -race: the
// concurrency subtests are the point.
package storetest

import (
	"sync"
	"time"
)

// t0 is the suites' base time: a fixed instant, so that results do not
// depend on the wall clock.
var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// Clock is a clock that moves only when told, for stores that take one
// (NonceContract). Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// concurrently runs fn(i) for i in [0, n) on n goroutines released at
// once, and waits for them.
func concurrently(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}
