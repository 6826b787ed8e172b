package x402

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// Facilitators is a Settler over several facilitators, tried in order.
// One that fails without a decision (unreachable, 5xx, 4xx without an
// answer, an undecodable body) is skipped for a back-off that doubles with
// each consecutive failure (BackoffMin to BackoffMax) and is tried again
// after it; one that answers is healthy again. When every facilitator is
// backing off, all are tried in order anyway: a back-off never refuses a
// payment by itself.
//
// A settlement moves to the next facilitator only when the failed one
// certainly did not execute it (it could not be reached, or refused the
// request without a decision); an outcome that may have happened
// (ErrOutcomeUnknown) is returned as is, so one payment is never sent to
// two facilitators. Safe for concurrent use.
type Facilitators struct {
	// BackoffMin and BackoffMax bound the back-off (defaults 5 s and 5 min).
	BackoffMin, BackoffMax time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	members []*member

	mu       sync.Mutex
	observer func(name, op, result string)
}

type member struct {
	f    *Facilitator
	name string // host of its URL: the metrics label

	mu        sync.Mutex
	fails     int
	downUntil time.Time
}

var _ Settler = (*Facilitators)(nil)

// NewFacilitators returns the failover set of fs, in order of preference.
func NewFacilitators(fs ...*Facilitator) *Facilitators {
	s := &Facilitators{}
	seen := map[string]int{}
	for _, f := range fs {
		name := f.URL
		if u, err := url.Parse(f.URL); err == nil && u.Host != "" {
			name = u.Host
		}
		if n := seen[name]; n > 0 { // two facilitators on one host: keep labels apart
			name = fmt.Sprintf("%s#%d", name, n+1)
		}
		seen[name]++
		s.members = append(s.members, &member{f: f, name: name})
	}
	return s
}

// Observe sets fn to be called after each request to a facilitator:
// name is its label (the URL's host), op "verify", "settle" or "ping",
// result "ok" (a decision), "error" (none: failed over) or "skipped"
// (backing off).
func (s *Facilitators) Observe(fn func(name, op, result string)) {
	s.mu.Lock()
	s.observer = fn
	s.mu.Unlock()
}

// Health reports, by label, whether each facilitator is in use (not
// backing off).
func (s *Facilitators) Health() map[string]bool {
	now := s.now()
	h := make(map[string]bool, len(s.members))
	for _, m := range s.members {
		m.mu.Lock()
		h[m.name] = !now.Before(m.downUntil)
		m.mu.Unlock()
	}
	return h
}

func (s *Facilitators) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Facilitators) observe(m *member, op, result string) {
	s.mu.Lock()
	fn := s.observer
	s.mu.Unlock()
	if fn != nil {
		fn(m.name, op, result)
	}
}

// order returns the members to try: the healthy ones in order, then, if
// none is, all of them.
func (s *Facilitators) order(op string) []*member {
	now := s.now()
	var up []*member
	for _, m := range s.members {
		m.mu.Lock()
		ok := !now.Before(m.downUntil)
		m.mu.Unlock()
		if ok {
			up = append(up, m)
		} else {
			s.observe(m, op, "skipped")
		}
	}
	if len(up) == 0 {
		return s.members
	}
	return up
}

func (s *Facilitators) failed(m *member, op string) {
	lo, hi := s.BackoffMin, s.BackoffMax
	if lo <= 0 {
		lo = 5 * time.Second
	}
	if hi <= 0 {
		hi = 5 * time.Minute
	}
	m.mu.Lock()
	m.fails++
	d := lo << min(m.fails-1, 20)
	if d > hi || d <= 0 {
		d = hi
	}
	m.downUntil = s.now().Add(d)
	m.mu.Unlock()
	s.observe(m, op, "error")
}

func (s *Facilitators) answered(m *member, op string) {
	m.mu.Lock()
	m.fails, m.downUntil = 0, time.Time{}
	m.mu.Unlock()
	s.observe(m, op, "ok")
}

// Verify asks the facilitators in order until one decides.
func (s *Facilitators) Verify(ctx context.Context, p *Payment, o *Offer) (VerifyResult, error) {
	var errs []error
	for _, m := range s.order("verify") {
		vr, err := m.f.Verify(ctx, p, o)
		if err == nil {
			s.answered(m, "verify")
			return vr, nil
		}
		s.failed(m, "verify")
		errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
		if ctx.Err() != nil {
			break
		}
	}
	return VerifyResult{}, errors.Join(errs...)
}

// Settle asks the facilitators in order until one decides, moving on only
// when the failed one cannot have executed the payment.
func (s *Facilitators) Settle(ctx context.Context, p *Payment, o *Offer) (SettleResult, error) {
	var errs []error
	for _, m := range s.order("settle") {
		sr, err := m.f.Settle(ctx, p, o)
		if err == nil {
			s.answered(m, "settle")
			return sr, nil
		}
		s.failed(m, "settle")
		errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
		if errors.Is(err, ErrOutcomeUnknown) || ctx.Err() != nil {
			return SettleResult{}, errors.Join(errs...) // may have executed: never a second facilitator
		}
	}
	return SettleResult{}, errors.Join(errs...)
}

// Ping succeeds when any facilitator answers /supported.
func (s *Facilitators) Ping(ctx context.Context) error {
	var errs []error
	for _, m := range s.members {
		err := m.f.Ping(ctx)
		if err == nil {
			s.answered(m, "ping")
			return nil
		}
		s.failed(m, "ping")
		errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
	}
	return errors.Join(errs...)
}
