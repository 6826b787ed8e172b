package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
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

func newGovHarness(t *testing.T, opts ...func(*gateway.Options)) (*harness, *gateUpstream) {
	t.Helper()
	up := newGateUpstream(t)
	var o func(*gateway.Options)
	if len(opts) > 0 {
		o = opts[0]
	}
	h := newHarnessWith(t, newUpstream(t), govCatalog(up.srv.URL), o)
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
	// The five admitted calls reach the upstream on their own time: wait
	// for them as well as for the refusals (a refusal can be answered
	// before an admitted call's request has arrived upstream).
	waitFor(t, "195 refusals and 5 calls inside the upstream", func() bool {
		return refused.Load() == 195 && up.inside.Load() == 5
	})
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

func TestGovernance_QuotaWindows(t *testing.T) {
	clock := newTestClock()
	h, _ := newGovHarness(t, func(o *gateway.Options) { o.Now = clock.now })
	k := h.createKey(`{"policy":{"quotas":[{"class":"light","per":"1h","limit":3},{"tool":"email/*","per":"24h","limit":2}]}}`)
	for i := 0; i < 3; i++ {
		if resp, b := h.call(k.Secret, "fast", `{}`); resp.StatusCode != 200 {
			t.Fatalf("call %d: got %d %s", i, resp.StatusCode, b)
		}
		clock.advance(time.Minute)
	}
	// The fourth light call within the hour: refused, naming the window.
	resp, b := h.call(k.Secret, "fast2", `{}`)
	if resp.StatusCode != 403 {
		t.Fatalf("4th light call: got %d %s, want 403", resp.StatusCode, b)
	}
	wantJSON(t, b, `{"error":"Policy quota exceeded","window":"1h","class":"light","limit":3,"calls_in_window":3,"reset_in_seconds":3420}`)
	if ra := resp.Header.Get("Retry-After"); ra != "3420" {
		t.Fatalf("Retry-After: got %q, want 3420", ra)
	}
	// Another class is not counted in it.
	for i := 0; i < 2; i++ {
		if resp, b := h.call(k.Secret, "email/send", `{}`); resp.StatusCode != 200 {
			t.Fatalf("email %d: got %d %s", i, resp.StatusCode, b)
		}
	}
	resp, b = h.call(k.Secret, "email/send", `{}`)
	wantJSON(t, b, `{"error":"Policy quota exceeded","window":"24h","tool":"email/*","limit":2,"calls_in_window":2,"reset_in_seconds":86400}`)
	// Exactly one hour after the first light call it leaves the window.
	clock.advance(57*time.Minute - 1)
	if resp, _ := h.call(k.Secret, "fast", `{}`); resp.StatusCode != 403 {
		t.Fatalf("1 ns before the first call leaves: got %d, want 403", resp.StatusCode)
	}
	clock.advance(1)
	if resp, b := h.call(k.Secret, "fast", `{}`); resp.StatusCode != 200 {
		t.Fatalf("after the first call left the window: got %d %s", resp.StatusCode, b)
	}
	// The status endpoint shows both windows.
	_, b = h.do("GET", "/authorization/status?api_key="+k.Secret, "")
	var st struct {
		QuotaWindows []map[string]any `json:"quota_windows"`
	}
	json.Unmarshal(b, &st)
	if len(st.QuotaWindows) != 2 || st.QuotaWindows[0]["used"] != 3.0 || st.QuotaWindows[1]["used"] != 2.0 ||
		st.QuotaWindows[1]["window"] != "24h" || st.QuotaWindows[1]["tool"] != "email/*" {
		t.Fatalf("status quota_windows: %s", b)
	}
	// The refusals are ledger records.
	n := 0
	h.led.Query(ledger.Query{Principal: "key:" + k.KeyID, Outcome: "quota_exceeded"}, func(r *ledger.Record) error {
		if r.Reason == "quota_window" {
			n++
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("quota_window records: got %d, want 3", n)
	}
}

// TestGovernance_QuotaWindowsConcurrent: 200 calls at once against a
// window of 7 admit exactly 7; a call the spend cap then refuses gives its
// place back.
func TestGovernance_QuotaWindowsConcurrent(t *testing.T) {
	h, up := newGovHarness(t)
	k := h.createKey(`{"policy":{"quotas":[{"class":"light","per":"24h","limit":7}]}}`)
	counts := fire(h, 200, k.Secret, "fast2")
	if counts[200] != 7 || counts[403] != 193 {
		t.Fatalf("statuses: got %v, want 7×200 and 193×403", counts)
	}
	if got := up.hits.Load(); got != 7 {
		t.Fatalf("upstream hits: got %d, want 7", got)
	}
	k2 := h.createKey(`{"policy":{"daily_spend_cap_usd":"0.01","quotas":[{"class":"light","per":"24h","limit":2}]}}`)
	if resp, _ := h.call(k2.Secret, "fast", `{}`); resp.StatusCode != 200 {
		t.Fatal("first call")
	}
	if resp, _ := h.call(k2.Secret, "fast", `{}`); resp.StatusCode != 429 {
		t.Fatal("second call should hit the spend cap")
	}
	if resp, b := h.call(k2.Secret, "fast2", `{}`); resp.StatusCode != 200 { // free: the cap-refused call left no trace in the window
		t.Fatalf("third call: got %d %s, want 200", resp.StatusCode, b)
	}
}

func TestGovernance_LoopBreaker(t *testing.T) {
	clock := newTestClock()
	h, up := newGovHarness(t, func(o *gateway.Options) { o.Now = clock.now })
	k := h.createKey(`{"policy":{"loop_breaker":{"repeats":5,"within_s":60,"cooldown_s":300}}}`)
	same := `{"check":"ci-status","run":42}`
	for i := 0; i < 5; i++ {
		if resp, b := h.call(k.Secret, "fast2", same); resp.StatusCode != 200 {
			t.Fatalf("identical call %d: got %d %s", i, resp.StatusCode, b)
		}
		clock.advance(time.Second)
	}
	resp, b := h.call(k.Secret, "fast2", same)
	if resp.StatusCode != 429 {
		t.Fatalf("6th identical call: got %d %s, want 429", resp.StatusCode, b)
	}
	wantJSON(t, b, `{"error":"Repeated identical calls","reason":"loop_detected","repeats":5,"cooldown_seconds":300}`)
	if ra := resp.Header.Get("Retry-After"); ra != "300" {
		t.Fatalf("Retry-After %q, want 300", ra)
	}
	hits := up.hits.Load()
	// Different calls still pass: another body, another tool, many of them.
	for i := 0; i < 30; i++ {
		if resp, b := h.call(k.Secret, "fast2", fmt.Sprintf(`{"check":"ci-status","run":%d}`, 100+i)); resp.StatusCode != 200 {
			t.Fatalf("varied call %d: got %d %s", i, resp.StatusCode, b)
		}
	}
	if resp, _ := h.call(k.Secret, "fast", same); resp.StatusCode != 200 {
		t.Fatalf("same body, other tool: got %d", resp.StatusCode)
	}
	if got := up.hits.Load() - hits; got != 31 {
		t.Fatalf("upstream hits for the varied calls: got %d, want 31", got)
	}
	clock.advance(100 * time.Second)
	resp, b = h.call(k.Secret, "fast2", same)
	wantJSON(t, b, `{"error":"Repeated identical calls","reason":"loop_detected","repeats":5,"cooldown_seconds":200}`)
	clock.advance(200 * time.Second)
	if resp, b := h.call(k.Secret, "fast2", same); resp.StatusCode != 200 {
		t.Fatalf("after the cool-down: got %d %s", resp.StatusCode, b)
	}
	n := 0
	h.led.Query(ledger.Query{Principal: "key:" + k.KeyID, Outcome: "breaker_tripped"}, func(r *ledger.Record) error {
		if r.Reason == "loop_detected" && r.Cost == 0 {
			n++
		}
		return nil
	})
	if n != 2 {
		t.Fatalf("loop_detected records: got %d, want 2", n)
	}
}

// TestGovernance_LoopBreakerConcurrent: 100 identical calls at once with
// repeats 20 let exactly 20 through.
func TestGovernance_LoopBreakerConcurrent(t *testing.T) {
	h, up := newGovHarness(t)
	k := h.createKey(`{"policy":{"loop_breaker":{}}}`) // the defaults: 20 within 60 s, 300 s cool-down
	counts := fire(h, 100, k.Secret, "fast2")
	if counts[200] != 20 || counts[429] != 80 || up.hits.Load() != 20 {
		t.Fatalf("statuses %v, upstream %d: want 20×200 and 80×429", counts, up.hits.Load())
	}
}

func TestGovernance_SpendBurst(t *testing.T) {
	clock := newTestClock()
	h, _ := newGovHarness(t, func(o *gateway.Options) { o.Now = clock.now })
	k := h.createKey(`{"policy":{"spend_burst":{"usd":"0.03","within_s":60}}}`)
	// Calls that are not billed (the upstream failed) hold nothing.
	for i := 0; i < 3; i++ {
		if resp, _ := h.call(k.Secret, "fail", `{}`); resp.StatusCode != 500 {
			t.Fatalf("fail: %d", resp.StatusCode)
		}
	}
	for i := 0; i < 3; i++ {
		if resp, b := h.call(k.Secret, "fast", fmt.Sprintf(`{"n":%d}`, i)); resp.StatusCode != 200 {
			t.Fatalf("billed call %d: got %d %s", i, resp.StatusCode, b)
		}
		clock.advance(10 * time.Second)
	}
	resp, b := h.call(k.Secret, "fast", `{"n":9}`)
	if resp.StatusCode != 429 {
		t.Fatalf("4th cent within a minute: got %d %s, want 429", resp.StatusCode, b)
	}
	wantJSON(t, b, `{"error":"Spend burst limit exceeded","reason":"spend_burst","spent_usd":0.03,"limit_usd":0.03,"cost_usd":0.01,"within_s":60,"reset_in_seconds":30}`)
	if resp, _ := h.call(k.Secret, "fast2", `{}`); resp.StatusCode != 200 { // free calls are not counted
		t.Fatalf("free call: %d", resp.StatusCode)
	}
	clock.advance(30 * time.Second)
	if resp, b := h.call(k.Secret, "fast", `{"n":10}`); resp.StatusCode != 200 {
		t.Fatalf("after the first cent left the window: got %d %s", resp.StatusCode, b)
	}
	_, b = h.do("GET", "/authorization/status?api_key="+k.Secret, "")
	if m := decode(t, b); fmt.Sprint(m["spend_burst"]) != "map[limit_usd:0.03 spent_usd:0.03 within_s:60]" {
		t.Fatalf("status spend_burst: %v", m["spend_burst"])
	}
}

func TestGovernance_Groups(t *testing.T) {
	h, up := newGovHarness(t)
	// A group before its members: unknown groups are refused.
	resp, b := h.admin("POST", "/credits/keys", `{"group":"team-a"}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"path":"group"`) || !strings.Contains(string(b), `unknown group \"team-a\"`) {
		t.Fatalf("key in an unknown group: got %d %s", resp.StatusCode, b)
	}
	resp, b = h.admin("PUT", "/groups/team-a/policy", `{"tier":"x"}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"path":"$.tier"`) {
		t.Fatalf("group policy with a tier: got %d %s", resp.StatusCode, b)
	}
	resp, b = h.admin("PUT", "/groups/team-a/policy", `{"group_daily_spend_cap_usd":"0.10","deny_tools":["email/*"],"max_in_flight":50}`)
	if resp.StatusCode != 200 {
		t.Fatalf("PUT group: %d %s", resp.StatusCode, b)
	}
	resp, b = h.admin("PUT", "/credits/keys/nope/policy", `{"group_daily_spend_cap_usd":"1"}`)
	if resp.StatusCode != 404 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var keys []createdKey
	for i := 0; i < 10; i++ {
		keys = append(keys, h.createKey(`{"group":"team-a"}`))
	}
	// The group's layer applies to its members (defaults ← tier ← group ← override).
	if resp, b := h.call(keys[0].Secret, "email/send", `{}`); resp.StatusCode != 403 {
		t.Fatalf("member calling a tool the group denies: got %d %s", resp.StatusCode, b)
	}
	lifted := h.createKey(`{"policy":{"group":"team-a","deny_tools":[]}}`)
	if resp, b := h.call(lifted.Secret, "email/send", `{}`); resp.StatusCode != 200 {
		t.Fatalf("member whose override lifts the group's deny list: got %d %s", resp.StatusCode, b)
	}
	// The group's daily cap holds across all members: 200 calls at once,
	// spread over ten keys, bill exactly the cap ($0.10 at $0.01 a call,
	// less the $0.005 email above: 9 calls).
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	var capBody []byte
	hits := up.hits.Load()
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(k createdKey, n int) {
			defer wg.Done()
			resp, b := h.call(k.Secret, "fast", fmt.Sprintf(`{"n":%d}`, n))
			mu.Lock()
			counts[resp.StatusCode]++
			if resp.StatusCode == 429 {
				capBody = b
			}
			mu.Unlock()
		}(keys[i%10], i)
	}
	wg.Wait()
	if counts[200] != 9 || counts[429] != 191 || up.hits.Load()-hits != 9 {
		t.Fatalf("statuses %v, upstream hits %d: want 9×200, 191×429", counts, up.hits.Load()-hits)
	}
	m := decode(t, capBody)
	if m["error"] != "Group daily spend cap exceeded" || m["group"] != "team-a" || m["spend_limit_usd"] != 0.1 || m["cost_usd"] != 0.01 {
		t.Fatalf("429 body: %s", capBody)
	}
	// The ledger bills exactly the cap, and names the group on each call.
	var billed int64
	named := 0
	h.led.Query(ledger.Query{Type: "call"}, func(r *ledger.Record) error {
		billed += int64(r.Cost)
		if string(r.State) == `{"group":"team-a"}` {
			named++
		}
		return nil
	})
	if billed != 95_000 || named != 202 {
		t.Fatalf("ledger: billed %d µUSD, %d records naming the group; want 95000 and 202", billed, named)
	}
	// The group's status: shared spend, members, policy.
	resp, b = h.admin("GET", "/authorization/status?group=team-a", "")
	m = decode(t, b)
	if resp.StatusCode != 200 || m["spend_today_usd"] != 0.095 || m["spend_limit_usd"] != 0.1 || len(m["members"].([]any)) != 11 || m["source"] != "store" {
		t.Fatalf("group status: %d %s", resp.StatusCode, b)
	}
	if resp, _ := h.do("GET", "/authorization/status?group=team-a", ""); resp.StatusCode != 401 {
		t.Fatalf("group status without the admin token: %d", resp.StatusCode)
	}
	_, b = h.do("GET", "/authorization/status?api_key="+keys[0].Secret, "")
	if m := decode(t, b); m["group"] != "team-a" {
		t.Fatalf("member status names no group: %s", b)
	}
	// A group with members cannot be deleted.
	if resp, b := h.admin("DELETE", "/groups/team-a/policy", ""); resp.StatusCode != 409 {
		t.Fatalf("DELETE group with members: %d %s", resp.StatusCode, b)
	}
}

// TestGovernance_GroupsInFile: groups declared in policies.json, and the
// validation of the document's group fields.
func TestGovernance_GroupsInFile(t *testing.T) {
	doc := `{"version":1,"defaults":{},"tiers":{},"groups":{"research":{"allow_tools":["fast","fast2"],"group_daily_spend_cap_usd":"0.02"}}}`
	up := newGateUpstream(t)
	h := newHarnessWith(t, newUpstream(t), govCatalog(up.srv.URL), func(o *gateway.Options) {
		d, err := policy.DecodeDocument([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		o.Policies = d
	})
	a, b := h.createKey(`{"group":"research"}`), h.createKey(`{"group":"research"}`)
	if resp, _ := h.call(a.Secret, "fast", `{}`); resp.StatusCode != 200 {
		t.Fatal("a")
	}
	if resp, _ := h.call(b.Secret, "fast", `{}`); resp.StatusCode != 200 {
		t.Fatal("b")
	}
	resp, body := h.call(a.Secret, "fast", `{"x":1}`)
	if resp.StatusCode != 429 || decode(t, body)["group"] != "research" {
		t.Fatalf("third cent for the group: got %d %s", resp.StatusCode, body)
	}
	if resp, _ := h.call(b.Secret, "timeout", `{}`); resp.StatusCode != 403 {
		t.Fatalf("tool outside the group's allow list: %d", resp.StatusCode)
	}
	_, err := policy.DecodeDocument([]byte(`{"version":1,"defaults":{"group_daily_spend_cap_usd":1},"groups":{"a b":{},"x":{"group":"y"}}}`))
	for _, want := range []string{"defaults.group_daily_spend_cap_usd: only a group policy", `groups["a b"]: group name`, "groups.x.group: only an override selects a group"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("document problems: got %v, want %q", err, want)
		}
	}
}

// shadowOf returns the state of the principal's call records, oldest first.
func statesOf(h *harness, principal string) []string {
	var out []string
	h.led.Query(ledger.Query{Principal: principal, Type: "call"}, func(r *ledger.Record) error {
		out = append(out, r.Outcome+" "+string(r.State))
		return nil
	})
	return out
}

func TestGovernance_Shadow(t *testing.T) {
	h, up := newGovHarness(t)
	// mode "shadow": the override is evaluated and recorded, not enforced.
	k := h.createKey(`{"policy":{"mode":"shadow","deny_tools":["fast2"],"approval_tools":["email/send"]}}`)
	for _, tool := range []string{"fast2", "fast", "email/send"} {
		if resp, b := h.call(k.Secret, tool, `{}`); resp.StatusCode != 200 {
			t.Fatalf("%s under a shadow override: got %d %s, want 200", tool, resp.StatusCode, b)
		}
	}
	got := strings.Join(statesOf(h, "key:"+k.KeyID), "\n")
	want := `allowed {"shadow":{"outcome":"denied","reason":"deny_tools"}}
allowed {"shadow":{"outcome":"allowed"}}
allowed {"shadow":{"outcome":"pending_approval","reason":"approval_required"}}`
	if got != want {
		t.Fatalf("records:\n%s\nwant\n%s", got, want)
	}
	if up.hits.Load() != 3 {
		t.Fatalf("upstream hits %d, want 3", up.hits.Load())
	}
	// A shadow policy beside the enforced one: the enforced quota holds,
	// the shadow's tighter one is only recorded.
	k2 := h.createKey(`{"policy":{"rate_class_quota":{"light":3},"shadow":{"rate_class_quota":{"light":1},"daily_spend_cap_usd":"0.01"}}}`)
	for i := 0; i < 4; i++ {
		h.call(k2.Secret, "fast", fmt.Sprintf(`{"n":%d}`, i))
	}
	got = strings.Join(statesOf(h, "key:"+k2.KeyID), "\n")
	want = `allowed {"shadow":{"outcome":"allowed"}}
allowed {"shadow":{"outcome":"quota_exceeded","reason":"rate_class_quota"}}
allowed {"shadow":{"outcome":"quota_exceeded","reason":"rate_class_quota"}}
quota_exceeded {"shadow":{"outcome":"quota_exceeded","reason":"rate_class_quota"}}`
	if got != want {
		t.Fatalf("records:\n%s\nwant\n%s", got, want)
	}
	_, b := h.do("GET", "/authorization/status?api_key="+k2.Secret, "")
	var st struct {
		Policy struct {
			RateClassQuota map[string]int `json:"rate_class_quota"`
		} `json:"policy"`
		Shadow struct {
			RateClassQuota map[string]int `json:"rate_class_quota"`
		} `json:"shadow_policy"`
	}
	json.Unmarshal(b, &st)
	if st.Policy.RateClassQuota["light"] != 3 || st.Shadow.RateClassQuota["light"] != 1 {
		t.Fatalf("status: %s", b)
	}
	// Validation of the shadow fields.
	resp, b := h.admin("PUT", "/credits/keys/"+k.KeyID+"/policy", `{"shadow":{"mode":"shadow","shadow":{},"tier":"x"}}`)
	for _, want := range []string{`$.shadow.mode`, `$.shadow.shadow`, `$.shadow.tier`} {
		if resp.StatusCode != 400 || !strings.Contains(string(b), want) {
			t.Fatalf("invalid shadow: got %d %s, want a problem at %s", resp.StatusCode, b, want)
		}
	}
	if _, err := policy.DecodeDocument([]byte(`{"version":1,"fail_mode":"shadow"}`)); err == nil || !strings.Contains(err.Error(), `fail_mode: must be "open" or "strict"`) {
		t.Fatalf("fail_mode shadow: %v", err)
	}
}

func TestGovernance_Simulate(t *testing.T) {
	h, _ := newGovHarness(t)
	a := h.createKey(`{}`)
	b := h.createKey(`{}`)
	// The ledger, by hand: A calls fast ×5, fast2 ×3, email/send ×2; B
	// calls fast ×4. All allowed under the seed policies.
	for _, c := range []struct {
		k    createdKey
		tool string
		n    int
	}{{a, "fast", 5}, {a, "fast2", 3}, {a, "email/send", 2}, {b, "fast", 4}} {
		for i := 0; i < c.n; i++ {
			if resp, body := h.call(c.k.Secret, c.tool, fmt.Sprintf(`{"i":%d}`, i)); resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", c.tool, resp.StatusCode, body)
			}
		}
	}
	// Candidate: deny fast2 everywhere; light calls 3 a minute for keys.
	// A: fast2 ×3 denied (denied calls take no quota), fast: 3 allowed, 2
	// over quota; B: 3 allowed, 1 over; email/send (medium) allowed.
	cand := `{"version":1,"defaults":{"deny_tools":["fast2"]},"tiers":{"api_key":{"rate_class_quota":{"light":3}}}}`
	resp, body := h.admin("POST", "/policies/simulate", `{"hours":1,"samples":2,"policies":`+cand+`}`)
	if resp.StatusCode != 200 {
		t.Fatalf("simulate: %d %s", resp.StatusCode, body)
	}
	var res struct {
		Records   int            `json:"records"`
		Evaluated int            `json:"evaluated"`
		Current   map[string]int `json:"current"`
		Candidate map[string]int `json:"candidate"`
		CanReason map[string]int `json:"candidate_reasons"`
		Changed   int            `json:"changed"`
		Flips     map[string]int `json:"flips"`
		Samples   []struct {
			Principal string            `json:"principal"`
			Tool      string            `json:"tool"`
			Current   map[string]string `json:"current"`
			Candidate map[string]string `json:"candidate"`
		} `json:"samples"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if res.Records != 14 || res.Evaluated != 14 || res.Current["allowed"] != 14 ||
		res.Candidate["allowed"] != 8 || res.Candidate["denied"] != 3 || res.Candidate["quota_exceeded"] != 3 ||
		res.CanReason["denied/deny_tools"] != 3 || res.CanReason["quota_exceeded/rate_class_quota"] != 3 || res.Changed != 6 ||
		res.Flips["allowed/ → denied/deny_tools"] != 3 || res.Flips["allowed/ → quota_exceeded/rate_class_quota"] != 3 {
		t.Fatalf("simulation: %s", body)
	}
	if len(res.Samples) != 2 || res.Samples[0].Tool != "fast" || res.Samples[0].Candidate["outcome"] != "quota_exceeded" ||
		res.Samples[0].Principal != "key:"+a.KeyID || res.Samples[1].Tool != "fast" {
		t.Fatalf("samples: %s", body)
	}
	// One principal's candidate override: only B's records, all denied.
	resp, body = h.admin("POST", "/policies/simulate", `{"principal":"key:`+b.KeyID+`","override":{"deny_tools":["fast"]}}`)
	json.Unmarshal(body, &res)
	if resp.StatusCode != 200 || res.Evaluated != 4 || res.Candidate["denied"] != 4 || res.Changed != 4 {
		t.Fatalf("override simulation: %d %s", resp.StatusCode, body)
	}
	// Nothing was enforced: A still calls fast2.
	if resp, _ := h.call(a.Secret, "fast2", `{}`); resp.StatusCode != 200 {
		t.Fatal("simulation changed the live policy")
	}
	// Bad requests name the problem.
	for _, tc := range []struct{ body, want string }{
		{`{}`, `give a candidate`},
		{`{"policies":{"version":2}}`, `"path":"policies.version"`},
		{`{"override":{}}`, `"path":"principal"`},
		{`{"principal":"key:x","override":{"deny_tools":"x"}}`, `"path":"override.deny_tools"`},
		{`{"hours":0,"policies":` + cand + `}`, `"path":"hours"`},
	} {
		resp, body := h.admin("POST", "/policies/simulate", tc.body)
		if resp.StatusCode != 400 || !strings.Contains(string(body), tc.want) {
			t.Fatalf("%s: got %d %s, want 400 with %s", tc.body, resp.StatusCode, body, tc.want)
		}
	}
	if resp, _ := h.do("POST", "/policies/simulate", `{"policies":`+cand+`}`); resp.StatusCode != 401 {
		t.Fatalf("simulate without the admin token: %d", resp.StatusCode)
	}
}

// restarted runs a second gateway over h's store and ledger, as after a
// restart (the first one stopped), and returns a harness for it.
func restarted(t *testing.T, h *harness, catJSON string, clock *testClock) *harness {
	t.Helper()
	h.gw.Close()
	keys, err := identity.Open(h.db)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Decode([]byte(catJSON))
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := policy.DecodeDocument([]byte(seedPolicies))
	o := gateway.Options{DB: h.db, Keys: keys, Ledger: h.led, Catalog: cat, Policies: doc, AdminToken: adminToken}
	if clock != nil {
		o.Now = clock.now
	}
	gw, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gw.Server()
	go srv.Serve(gateway.Listener(ln))
	t.Cleanup(func() { srv.Shutdown(); gw.Close() })
	h2 := *h
	h2.url, h2.gw = "http://"+ln.Addr().String(), gw
	return &h2
}

type approvalView struct {
	ID     string `json:"approval_id"`
	Status string `json:"status"`
	Poll   string `json:"poll"`
	Reason string `json:"reason"`
	By     string `json:"decided_by"`
	Result *struct {
		Status int             `json:"status"`
		Body   json.RawMessage `json:"body"`
	} `json:"result"`
}

func TestGovernance_Approval(t *testing.T) {
	clock := newTestClock()
	h, up := newGovHarness(t, func(o *gateway.Options) { o.Now = clock.now })
	k := h.createKey(`{"policy":{"approval_tools":["email/*"],"approval_timeout_s":600}}`)

	// A held call: 202 with its poll URL; nothing forwarded or billed.
	resp, b := h.call(k.Secret, "email/send", `{"to":"cfo@example.com","subject":"wire"}`)
	if resp.StatusCode != 202 {
		t.Fatalf("approval tool: got %d %s, want 202", resp.StatusCode, b)
	}
	m := decode(t, b)
	id, _ := m["approval_id"].(string)
	if m["status"] != "pending_approval" || !strings.HasPrefix(id, "ap_") || m["poll"] != "/approvals/"+id || m["error"] != nil {
		t.Fatalf("202 body: %s", b)
	}
	if up.hits.Load() != 0 {
		t.Fatal("a held call reached the upstream")
	}
	if resp, b := h.call(k.Secret, "fast2", `{}`); resp.StatusCode != 200 { // other tools are not held
		t.Fatalf("other tool: %d %s", resp.StatusCode, b)
	}
	// The operator sees it; the caller may poll it with its key; nobody else.
	_, b = h.admin("GET", "/approvals", "")
	if !strings.Contains(string(b), id) || !strings.Contains(string(b), `"request_body":{"to":"cfo@example.com","subject":"wire"}`) {
		t.Fatalf("GET /approvals: %s", b)
	}
	if resp, b := h.do("GET", "/approvals/"+id, "", "X-API-Key", k.Secret); resp.StatusCode != 200 || decode(t, b)["status"] != "pending" {
		t.Fatalf("caller polls: %d %s", resp.StatusCode, b)
	}
	other := h.createKey(`{}`)
	if resp, _ := h.do("GET", "/approvals/"+id, "", "X-API-Key", other.Secret); resp.StatusCode != 404 {
		t.Fatalf("another key polls: %d, want 404", resp.StatusCode)
	}
	if resp, _ := h.do("POST", "/approvals/"+id, `{"decision":"approve"}`, "X-API-Key", k.Secret); resp.StatusCode != 401 {
		t.Fatalf("the caller approves its own call: %d, want 401", resp.StatusCode)
	}

	// The gateway restarts with the call pending: it is still there.
	h = restarted(t, h, govCatalog(up.srv.URL), clock)
	if resp, b := h.admin("GET", "/approvals/"+id, ""); resp.StatusCode != 200 || decode(t, b)["status"] != "pending" {
		t.Fatalf("after restart: %d %s", resp.StatusCode, b)
	}

	// Two operators approve at once: the call is forwarded exactly once.
	var wg sync.WaitGroup
	results := make([]int, 2)
	bodies := make([][]byte, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, b := h.admin("POST", "/approvals/"+id, `{"decision":"approve","reason":"expected wire"}`)
			results[i], bodies[i] = resp.StatusCode, b
		}()
	}
	wg.Wait()
	if !(results[0] == 200 && results[1] == 409 || results[0] == 409 && results[1] == 200) {
		t.Fatalf("double approve: got %v %s %s, want one 200 and one 409", results, bodies[0], bodies[1])
	}
	if up.hits.Load() != 2 { // fast2 above, and the approved call
		t.Fatalf("upstream hits: %d, want the approved call once", up.hits.Load()-1)
	}
	var av approvalView
	_, b = h.do("GET", "/approvals/"+id, "", "X-API-Key", k.Secret)
	json.Unmarshal(b, &av)
	if av.Status != "done" || av.Result == nil || av.Result.Status != 200 || !strings.Contains(string(av.Result.Body), `"path":"/email"`) ||
		av.Reason != "expected wire" || !strings.HasPrefix(av.By, "admin@") {
		t.Fatalf("approved call's result: %s", b)
	}
	// The ledger: held (not billed), decided (who, when), run (billed once).
	var trail []string
	h.led.Query(ledger.Query{Principal: "key:" + k.KeyID}, func(r *ledger.Record) error {
		if r.Tool == "email/send" || r.Type == "admin" && strings.HasPrefix(r.Kind, "approval") {
			trail = append(trail, fmt.Sprintf("%s %s %s %d %d", r.Type, r.Outcome, r.Kind, r.Status, r.Cost))
		}
		return nil
	})
	if got := strings.Join(trail, "|"); got != "call pending_approval  202 0|admin  approval_approved 0 0|call allowed  200 5000" {
		t.Fatalf("ledger trail: %s", got)
	}

	// Denied: never forwarded.
	_, b = h.call(k.Secret, "email/send", `{"n":2}`)
	id2 := decode(t, b)["approval_id"].(string)
	_, b = h.admin("POST", "/approvals/"+id2, `{"decision":"deny","reason":"not today"}`)
	if json.Unmarshal(b, &av); av.Status != "denied" || av.Reason != "not today" || up.hits.Load() != 2 {
		t.Fatalf("deny: %s", b)
	}
	if resp, _ := h.admin("POST", "/approvals/"+id2, `{"decision":"approve"}`); resp.StatusCode != 409 {
		t.Fatalf("approve after deny: %d", resp.StatusCode)
	}
	// Expired: denied.
	_, b = h.call(k.Secret, "email/send", `{"n":3}`)
	id3 := decode(t, b)["approval_id"].(string)
	clock.advance(601 * time.Second)
	if resp, b := h.admin("POST", "/approvals/"+id3, `{"decision":"approve"}`); resp.StatusCode != 409 || !strings.Contains(string(b), `"status":"expired"`) {
		t.Fatalf("approve after expiry: %d %s", resp.StatusCode, b)
	}
	if up.hits.Load() != 2 {
		t.Fatal("an expired call was forwarded")
	}
	// Bad decisions name the problem.
	if resp, b := h.admin("POST", "/approvals/"+id3, `{"decision":"maybe"}`); resp.StatusCode != 400 || !strings.Contains(string(b), `"path":"decision"`) {
		t.Fatalf("bad decision: %d %s", resp.StatusCode, b)
	}
}

// TestGovernance_ApprovalWait: with Prefer: wait=N the caller waits for
// the decision and gets the call's answer itself.
func TestGovernance_ApprovalWait(t *testing.T) {
	h, up := newGovHarness(t)
	k := h.createKey(`{"policy":{"approval_tools":["email/send"]}}`)
	type answer struct {
		status int
		body   []byte
	}
	done := make(chan answer)
	go func() {
		resp, b := h.call(k.Secret, "email/send", `{"to":"x"}`, "Prefer", "wait=20")
		done <- answer{resp.StatusCode, b}
	}()
	var id string
	waitFor(t, "the held call listed", func() bool {
		_, b := h.admin("GET", "/approvals", "")
		var l struct {
			Approvals []approvalView `json:"approvals"`
		}
		json.Unmarshal(b, &l)
		if len(l.Approvals) == 1 {
			id = l.Approvals[0].ID
		}
		return id != ""
	})
	if resp, b := h.admin("POST", "/approvals/"+id, `{"decision":"approve"}`); resp.StatusCode != 200 {
		t.Fatalf("approve: %d %s", resp.StatusCode, b)
	}
	a := <-done
	if a.status != 200 || !strings.Contains(string(a.body), `"path":"/email"`) || up.hits.Load() != 1 {
		t.Fatalf("waiting caller: got %d %s, upstream hits %d", a.status, a.body, up.hits.Load())
	}
	// Without a decision in time: the 202.
	resp, b := h.call(k.Secret, "email/send", `{"to":"y"}`, "Prefer", "wait=1")
	if resp.StatusCode != 202 || decode(t, b)["status"] != "pending_approval" {
		t.Fatalf("wait=1 without a decision: %d %s", resp.StatusCode, b)
	}
}

// TestGovernance_GroupSpendRestart: a group's shared spend is rebuilt
// from the ledger at start.
func TestGovernance_GroupSpendRestart(t *testing.T) {
	h, up := newGovHarness(t)
	if resp, b := h.admin("PUT", "/groups/ops/policy", `{"group_daily_spend_cap_usd":"0.03"}`); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	a, b := h.createKey(`{"group":"ops"}`), h.createKey(`{"group":"ops"}`)
	h.call(a.Secret, "fast", `{"n":1}`)
	h.call(b.Secret, "fast", `{"n":2}`)
	h = restarted(t, h, govCatalog(up.srv.URL), nil)
	if resp, body := h.call(a.Secret, "fast", `{"n":3}`); resp.StatusCode != 200 {
		t.Fatalf("third cent: %d %s", resp.StatusCode, body)
	}
	if resp, body := h.call(b.Secret, "fast", `{"n":4}`); resp.StatusCode != 429 || decode(t, body)["group"] != "ops" {
		t.Fatalf("fourth cent after restart: %d %s, want the group's 429", resp.StatusCode, body)
	}
}

func TestGovernance_ShadowBreakers(t *testing.T) {
	h, _ := newGovHarness(t)
	// The enforced breakers count; the shadow's tighter ones read what
	// they keep: the third identical call would have tripped a breaker
	// of 2 repeats, and a burst of $0.025 is exceeded by the third $0.01
	// call; a different call resets neither window's count.
	k := h.createKey(`{"policy":{"loop_breaker":{"repeats":10,"within_s":60},"spend_burst":{"usd":"1","within_s":60},
 "shadow":{"loop_breaker":{"repeats":2,"within_s":60}}}}`)
	for i := 0; i < 4; i++ {
		if resp, b := h.call(k.Secret, "fast", `{"same":true}`); resp.StatusCode != 200 {
			t.Fatalf("call %d: got %d %s, want 200 (the shadow enforces nothing)", i, resp.StatusCode, b)
		}
	}
	h.call(k.Secret, "fast", `{"other":true}`)
	got := strings.Join(statesOf(h, "key:"+k.KeyID), "\n")
	want := `allowed {"shadow":{"outcome":"allowed"}}
allowed {"shadow":{"outcome":"allowed"}}
allowed {"shadow":{"outcome":"breaker_tripped","reason":"loop_detected"}}
allowed {"shadow":{"outcome":"breaker_tripped","reason":"loop_detected"}}
allowed {"shadow":{"outcome":"allowed"}}`
	if got != want {
		t.Fatalf("loop breaker records:\n%s\nwant\n%s", got, want)
	}
	k2 := h.createKey(`{"policy":{"spend_burst":{"usd":"1","within_s":60},"shadow":{"spend_burst":{"usd":"0.025","within_s":30}}}}`)
	for i := 0; i < 4; i++ {
		if resp, b := h.call(k2.Secret, "fast", fmt.Sprintf(`{"n":%d}`, i)); resp.StatusCode != 200 {
			t.Fatalf("call %d: got %d %s, want 200", i, resp.StatusCode, b)
		}
	}
	got = strings.Join(statesOf(h, "key:"+k2.KeyID), "\n")
	want = `allowed {"shadow":{"outcome":"allowed"}}
allowed {"shadow":{"outcome":"allowed"}}
allowed {"shadow":{"outcome":"breaker_tripped","reason":"spend_burst"}}
allowed {"shadow":{"outcome":"breaker_tripped","reason":"spend_burst"}}`
	if got != want {
		t.Fatalf("spend burst records:\n%s\nwant\n%s", got, want)
	}
	// Without an enforced breaker nothing is counted: the shadow's is
	// never tripped.
	k3 := h.createKey(`{"policy":{"shadow":{"loop_breaker":{"repeats":1,"within_s":60}}}}`)
	for i := 0; i < 3; i++ {
		h.call(k3.Secret, "fast", `{"same":true}`)
	}
	for i, s := range statesOf(h, "key:"+k3.KeyID) {
		if s != `allowed {"shadow":{"outcome":"allowed"}}` {
			t.Fatalf("call %d without an enforced breaker: %s", i, s)
		}
	}
}

// TestGovernance_ApprovalSweep: a held call nobody looks at is expired by
// the sweep (and recorded); approvals that ended are deleted once the
// retention has passed; pending and running ones stay.
func TestGovernance_ApprovalSweep(t *testing.T) {
	clock := newTestClock()
	h, up := newGovHarness(t, func(o *gateway.Options) { o.Now = clock.now; o.ApprovalRetention = 24 * time.Hour })
	k := h.createKey(`{"policy":{"approval_tools":["email/*"],"approval_timeout_s":600}}`)
	held := func(body string) string {
		t.Helper()
		resp, b := h.call(k.Secret, "email/send", body)
		if resp.StatusCode != 202 {
			t.Fatalf("approval tool: got %d %s, want 202", resp.StatusCode, b)
		}
		return decode(t, b)["approval_id"].(string)
	}
	forgotten, denied := held(`{"n":1}`), held(`{"n":2}`)
	if resp, b := h.admin("POST", "/approvals/"+denied, `{"decision":"deny","reason":"no"}`); resp.StatusCode != 200 {
		t.Fatalf("deny: %d %s", resp.StatusCode, b)
	}
	if e, d, err := h.gw.SweepApprovals(); e != 0 || d != 0 || err != nil {
		t.Fatalf("sweep before anything is due: expired %d deleted %d %v, want 0 0", e, d, err)
	}
	clock.advance(601 * time.Second)
	late := held(`{"n":3}`) // held after the first expired: still pending below
	if e, d, err := h.gw.SweepApprovals(); e != 1 || d != 0 || err != nil {
		t.Fatalf("sweep past expires_at: expired %d deleted %d %v, want 1 0", e, d, err)
	}
	if _, b := h.admin("GET", "/approvals/"+forgotten, ""); decode(t, b)["status"] != "expired" {
		t.Fatalf("forgotten approval after the sweep: %s", b)
	}
	var kinds []string
	h.led.Query(ledger.Query{Principal: "key:" + k.KeyID}, func(r *ledger.Record) error {
		if r.Type == "admin" && strings.HasPrefix(r.Kind, "approval") {
			kinds = append(kinds, r.Kind)
		}
		return nil
	})
	if got := strings.Join(kinds, " "); got != "approval_denied approval_expired" {
		t.Fatalf("ledger admin records: %q, want the denial and the sweep's expiry", got)
	}
	clock.advance(24*time.Hour - 601*time.Second + time.Second) // 24 h after the denial
	if e, d, err := h.gw.SweepApprovals(); e != 1 || d != 1 || err != nil {
		t.Fatalf("sweep a day later: expired %d deleted %d %v, want 1 (the late one) and 1 (the denial)", e, d, err)
	}
	for id, want := range map[string]int{denied: 404, forgotten: 200, late: 200} {
		if resp, b := h.admin("GET", "/approvals/"+id, ""); resp.StatusCode != want {
			t.Fatalf("approval %s after the retention: got %d %s, want %d", id, resp.StatusCode, b, want)
		}
	}
	if up.hits.Load() != 0 {
		t.Fatal("a held call reached the upstream")
	}
}
