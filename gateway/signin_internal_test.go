package gateway

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// downCounter is a shared failure count whose store does not answer.
type downCounter struct{}

var errCounterDown = errors.New("store down")

func (downCounter) CountFailure(string, time.Duration) (int64, error) { return 0, errCounterDown }
func (downCounter) Failures(string) (int64, error)                    { return 0, errCounterDown }

// TestSignInLimiter_SharedDown: while the shared count does not answer,
// the node counts on its own, so an outage never lifts the limit, and
// each failure of the store is reported.
func TestSignInLimiter_SharedDown(t *testing.T) {
	errs := 0
	l := signInLimiter{shared: downCounter{}, onErr: func(err error) {
		if !errors.Is(err, errCounterDown) {
			t.Errorf("onErr got %v", err)
		}
		errs++
	}}
	src := netip.MustParseAddr("192.0.2.7")
	now := time.Date(2026, 12, 1, 12, 0, 5, 0, time.UTC)
	for i := 1; i <= signInFailLimit; i++ {
		if l.blocked(src, now) {
			t.Fatalf("blocked after %d failures, want after %d", i-1, signInFailLimit)
		}
		if reached := l.failed(src, now); reached != (i == signInFailLimit) {
			t.Fatalf("failure %d: reached %t", i, reached)
		}
	}
	if !l.blocked(src, now) {
		t.Fatal("not blocked after the limit with the shared store down")
	}
	if l.blocked(netip.MustParseAddr("192.0.2.8"), now) {
		t.Fatal("another source blocked")
	}
	if l.blocked(src, now.Add(time.Minute)) {
		t.Fatal("still blocked in the next minute")
	}
	if errs != 2*signInFailLimit+3 {
		t.Fatalf("store failures reported: %d, want one per shared call (%d)", errs, 2*signInFailLimit+3)
	}
}
