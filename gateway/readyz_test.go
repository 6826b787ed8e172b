package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// testClock is an injected clock that moves only when told.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// countingFacilitator is a real loopback facilitator that counts
// GET /supported. While hold is set, each probe waits for a value on
// release; failing makes it answer 500.
type countingFacilitator struct {
	url      string
	probes   atomic.Int64
	failing  atomic.Bool
	hold     atomic.Bool
	arrived  chan struct{}
	released chan struct{}
	once     sync.Once
}

// release lets held probes answer.
func (f *countingFacilitator) release() { f.once.Do(func() { close(f.released) }) }

func newCountingFacilitator(t *testing.T) *countingFacilitator {
	f := &countingFacilitator{arrived: make(chan struct{}, 100), released: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/supported" {
			http.NotFound(w, r)
			return
		}
		f.probes.Add(1)
		if f.hold.Load() {
			f.arrived <- struct{}{}
			<-f.released
		}
		if f.failing.Load() {
			http.Error(w, "down", 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"}]}`))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(f.release) // before Close, which waits for held probes
	f.url = srv.URL
	return f
}

// TestReadyz_SettlerHealthCached: /readyz asks the facilitator once per
// 5 s, whatever the number of callers: concurrent calls share the probe in
// flight, later calls reuse its answer, and a failure is cached like a
// success.
func TestReadyz_SettlerHealthCached(t *testing.T) {
	fac := newCountingFacilitator(t)
	clock := newTestClock()
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		withX402(t, &x402.Facilitator{URL: fac.url})(o)
		o.Now = clock.now
	})
	ready := func(t *testing.T, want int) {
		t.Helper()
		if resp, b := h.do("GET", "/readyz", ""); resp.StatusCode != want {
			t.Fatalf("readyz: got %d %s, want %d", resp.StatusCode, b, want)
		}
	}
	probes := func(t *testing.T, want int64) {
		t.Helper()
		if got := fac.probes.Load(); got != want {
			t.Fatalf("facilitator probes: got %d, want %d", got, want)
		}
	}

	if !t.Run("ConcurrentShareOneProbe", func(t *testing.T) {
		const n = 50
		fac.hold.Store(true)
		defer func() { fac.hold.Store(false); fac.release() }()
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := h.http.Get(h.url + "/readyz")
				if err != nil {
					return
				}
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}()
		}
		<-fac.arrived // one probe in flight
		deadline := time.Now().Add(10 * time.Second)
		for gateway.SettlerProbeWaiters(h.gw) != n-1 {
			if time.Now().After(deadline) {
				t.Fatalf("callers waiting for the probe: got %d, want %d", gateway.SettlerProbeWaiters(h.gw), n-1)
			}
			time.Sleep(time.Millisecond) // polling the condition, not standing in for it
		}
		fac.hold.Store(false)
		fac.release()
		wg.Wait()
		for i, s := range statuses {
			if s != 200 {
				t.Fatalf("call %d: got %d, want 200", i, s)
			}
		}
		probes(t, 1)
	}) {
		return
	}
	if !t.Run("SequentialWithinTTL", func(t *testing.T) {
		for range 50 {
			ready(t, 200)
		}
		probes(t, 1)
		clock.advance(4999 * time.Millisecond)
		ready(t, 200)
		probes(t, 1)
	}) {
		return
	}
	if !t.Run("AfterTTL", func(t *testing.T) {
		clock.advance(time.Millisecond) // 5 s since the probe
		ready(t, 200)
		probes(t, 2)
		ready(t, 200)
		probes(t, 2)
	}) {
		return
	}
	t.Run("FailureCached", func(t *testing.T) {
		fac.failing.Store(true)
		ready(t, 200) // the last answer (ok) still holds
		clock.advance(5 * time.Second)
		ready(t, 503)
		probes(t, 3)
		for range 20 {
			ready(t, 503)
		}
		probes(t, 3)
		fac.failing.Store(false)
		clock.advance(5 * time.Second)
		ready(t, 200)
		probes(t, 4)
	})
}
