package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster/redistest"
)

// TestCluster_ThreeNodes runs one real redis-server and three real
// toolgate processes in cluster mode on one loopback upstream. Keys,
// policies, revocations and credit top-ups made on one node are seen by
// the others within 1 s; concurrent calls spread round-robin over the
// nodes hold the quota window and the daily cap cluster-wide.
func TestCluster_ThreeNodes(t *testing.T) {
	const password = "cluster-test-pw-7f3a"
	rs := redistest.Start(t, "--requirepass", password)
	redisURL := "redis://:" + password + "@" + rs.Addr + "/0"

	var heavyHits, paidHits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/heavy":
			heavyHits.Add(1)
		case "/paid":
			paidHits.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(up.Close)
	tools := `{"tools":[
 {"id":"heavy","rate_class":"heavy","upstream":"` + up.URL + `/heavy"},
 {"id":"free","rate_class":"light","upstream":"` + up.URL + `/free"},
 {"id":"paid","rate_class":"light","price_usd":"0.01","upstream":"` + up.URL + `/paid"}]}`
	pol, err := os.ReadFile("../../policies.json")
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*proc, 3)
	for i := range nodes {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "tools.json"), []byte(tools), 0o600)
		os.WriteFile(filepath.Join(d, "policies.json"), pol, 0o600)
		nodes[i] = startGateway(t, d, "--cluster-redis", redisURL, "--access-log=false")
		b, _ := os.ReadFile(filepath.Join(d, "gateway.log"))
		if !strings.Contains(string(b), "cluster mode") {
			t.Fatalf("node %d log: no \"cluster mode\" line:\n%s", i, b)
		}
		if strings.Contains(string(b), password) {
			t.Fatalf("node %d log shows the Redis password:\n%s", i, b)
		}
	}
	call := func(p *proc, tool, key string) int {
		code, _ := p.req("POST", "/tools/"+tool, `{}`, "X-API-Key", key, "Content-Type", "application/json")
		return code
	}
	var withinD func(t *testing.T, d time.Duration, from int, what string, cond func(p *proc) bool)
	// within waits until cond holds on every node but from, at most 1 s
	// after the change (the bound).
	within := func(t *testing.T, from int, what string, cond func(p *proc) bool) {
		t.Helper()
		withinD(t, time.Second, from, what, cond)
	}
	withinD = func(t *testing.T, d time.Duration, from int, what string, cond func(p *proc) bool) {
		t.Helper()
		start := time.Now()
		for i, p := range nodes {
			if i == from {
				continue
			}
			for !cond(p) {
				if time.Since(start) > d {
					t.Fatalf("node %d: %s not within %v of the change on node %d", i, what, d, from)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		t.Logf("%s: on every node after %v", what, time.Since(start).Round(time.Millisecond))
	}

	outer := t // for what must outlive a subtest
	var revokedKey string
	t.Run("Propagation", func(t *testing.T) {
		key, id := nodes[0].createKey(`{"name":"moving","policy":{"deny_tools":["free"]}}`)
		within(t, 0, "key and its policy", func(p *proc) bool { return call(p, "free", key) == 403 })
		if code, b := nodes[2].admin("PUT", "/credits/keys/"+id+"/policy", `{"allow_tools":["free"]}`); code != 200 {
			t.Fatalf("PUT policy on node 2: got %d %s", code, b)
		}
		within(t, 2, "policy put", func(p *proc) bool { return call(p, "free", key) == 200 })
		if code, b := nodes[1].admin("DELETE", "/credits/keys/"+id, ""); code != 200 {
			t.Fatalf("revoke on node 1: got %d %s", code, b)
		}
		if code := call(nodes[1], "free", key); code != 401 {
			t.Fatalf("revoking node: got %d, want 401 at once", code)
		}
		within(t, 1, "revocation", func(p *proc) bool { return call(p, "free", key) == 401 })
		revokedKey = key
	})
	t.Run("SharedSessions", func(t *testing.T) {
		// Signed in on node 0, the dashboard keeps working whichever node
		// the load balancer picks; signed out on node 2, it is out on all.
		req, _ := http.NewRequest("POST", nodes[0].url+"/ui/session", strings.NewReader(`{"token":"`+testAdmin+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			CSRF string `json:"csrf_token"`
		}
		json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		var cookie string
		for _, c := range resp.Cookies() {
			if c.Name == "toolgate_session" {
				cookie = c.Name + "=" + c.Value
			}
		}
		if resp.StatusCode != 200 || cookie == "" || v.CSRF == "" {
			t.Fatalf("sign in on node 0: got %d, cookie %q", resp.StatusCode, cookie)
		}
		for i, p := range nodes {
			if code, b := p.req("GET", "/ui/session", "", "Cookie", cookie); code != 200 || !strings.Contains(string(b), v.CSRF) {
				t.Fatalf("node %d: GET /ui/session with node 0's cookie: got %d %s, want 200 and its CSRF token", i, code, b)
			}
		}
		if code, b := nodes[1].req("POST", "/credits/keys", `{"name":"by-session"}`, "Cookie", cookie, "X-CSRF-Token", v.CSRF, "Content-Type", "application/json"); code != 201 {
			t.Fatalf("node 1: create a key with node 0's session: got %d %s, want 201", code, b)
		}
		if code, b := nodes[2].req("DELETE", "/ui/session", "", "Cookie", cookie, "X-CSRF-Token", v.CSRF); code != 200 {
			t.Fatalf("node 2: sign out: got %d %s", code, b)
		}
		for i, p := range nodes {
			if code, _ := p.req("GET", "/credits/keys", "", "Cookie", cookie); code != 401 {
				t.Fatalf("node %d after sign-out on node 2: got %d, want 401", i, code)
			}
		}

		// An MCP session of a stateful revision, likewise.
		key, _ := nodes[0].createKey(`{"name":"mcp-agent"}`)
		within(t, 0, "the MCP agent's key", func(p *proc) bool { return call(p, "free", key) == 200 })
		mcpHdr := []string{"X-API-Key", key, "Content-Type", "application/json", "Accept", "application/json, text/event-stream"}
		req, _ = http.NewRequest("POST", nodes[0].url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
		for i := 0; i < len(mcpHdr); i += 2 {
			req.Header.Set(mcpHdr[i], mcpHdr[i+1])
		}
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		sid := resp.Header.Get("Mcp-Session-Id")
		if resp.StatusCode != 200 || sid == "" {
			t.Fatalf("MCP initialize on node 0: got %d, session %q", resp.StatusCode, sid)
		}
		for i, p := range nodes {
			if code, b := p.req("POST", "/mcp", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, append(mcpHdr, "Mcp-Session-Id", sid, "MCP-Protocol-Version", "2025-11-25")...); code != 200 {
				t.Fatalf("node %d: tools/list in node 0's MCP session: got %d %s, want 200", i, code, b)
			}
		}
	})
	t.Run("Credits", func(t *testing.T) {
		key, id := nodes[0].createKey(`{"name":"prepaid","credits_usd":"0.02","policy":{"rate_class_quota":{"light":1000}}}`)
		within(t, 0, "prepaid key", func(p *proc) bool { return call(p, "free", key) == 200 })
		got := []int{call(nodes[1], "paid", key), call(nodes[2], "paid", key), call(nodes[0], "paid", key)}
		if got[0] != 200 || got[1] != 200 || got[2] != 402 {
			t.Fatalf("three $0.01 calls on $0.02 of credits: got %v, want 200 200 402", got)
		}
		if code, b := nodes[2].admin("POST", "/credits/keys/"+id+"/credits", `{"amount_usd":"0.01"}`); code != 200 {
			t.Fatalf("top up on node 2: got %d %s", code, b)
		}
		if code := call(nodes[1], "paid", key); code != 200 {
			t.Fatalf("after a top-up on another node: got %d, want 200", code)
		}
		for i, p := range nodes {
			_, b := p.admin("GET", "/credits/keys/"+id, "")
			if got := jsonField(t, b, "balance_usd"); got != 0.0 {
				t.Fatalf("node %d balance: got %v, want 0 (never negative, the cluster's)", i, got)
			}
		}
		paidHits.Store(0)
	})

	heavyKey, heavyID := nodes[0].createKey(`{"name":"heavy","policy":{"rate_class_quota":{"heavy":5}}}`)
	capKey, capID := nodes[1].createKey(`{"name":"capped","policy":{"daily_spend_cap_usd":"0.05","rate_class_quota":{"light":1000}}}`)
	for _, id := range []string{heavyID, capID} {
		within(t, -1, "key "+id, func(p *proc) bool {
			_, b := p.admin("GET", "/credits/keys/"+id+"/policy", "")
			return strings.Contains(string(b), `"override":{`) // its policy is in force
		})
	}

	// race sends n calls of tool with key, concurrently, round-robin over
	// the nodes, and counts the answers by status.
	race := func(t *testing.T, n int, tool, key string) map[int]int {
		t.Helper()
		var mu sync.Mutex
		got := map[int]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				p := nodes[i%3]
				req, _ := http.NewRequest("POST", p.url+"/tools/"+tool, strings.NewReader(`{}`))
				req.Header.Set("X-API-Key", key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				code := 0
				if err == nil {
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				got[code]++
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		return got
	}

	t.Run("HeavyQuota", func(t *testing.T) {
		got := race(t, 200, "heavy", heavyKey)
		if got[200] != 5 || got[403] != 195 {
			t.Fatalf("answers: got %v, want 5 × 200 and 195 × 403", got)
		}
		if n := heavyHits.Load(); n != 5 {
			t.Fatalf("upstream calls: got %d, want 5", n)
		}
		// Every node's status shows the cluster's recent denials: after one
		// more refused call on each node, the status on every node lists
		// all three among its newest ten. Denials reach the shared list off
		// the callers' path, each node's in order, so a node still flushing
		// the race's denials can push a newer one out of the newest ten; a
		// round whose three denials do not all show within 1 s is repeated.
		deadline := time.Now().Add(15 * time.Second)
		for round := 1; ; round++ {
			since := time.Now()
			for _, p := range nodes {
				if code := call(p, "heavy", heavyKey); code != 403 {
					t.Fatalf("over the quota: got %d, want 403", code)
				}
			}
			shown := func(p *proc) bool {
				_, b := p.admin("GET", "/authorization/status?key_id="+heavyID, "")
				var st struct {
					Scope   string `json:"recent_denials_scope"`
					Denials []struct {
						At     time.Time `json:"at"`
						Node   string    `json:"node"`
						Reason string    `json:"reason"`
					} `json:"recent_denials"`
				}
				json.Unmarshal(b, &st)
				nodesSeen := map[string]bool{}
				for _, d := range st.Denials {
					if !d.At.Before(since) && d.Reason == "rate_class_quota" {
						nodesSeen[d.Node] = true
					}
				}
				return st.Scope == "cluster" && len(st.Denials) == 10 && len(nodesSeen) == 3
			}
			all := true
			for _, p := range nodes {
				for until := time.Now().Add(time.Second); !shown(p); time.Sleep(5 * time.Millisecond) {
					if time.Now().After(until) {
						all = false
						break
					}
				}
			}
			if all {
				t.Logf("recent denials from every node on every node (round %d)", round)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("recent denials: no round of three refused calls showed all three nodes on every node within 15 s")
			}
		}
	})
	t.Run("SpendCap", func(t *testing.T) {
		got := race(t, 200, "paid", capKey)
		if got[200] != 5 || got[429] != 195 {
			t.Fatalf("answers: got %v, want 5 × 200 and 195 × 429", got)
		}
		if n := paidHits.Load(); n != 5 {
			t.Fatalf("upstream calls: got %d, want 5", n)
		}
		// Each node's ledger holds what it billed; together, the cap.
		billed, total := billedIn(t, nodes, capID)
		if total != 50_000 || billed != 5 {
			t.Fatalf("ledgers: got %d billed calls summing to %d micro-USD, want 5 summing to 50000", billed, total)
		}
		// Every node reports the cluster's spend.
		for i, p := range nodes {
			code, b := p.admin("GET", "/authorization/status?key_id="+capID, "")
			if code != 200 {
				t.Fatalf("node %d status: got %d %s", i, code, b)
			}
			if got := jsonField(t, b, "spend_today_usd"); got != 0.05 {
				t.Errorf("node %d status: spend_today_usd got %v, want 0.05 (the cluster's)", i, got)
			}
			if got := jsonField(t, b, "quota_window", "light", "used"); got != 5.0 {
				t.Errorf("node %d status: light used got %v, want 5 (the cluster's)", i, got)
			}
		}
	})

	t.Run("RedisLosesData", func(t *testing.T) {
		// The Propagation key is revoked; the heavy key lives; the capped
		// key spent its whole cap. FLUSHALL: the nodes put back the keys
		// and their own spend contributions.
		if _, err := rs.Do("FLUSHALL"); err != nil {
			t.Fatal(err)
		}
		// A node notices at its next heartbeat (1 s).
		defer func() {
			if t.Failed() {
				for _, p := range nodes {
					b, _ := os.ReadFile(p.log.Name())
					t.Logf("%s:\n%s", p.log.Name(), grepLines(string(b), "cluster"))
				}
			}
		}()
		withinD(t, 3*time.Second, -1, "spend re-seeded from the ledgers", func(p *proc) bool {
			_, b := p.admin("GET", "/authorization/status?key_id="+capID, "")
			return jsonField(t, b, "spend_today_usd") == 0.05
		})
		// Every node noticed (one may have had nothing to put back).
		withinD(t, 3*time.Second, -1, "restore logged", func(p *proc) bool {
			b, _ := os.ReadFile(p.log.Name())
			return strings.Contains(string(b), "spend contribution restored")
		})
		paidHits.Store(0)
		got := race(t, 60, "paid", capKey)
		if got[429] != 60 || paidHits.Load() != 0 {
			t.Fatalf("after FLUSHALL: got %v and %d upstream calls, want 60 × 429 and none (the cap is spent)", got, paidHits.Load())
		}
		for i, p := range nodes {
			if code := call(p, "free", heavyKey); code != 200 {
				t.Fatalf("node %d: heavy key after FLUSHALL got %d, want 200 (no key lost)", i, code)
			}
			if code := call(p, "free", revokedKey); code != 401 {
				t.Fatalf("node %d: revoked key after FLUSHALL got %d, want 401 (never revived)", i, code)
			}
		}
		if n, err := rs.Do("HLEN", "tg:{state}:keys"); err != nil || n == "0" {
			t.Fatalf("keys in Redis after the nodes restored them: got %s, %v", n, err)
		}
	})
	t.Run("RedisDown", func(t *testing.T) {
		openKey, _ := nodes[0].createKey(`{"name":"open","policy":{"rate_class_quota":{"light":6}}}`)
		strictKey, _ := nodes[0].createKey(`{"name":"strict","policy":{"mode":"strict","allow_tools":["free","paid"]}}`)
		// Both policies are in force on every node once the strict one
		// denies a tool outside its allow list (the open key's policy
		// was put before it).
		within(t, 0, "keys and policies", func(p *proc) bool { return call(p, "heavy", strictKey) == 403 })
		// Every node counts three live nodes (its share is a third).
		within(t, -1, "three live nodes", func(p *proc) bool {
			_, b := p.req("GET", "/readyz", "")
			return jsonField(t, b, "cluster", "live_nodes") == 3.0
		})
		// An open principal with a cap of 300 calls spends 30 before the
		// outage: each node then holds a slice of the rest in Redis (a
		// quarter of it divided by the three live nodes, grown from one
		// call by doubling).
		shareKey, shareID := nodes[0].createKey(`{"name":"share","policy":{"daily_spend_cap_usd":"3.00","rate_class_quota":{"light":1000}}}`)
		within(t, -1, "share key", func(p *proc) bool { return call(p, "free", shareKey) == 200 })
		for i := range 30 {
			if code := call(nodes[i%3], "paid", shareKey); code != 200 {
				t.Fatalf("share key before the outage: got %d, want 200", code)
			}
		}
		rs.Pause()
		paused := true
		defer func() {
			if paused {
				rs.Resume()
			}
		}()
		// Open: each of the three nodes admits its share, 6 / 3 = 2.
		got := race(t, 30, "free", openKey)
		if got[200] != 6 || got[403] != 24 {
			t.Fatalf("open principal, redis down: got %v, want 6 × 200 (2 per node) and 24 × 403", got)
		}
		// Its priced calls are served from the nodes' local shares of the
		// remaining budget, and no further: never past the cap.
		got = race(t, 60, "paid", shareKey)
		t.Logf("open principal's priced calls, redis down: %v", got)
		if got[200] == 0 || got[200]+got[503] != 60 {
			t.Fatalf("open principal's priced calls, redis down: got %v, want some 200 (the nodes' unused slices) and the rest 503", got)
		}
		servedDown := got[200]
		for i, p := range nodes {
			code, b := p.req("POST", "/tools/free", `{}`, "X-API-Key", strictKey, "Content-Type", "application/json")
			if code != 503 || !strings.Contains(string(b), "shared state unavailable; nothing was charged") {
				t.Fatalf("node %d strict principal, redis down: got %d %s, want 503", i, code, b)
			}
			if code := call(p, "paid", heavyKey); code != 503 {
				t.Fatalf("node %d priced call, redis down: got %d, want 503", i, code)
			}
		}
		rs.Resume()
		paused = false
		start := time.Now()
		for _, p := range nodes {
			for call(p, "free", strictKey) != 200 {
				if time.Since(start) > 10*time.Second {
					t.Fatal("nodes did not rejoin within 10 s of Redis answering")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		t.Logf("rejoined after %v", time.Since(start).Round(time.Millisecond))
		// Every call served from a local share is billed once in the
		// cluster's committed spend after the nodes rejoin (each re-sets
		// its contribution from its ledger): none lost, none twice. What
		// stays reserved is what commits Redis never confirmed still hold
		// until their TTL (stricter, never looser).
		if n, total := billedIn(t, nodes, shareID); n != 30+servedDown || total != int64(n)*10_000 {
			t.Fatalf("ledgers: got %d billed calls summing to %d micro-USD, want %d (30 before the outage, %d during it)", n, total, 30+servedDown, servedDown)
		}
		want := int64(30+servedDown) * 10_000
		withinD(t, 5*time.Second, -1, "local-share calls committed once", func(p *proc) bool {
			_, b := p.admin("GET", "/authorization/status?key_id="+shareID, "")
			today, _ := jsonField(t, b, "spend_today_usd").(float64)
			reserved, _ := jsonField(t, b, "spend_reserved_usd").(float64)
			return int64(math.Round((today-reserved)*1e6)) == want
		})
	})
	t.Run("ConfigMismatch", func(t *testing.T) {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "tools.json"), []byte(strings.Replace(tools, `"heavy","rate_class"`, `"heavy","price_usd":"0.02","rate_class"`, 1)), 0o600)
		os.WriteFile(filepath.Join(d, "policies.json"), pol, 0o600)
		odd := startGateway(t, d, "--cluster-redis", redisURL, "--access-log=false", "--node-id", "odd-node")
		within(t, -1, "mismatch reported", func(p *proc) bool {
			_, b := p.req("GET", "/readyz", "")
			mm, _ := jsonField(t, b, "cluster").(map[string]any)["config_mismatch"].([]any)
			if p == odd {
				return len(mm) == 3
			}
			return len(mm) == 1 && strings.HasPrefix(mm[0].(string), "odd-node=")
		})
		_, b := nodes[0].req("GET", "/readyz", "")
		if code, _ := nodes[0].req("GET", "/readyz", ""); code != 200 {
			t.Fatalf("readyz with a mismatch: got %d %s, want 200 (reported, still serving)", code, b)
		}
		_, m := nodes[0].admin("GET", "/metrics", "")
		if !strings.Contains(string(m), "toolgate_cluster_config_mismatch 1") || !strings.Contains(string(m), "toolgate_cluster_live_nodes 4") {
			t.Fatalf("metrics: no toolgate_cluster_config_mismatch 1 / live_nodes 4 in\n%s", grepLines(string(m), "toolgate_cluster"))
		}
		logb, _ := os.ReadFile(filepath.Join(d, "gateway.log"))
		if !strings.Contains(string(logb), "nodes serve another configuration") {
			t.Fatalf("odd node log: no mismatch line:\n%s", logb)
		}
		odd.stop(syscall.SIGTERM)
		within(t, -1, "mismatch gone once the odd node left", func(p *proc) bool {
			if p == odd {
				return true
			}
			_, b := p.req("GET", "/readyz", "")
			_, has := jsonField(t, b, "cluster").(map[string]any)["config_mismatch"]
			return !has
		})
	})
	t.Run("KillNodeUnderLoad", func(t *testing.T) {
		// A fresh key with a cap of 10 calls; calls round-robin over the
		// three nodes until the cap answers everywhere; node 2 is killed
		// with SIGKILL part-way.
		key, id := nodes[0].createKey(`{"name":"killed","policy":{"daily_spend_cap_usd":"0.10","rate_class_quota":{"light":100000}}}`)
		within(t, 0, "key", func(p *proc) bool {
			_, b := p.admin("GET", "/credits/keys/"+id+"/policy", "")
			return strings.Contains(string(b), `"override":{`)
		})
		var ok [3]atomic.Int64
		var stop atomic.Bool
		var wg sync.WaitGroup
		client := &http.Client{Timeout: 5 * time.Second}
		for w := range 6 {
			wg.Go(func() {
				for i := w; !stop.Load(); i++ {
					n := i % 3
					req, _ := http.NewRequest("POST", nodes[n].url+"/tools/paid", strings.NewReader(`{}`))
					req.Header.Set("X-API-Key", key)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					resp.Body.Close()
					if resp.StatusCode == 200 {
						ok[n].Add(1)
					}
				}
			})
		}
		for ok[2].Load() == 0 && ok[0].Load()+ok[1].Load() < 8 {
			time.Sleep(time.Millisecond)
		}
		nodes[2].cmd.Process.Kill()
		nodes[2].cmd.Wait()
		answered2 := ok[2].Load()
		// The survivors go on until the cap refuses everything.
		deadline := time.Now().Add(10 * time.Second)
		for call(nodes[0], "paid", key) != 429 || call(nodes[1], "paid", key) != 429 {
			if time.Now().After(deadline) {
				t.Fatal("the cap did not close on the surviving nodes")
			}
			time.Sleep(5 * time.Millisecond)
		}
		stop.Store(true)
		wg.Wait()
		nodes[2] = restart(outer, nodes[2])
		billed := make([]int, 3)
		for i, p := range nodes {
			billed[i], _ = billedOn(t, i, p, id)
		}
		total := billed[0] + billed[1] + billed[2]
		t.Logf("answered 200: %d %d %d (node 2 before its kill: %d); billed in the ledgers: %v", ok[0].Load(), ok[1].Load(), ok[2].Load(), answered2, billed)
		if int64(billed[2]) < answered2 {
			t.Fatalf("node 2 answered %d calls but its ledger bills %d", answered2, billed[2])
		}
		if total > 10 {
			t.Fatalf("billed %d calls under a 10-call cap", total)
		}
		if int64(billed[0]) < ok[0].Load() || int64(billed[1]) < ok[1].Load() {
			t.Fatalf("survivors: answered %d/%d, billed %d/%d", ok[0].Load(), ok[1].Load(), billed[0], billed[1])
		}
		// Redis's committed figure is the ledgers' sum once node 2 has
		// put its contribution back.
		// (A call node 2 had in flight when it died still holds its
		// reservation until the reservation TTL gives it back.)
		_, b := nodes[0].admin("GET", "/authorization/status?key_id="+id, "")
		today, held := jsonField(t, b, "spend_today_usd").(float64), jsonField(t, b, "spend_reserved_usd").(float64)
		if committed := math.Round((today-held)*100) / 100; committed != float64(total)/100 || today > 0.10 {
			t.Fatalf("cluster spend after the restart: got %v committed (+%v held), want %v (the ledgers' sum), within the cap", committed, held, float64(total)/100)
		}
		t.Logf("held by node 2's dead reservations: %v", held)
	})
	t.Run("AuditExportsPerNode", func(t *testing.T) {
		// Every record names its node in its hashed bytes; the three
		// nodes' exports verify at once, each on its own chain and key.
		dir := t.TempDir()
		var args []string
		var ids, keys, files []string
		since := url.QueryEscape(time.Now().Add(-time.Hour).Format(time.RFC3339))
		for i, p := range nodes {
			_, b := p.req("GET", "/readyz", "")
			id := jsonField(t, b, "cluster", "node").(string)
			code, exp := p.admin("GET", "/audit/export?since="+since, "")
			if code != 200 || len(exp) == 0 {
				t.Fatalf("node %d export: %d %s", i, code, exp)
			}
			records := 0
			for _, l := range bytes.Split(bytes.TrimSpace(exp), []byte("\n")) {
				if !bytes.HasPrefix(l, []byte(`{"seq":`)) {
					continue
				}
				records++
				if !bytes.Contains(l, []byte(`"node":"`+id+`"`)) {
					t.Fatalf("node %d (%s): exported record names another node or none: %s", i, id, l)
				}
			}
			_, kb := p.admin("GET", "/audit/pubkey", "")
			key := jsonField(t, kb, "public_key").(string)
			f := filepath.Join(dir, fmt.Sprintf("node%d.ndjson", i))
			if err := os.WriteFile(f, exp, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Logf("node %d (%s): %d records exported", i, id, records)
			ids, keys, files = append(ids, id), append(keys, key), append(files, f)
		}
		verify := func(keys []string) (map[string]any, error) {
			args = []string{"audit", "verify"}
			for i := range files {
				args = append(args, "--file", files[i], "--pubkey", keys[i])
			}
			out, err := exec.Command(binPath, args...).Output()
			var v map[string]any
			if jerr := json.Unmarshal(out, &v); jerr != nil {
				t.Fatalf("audit verify of three exports: %s (%v, %v)", out, err, jerr)
			}
			return v, err
		}
		v, err := verify(keys)
		if err != nil || v["ok"] != true {
			t.Fatalf("three exports: got %v, %v, want ok", v, err)
		}
		for _, id := range ids {
			if rep, _ := v["nodes"].(map[string]any)[id].(map[string]any); rep == nil || rep["ok"] != true {
				t.Fatalf("node %s: got %v, want its own ok report", id, v["nodes"])
			}
		}
		// Node 0's export checked with node 1's key fails, and says so
		// for those two nodes only.
		v, err = verify([]string{keys[1], keys[0], keys[2]})
		nr := v["nodes"].(map[string]any)
		if err == nil || v["ok"] != false || nr[ids[0]].(map[string]any)["ok"] != false || nr[ids[2]].(map[string]any)["ok"] != true {
			t.Fatalf("swapped keys: got %v, %v, want nodes 0 and 1 failed, node 2 ok", v, err)
		}
	})
	t.Run("StatsFanOut", func(t *testing.T) {
		// The dashboard's figures are the cluster's: /stats on any node
		// sums every node's counts, also when asked with a session cookie
		// (the fan-out passes it on; sessions are shared).
		type stats struct {
			Totals struct {
				Calls    int64           `json:"calls"`
				Denied   int64           `json:"denied"`
				SpendUSD json.RawMessage `json:"spend_usd"`
			} `json:"totals"`
			Tools []struct {
				Tool  string `json:"tool"`
				Calls int64  `json:"calls"`
			} `json:"tools"`
			Top struct {
				BySpend   []principalCalls `json:"by_spend"`
				ByDenials []principalCalls `json:"by_denials"`
			} `json:"top_principals"`
			Nodes       map[string]any    `json:"nodes"`
			Unreachable map[string]string `json:"unreachable"`
		}
		get := func(p *proc, hdr ...string) stats {
			code, b := p.req("GET", "/stats?since=1h&top=1000", "", hdr...)
			if code != 200 {
				t.Fatalf("/stats: got %d %s", code, b)
			}
			var s stats
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		bearer := []string{"Authorization", "Bearer " + testAdmin}
		var calls, denied int64
		tools, capCalls := map[string]int64{}, int64(0)
		for _, p := range nodes {
			s := get(p, append(bearer, "X-Toolgate-Fanout", "1")...)
			if len(s.Nodes) != 0 {
				t.Fatalf("a peer's request answered for the cluster: nodes %v", s.Nodes)
			}
			calls, denied = calls+s.Totals.Calls, denied+s.Totals.Denied
			for _, ts := range s.Tools {
				tools[ts.Tool] += ts.Calls
			}
			// A node where the key only spent, or was only refused, lists
			// it in one of the two lists; in both, with the same counts.
			for _, ps := range append(s.Top.BySpend, s.Top.ByDenials...) {
				if ps.Principal == "key:"+capID {
					capCalls += ps.Calls
					break
				}
			}
		}
		if calls == 0 || capCalls == 0 {
			t.Fatalf("no calls counted on the nodes (calls %d, the capped key's %d)", calls, capCalls)
		}
		// Signed in on node 2, read on node 0.
		req, _ := http.NewRequest("POST", nodes[2].url+"/ui/session", strings.NewReader(`{"token":"`+testAdmin+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var cookie string
		for _, c := range resp.Cookies() {
			cookie = c.Name + "=" + c.Value
		}
		for name, hdr := range map[string][]string{"bearer": bearer, "cookie": {"Cookie", cookie}} {
			s := get(nodes[0], hdr...)
			if len(s.Nodes) != 3 || len(s.Unreachable) != 0 {
				t.Fatalf("%s: cluster /stats: nodes %v unreachable %v, want three nodes answering", name, s.Nodes, s.Unreachable)
			}
			if s.Totals.Calls != calls || s.Totals.Denied != denied {
				t.Fatalf("%s: cluster /stats totals %d calls, %d denied; the nodes' sum is %d, %d", name, s.Totals.Calls, s.Totals.Denied, calls, denied)
			}
			for _, ts := range s.Tools {
				if ts.Calls != tools[ts.Tool] {
					t.Fatalf("%s: tool %s: %d calls, the nodes' sum is %d", name, ts.Tool, ts.Calls, tools[ts.Tool])
				}
			}
			found := false
			for _, ps := range s.Top.BySpend {
				if ps.Principal == "key:"+capID {
					found = ps.Calls == capCalls
				}
			}
			if !found {
				t.Fatalf("%s: the capped key is not in the merged top list with its %d calls: %+v", name, capCalls, s.Top.BySpend)
			}
		}
		if code, b := nodes[0].req("GET", "/audit?type=call&limit=5", "", "Cookie", cookie); code != 200 || bytes.Contains(b, []byte(`"unreachable"`)) {
			t.Fatalf("cluster /audit with a session cookie: got %d %s, want every node answering", code, b)
		}
	})
	t.Run("AuditFanOut", func(t *testing.T) {
		ids := make([]string, 3)
		for i, p := range nodes {
			_, b := p.req("GET", "/readyz", "")
			ids[i] = jsonField(t, b, "cluster", "node").(string)
		}
		local := 0
		for _, p := range nodes {
			code, b := p.req("GET", "/audit?type=call&principal=key:"+capID, "", "Authorization", "Bearer "+testAdmin, "X-Toolgate-Fanout", "1")
			if code != 200 {
				t.Fatalf("local /audit: %d %s", code, b)
			}
			local += bytes.Count(b, []byte("\n"))
		}
		code, b := nodes[0].admin("GET", "/audit?type=call&principal=key:"+capID, "")
		if code != 200 {
			t.Fatalf("/audit: %d %s", code, b)
		}
		var last time.Time
		seen := map[string]int{}
		n := 0
		for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var r struct {
				Node string    `json:"node"`
				At   time.Time `json:"at"`
			}
			if err := json.Unmarshal(l, &r); err != nil || r.Node == "" {
				t.Fatalf("merged record %s: no node (%v)", l, err)
			}
			if r.At.Before(last) {
				t.Fatalf("merged records out of time order at %s", l)
			}
			last = r.At
			seen[r.Node]++
			n++
		}
		if n != local || len(seen) != 3 {
			t.Fatalf("cluster /audit: got %d records from %v, want the nodes' %d from all three (ids %v, asked %q)", n, seen, local, ids, hdrOf(nodes[0], "/audit?type=call&principal=key:"+capID, "X-Cluster-Nodes"))
		}
		code, b = nodes[1].admin("GET", "/audit/verify", "")
		if code != 200 || jsonField(t, b, "ok") != true || len(jsonField(t, b, "nodes").(map[string]any)) != 3 {
			t.Fatalf("cluster /audit/verify: got %d %s, want ok for three nodes", code, b)
		}
		// Each node published its checkpoint key and chain head: the key is
		// the one the node serves, the head at most its served head.
		published := jsonField(t, b, "published").(map[string]any)
		for i, p := range nodes {
			pub, ok := published[ids[i]].(map[string]any)
			if !ok {
				t.Fatalf("cluster /audit/verify: node %s not in published %v", ids[i], published)
			}
			_, kb := p.admin("GET", "/audit/pubkey", "")
			if want := jsonField(t, kb, "public_key"); pub["public_key"] != want {
				t.Fatalf("node %d published key %v, serves %v", i, pub["public_key"], want)
			}
			if seq, _ := pub["head_seq"].(float64); seq < 1 || len(pub["head_hash"].(string)) != 64 {
				t.Fatalf("node %d published head %v, want a chain head", i, pub)
			}
		}
		// A node that does not answer is named, never skipped silently.
		nodes[2].cmd.Process.Signal(syscall.SIGSTOP)
		defer nodes[2].cmd.Process.Signal(syscall.SIGCONT)
		quick := &http.Client{Timeout: 200 * time.Millisecond}
		for {
			resp, err := quick.Get(nodes[2].url + "/healthz")
			if err != nil {
				break // stopped
			}
			resp.Body.Close()
		}
		req, _ := http.NewRequest("GET", nodes[0].url+"/audit?type=call&principal=key:"+capID, nil)
		req.Header.Set("Authorization", "Bearer "+testAdmin)
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		t.Logf("fan-out with a stopped node: %v, nodes %s", time.Since(t0), resp.Header.Get("X-Cluster-Nodes"))
		resp.Body.Close()
		if got := resp.Header.Get("X-Cluster-Unreachable"); got != ids[2] || !bytes.Contains(body, []byte(`"type":"unreachable","node":"`+ids[2]+`"`)) &&
			!bytes.Contains(body, []byte(`"node":"`+ids[2]+`","type":"unreachable"`)) {
			t.Fatalf("with node 2 stopped: X-Cluster-Unreachable %q, body tail %s; want node %s named", got, body[max(0, len(body)-300):], ids[2])
		}
		code, b = nodes[0].admin("GET", "/audit/verify", "")
		if code != 200 || jsonField(t, b, "ok") != false || jsonField(t, b, "unreachable", ids[2]) == nil {
			t.Fatalf("verify with node 2 stopped: got %d %s, want ok false naming it", code, b)
		}
		code, b = nodes[0].admin("GET", "/stats?since=1h", "")
		if code != 200 || jsonField(t, b, "unreachable", ids[2]) == nil || len(jsonField(t, b, "nodes").(map[string]any)) != 2 {
			t.Fatalf("stats with node 2 stopped: got %d %s, want two nodes summed and node 2 named", code, b)
		}
	})
	// Last: it throttles this test's address for the rest of the minute.
	t.Run("SignInThrottle", func(t *testing.T) {
		// Wrong tokens sent to any node count on all: 10 spread over the
		// three nodes (no node sees more than 4) and then every node
		// refuses the next sign-in from this address, even with the
		// right token. Counted per clock minute: a run that crosses one
		// is done again.
		signIn := func(p *proc, token string) int {
			code, _ := p.req("POST", "/ui/session", `{"token":"`+token+`"}`, "Content-Type", "application/json")
			return code
		}
		for try := 0; ; try++ {
			minute := time.Now().Unix() / 60
			for i := range 10 {
				if code := signIn(nodes[i%3], "wrong-token-"+strconv.Itoa(i)); code != 401 && !(code == 429 && try > 0) {
					t.Fatalf("wrong token %d on node %d: got %d, want 401", i, i%3, code)
				}
			}
			codes := make([]int, 3)
			for i, p := range nodes {
				codes[i] = signIn(p, testAdmin)
			}
			if time.Now().Unix()/60 != minute && try == 0 {
				continue
			}
			for i, code := range codes {
				if code != 429 {
					t.Fatalf("node %d after 10 wrong tokens over the cluster: the right token got %d, want 429", i, code)
				}
			}
			return
		}
	})
}

type principalCalls struct {
	Principal string `json:"principal"`
	Calls     int64  `json:"calls"`
}

// restart runs a stopped node again with its arguments (same port, data
// dir and flags) and waits until it is healthy.
func restart(t *testing.T, p *proc) *proc {
	t.Helper()
	np := relaunch(t, p)
	np.waitHealthy(http.Get, p.url+"/healthz")
	return np
}

func hdrOf(p *proc, path, name string) string {
	req, _ := http.NewRequest("GET", p.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return resp.Header.Get(name)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// billedIn sums the calls billed to key id in every node's own ledger.
func billedIn(t *testing.T, nodes []*proc, id string) (billed int, total int64) {
	t.Helper()
	for i, p := range nodes {
		n, sum := billedOn(t, i, p, id)
		billed, total = billed+n, total+sum
	}
	return billed, total
}

// billedOn counts the calls billed to key id in node i's own ledger, and
// their sum.
func billedOn(t *testing.T, i int, p *proc, id string) (billed int, total int64) {
	t.Helper()
	code, b := p.req("GET", "/audit?type=call&principal=key:"+id, "", "Authorization", "Bearer "+testAdmin, "X-Toolgate-Fanout", "1") // this node's own
	if code != 200 {
		t.Fatalf("node %d /audit: got %d %s", i, code, b)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r struct {
			Cost int64 `json:"cost_micros"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("node %d record %s: %v", i, sc.Bytes(), err)
		}
		total += r.Cost
		if r.Cost > 0 {
			billed++
		}
	}
	return billed, total
}
