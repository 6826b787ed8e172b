package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/toolgate/toolgate/cluster/redistest"
)

// TestCluster_ThreeNodes runs one real redis-server and three real
// toolgate processes in cluster mode on one loopback upstream, with the
// same API keys on every node, and spreads concurrent calls round-robin
// over the nodes: the quota window and the daily cap hold cluster-wide.
//
// Keys stay local to each node in this version of cluster mode, so the
// keys are made once on a first node, which is stopped, and its data dir
// is copied to the other two before any of them starts (every node then
// also starts from the same ledger history, which holds no calls).
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
 {"id":"paid","rate_class":"light","price_usd":"0.01","upstream":"` + up.URL + `/paid"}]}`
	pol, err := os.ReadFile("../../policies.json")
	if err != nil {
		t.Fatal(err)
	}
	dirs := make([]string, 3)
	for i := range dirs {
		dirs[i] = t.TempDir()
		os.WriteFile(filepath.Join(dirs[i], "tools.json"), []byte(tools), 0o600)
		os.WriteFile(filepath.Join(dirs[i], "policies.json"), pol, 0o600)
	}

	first := startGateway(t, dirs[0])
	heavyKey, _ := first.createKey(`{"name":"heavy","policy":{"rate_class_quota":{"heavy":5}}}`)
	capKey, capID := first.createKey(`{"name":"capped","policy":{"daily_spend_cap_usd":"0.05","rate_class_quota":{"light":1000}}}`)
	first.stop(syscall.SIGTERM)
	for _, d := range dirs[1:] {
		if out, err := exec.Command("cp", "-a", filepath.Join(dirs[0], "data"), filepath.Join(d, "data")).CombinedOutput(); err != nil {
			t.Fatalf("copy data dir: %v %s", err, out)
		}
	}

	nodes := make([]*proc, 3)
	for i, d := range dirs {
		nodes[i] = startGateway(t, d, "--cluster-redis", redisURL, "--access-log=false")
	}
	for i, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "gateway.log"))
		if !strings.Contains(string(b), "cluster mode") {
			t.Fatalf("node %d log: no \"cluster mode\" line:\n%s", i, b)
		}
		if strings.Contains(string(b), password) {
			t.Fatalf("node %d log shows the Redis password:\n%s", i, b)
		}
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
		var total int64
		var billed int
		for i, p := range nodes {
			code, b := p.admin("GET", "/audit?type=call&principal=key:"+capID, "")
			if code != 200 {
				t.Fatalf("node %d /audit: got %d %s", i, code, b)
			}
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				var r struct {
					Cost    int64  `json:"cost_micros"`
					Outcome string `json:"outcome"`
				}
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatalf("node %d record %s: %v", i, sc.Bytes(), err)
				}
				total += r.Cost
				if r.Cost > 0 {
					billed++
				}
			}
		}
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
}
