package gateway

import (
	"context"
	"sync"
	"time"
)

// settlerHealthTTL is how long /readyz reuses the settlement backend's
// last health answer, success or failure: an anonymous /readyz flood costs
// the facilitator (or RPC node) one GET /supported per TTL, not one per call.
const settlerHealthTTL = 5 * time.Second

// probeTimeout bounds one health probe.
const probeTimeout = 2 * time.Second

// probeCache remembers the result of a health probe for ttl, measured by
// now, and lets concurrent callers share one probe: a caller finding a
// probe in flight waits for its result instead of starting another. It is
// safe for concurrent use; the zero value is unusable (probe is required).
type probeCache struct {
	probe func(ctx context.Context) error
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	valid   bool          // err and at hold a result
	err     error         // the last probe's result
	at      time.Time     // when the last probe ended
	flight  chan struct{} // closed when the probe in flight ends; nil if none
	waiters int           // callers waiting for the probe in flight
}

// check returns the last probe's result if it is younger than ttl,
// otherwise the result of a new probe (or of the one in flight).
func (p *probeCache) check() error {
	p.mu.Lock()
	for {
		if p.valid && p.now().Sub(p.at) < p.ttl {
			err := p.err
			p.mu.Unlock()
			return err
		}
		if p.flight == nil {
			break
		}
		ch := p.flight
		p.waiters++
		p.mu.Unlock()
		<-ch
		p.mu.Lock()
		p.waiters--
	}
	ch := make(chan struct{})
	p.flight = ch
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	err := p.probe(ctx)
	cancel()

	p.mu.Lock()
	p.valid, p.err, p.at, p.flight = true, err, p.now(), nil
	p.mu.Unlock()
	close(ch)
	return err
}
