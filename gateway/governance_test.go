package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/ledger"
)

// gateUpstream is a loopback upstream whose calls wait until the test
// opens the gate (or a path-specific behaviour applies): it counts the
// calls inside it at once.
type gateUpstream struct {
	srv     *httptest.Server
	gate    chan struct{}
	inside  atomic.Int64
	peak    atomic.Int64
	hits    atomic.Int64
	release sync.Once
}

func newGateUpstream(t testing.TB) *gateUpstream {
	u := &gateUpstream{gate: make(chan struct{})}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		n := u.inside.Add(1)
		defer u.inside.Add(-1)
		for {
			p := u.peak.Load()
			if n <= p || u.peak.CompareAndSwap(p, n) {
				break
			}
		}
		if strings.HasSuffix(r.URL.Path, "/gated") {
			select {
			case <-u.gate:
			case <-time.After(20 * time.Second):
			}
		}
		if strings.HasSuffix(r.URL.Path, "/fail") {
			w.WriteHeader(500)
			w.Write([]byte(`{"error":"broken"}`))
			return
		}
		if strings.HasSuffix(r.URL.Path, "/sleep") {
			time.Sleep(400 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(func() { u.open(); u.srv.Close() })
	return u
}

func (u *gateUpstream) open() { u.release.Do(func() { close(u.gate) }) }

// govCatalog: tools on the gate upstream.
func govCatalog(up string) string {
	return `{"tools":[
 {"id":"gated","rate_class":"heavy","price_usd":"0.01","upstream":"` + up + `/gated"},
 {"id":"fast","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/fast"},
 {"id":"fast2","rate_class":"light","upstream":"` + up + `/fast2"},
 {"id":"fail","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/fail"},
 {"id":"timeout","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/sleep","timeout_ms":100},
 {"id":"sleepy","rate_class":"light","upstream":"` + up + `/sleep","timeout_ms":5000},
 {"id":"email/send","rate_class":"medium","price_usd":"0.005","upstream":"` + up + `/email","packs":["comms"]}
]}`
}

func newGovHarness(t *testing.T) (*harness, *gateUpstream) {
	t.Helper()
	up := newGateUpstream(t)
	h := newHarnessWith(t, newUpstream(t), govCatalog(up.srv.URL), nil)
	return h, up
}

// inFlight reads the key's in_flight.all from the status endpoint.
func inFlight(h *harness, secret string) int {
	h.t.Helper()
	_, b := h.do("GET", "/authorization/status?api_key="+secret, "")
	var st struct {
		InFlight struct {
			All int `json:"all"`
		} `json:"in_flight"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		h.t.Fatalf("status %s: %v", b, err)
	}
	return st.InFlight.All
}

func TestGovernance_MaxInFlight(t *testing.T) {
	h, up := newGovHarness(t)
	k := h.createKey(`{"policy":{"max_in_flight":5}}`)

	// 200 concurrent calls while the upstream holds every call: exactly
	// five get through, the other 195 are refused at once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	var refusedBody []byte
	var refused atomic.Int64
	start := make(chan struct{})
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, b := h.call(k.Secret, "gated", `{}`)
			mu.Lock()
			counts[resp.StatusCode]++
			if resp.StatusCode == 429 {
				refusedBody = b
				refused.Add(1)
			}
			mu.Unlock()
		}()
	}
	close(start)
	waitFor(t, "195 refusals", func() bool { return refused.Load() == 195 })
	if n := up.inside.Load(); n != 5 {
		t.Fatalf("calls inside the upstream: got %d, want 5", n)
	}
	if n := inFlight(h, k.Secret); n != 5 {
		t.Fatalf("status in_flight: got %d, want 5", n)
	}
	up.open()
	wg.Wait()
	if counts[200] != 5 || counts[429] != 195 {
		t.Fatalf("statuses: got %v, want 5×200 and 195×429", counts)
	}
	if p := up.peak.Load(); p != 5 {
		t.Fatalf("peak calls inside the upstream: got %d, want 5", p)
	}
	wantJSON(t, refusedBody, `{"error":"Concurrency limit exceeded","limit":5,"in_flight":5}`)
	waitFor(t, "in_flight back to 0", func() bool { return inFlight(h, k.Secret) == 0 })

	// The refusals are recorded, not billed.
	var byOutcome = map[string]int{}
	var billed int64
	h.led.Query(ledger.Query{Principal: "key:" + k.KeyID, Type: "call"}, func(r *ledger.Record) error {
		byOutcome[r.Outcome+"/"+r.Reason]++
		billed += int64(r.Cost)
		return nil
	})
	if byOutcome["concurrency_exceeded/max_in_flight"] != 195 || byOutcome["allowed/"] != 5 || billed != 50_000 {
		t.Fatalf("ledger: %v billed %d, want 195 concurrency_exceeded, 5 allowed, 50000 billed", byOutcome, billed)
	}
}

// TestGovernance_MaxInFlightReleased: every way a call can end gives its
// slot back: success, an upstream error, a timeout, a caller that left.
func TestGovernance_MaxInFlightReleased(t *testing.T) {
	h, _ := newGovHarness(t)
	k := h.createKey(`{"policy":{"max_in_flight":1}}`)
	for _, tc := range []struct{ tool, want string }{
		{"fast", "200"}, {"fail", "500"}, {"timeout", "504"},
	} {
		resp, b := h.call(k.Secret, tc.tool, `{}`)
		if fmt.Sprint(resp.StatusCode) != tc.want {
			t.Fatalf("%s: got %d %s, want %s", tc.tool, resp.StatusCode, b, tc.want)
		}
		if n := inFlight(h, k.Secret); n != 0 {
			t.Fatalf("after %s: in_flight %d, want 0", tc.tool, n)
		}
	}
	// A caller that gives up before the upstream answers.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/tools/sleepy", strings.NewReader(`{}`))
	req.Header.Set("X-API-Key", k.Secret)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := h.http.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, "the slow call in flight", func() bool { return inFlight(h, k.Secret) == 1 })
	resp, b := h.call(k.Secret, "fast", `{}`)
	if resp.StatusCode != 429 {
		t.Fatalf("second call while one is in flight: got %d %s, want 429", resp.StatusCode, b)
	}
	cancel()
	<-done
	waitFor(t, "the abandoned call's slot back", func() bool { return inFlight(h, k.Secret) == 0 })
	if resp, b := h.call(k.Secret, "fast", `{}`); resp.StatusCode != 200 {
		t.Fatalf("after release: got %d %s", resp.StatusCode, b)
	}
}

func TestGovernance_MaxInFlightClass(t *testing.T) {
	h, up := newGovHarness(t)
	k := h.createKey(`{"policy":{"max_in_flight_class":{"heavy":1}}}`)
	done := make(chan int)
	go func() {
		resp, _ := h.call(k.Secret, "gated", `{}`)
		done <- resp.StatusCode
	}()
	waitFor(t, "the gated call inside", func() bool { return up.inside.Load() == 1 })
	resp, b := h.call(k.Secret, "gated", `{}`)
	if resp.StatusCode != 429 {
		t.Fatalf("second heavy call: got %d %s, want 429", resp.StatusCode, b)
	}
	wantJSON(t, b, `{"error":"Concurrency limit exceeded","limit":1,"in_flight":1}`)
	if resp, b := h.call(k.Secret, "fast", `{}`); resp.StatusCode != 200 {
		t.Fatalf("a light call beside it: got %d %s, want 200", resp.StatusCode, b)
	}
	up.open()
	if s := <-done; s != 200 {
		t.Fatalf("gated call: %d", s)
	}
}
