package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster/redistest"
)

// TestCluster_Approvals runs one real redis-server and two real toolgate
// processes in cluster mode. A call held on node A (its caller waiting
// with Prefer: wait) is listed on node B; approved on both nodes at once,
// one decision wins, the call reaches the upstream once, the waiting
// caller on A gets its answer, and both nodes return the same result
// from GET /approvals/{id}.
func TestCluster_Approvals(t *testing.T) {
	rs := redistest.Start(t)
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"sent":true}`))
	}))
	t.Cleanup(up.Close)
	tools := `{"tools":[{"id":"email/send","rate_class":"light","price_usd":"0.01","upstream":"` + up.URL + `/send"}]}`
	nodes := startClusterNodes(t, rs.URL(), 2, tools)
	a, b := nodes[0], nodes[1]
	key, id := a.createKey(`{"name":"mailer","policy":{"approval_tools":["email/send"],"rate_class_quota":{"light":100}}}`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := b.admin("GET", "/credits/keys/"+id+"/policy", "")
		if strings.Contains(string(body), `"approval_tools"`) {
			break // node B knows the key and its policy
		}
		if time.Now().After(deadline) {
			t.Fatalf("node B: key %s and its policy not within 5 s: %s", id, body)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The caller holds on node A, waiting up to 30 s for the decision.
	type answer struct {
		code int
		body []byte
	}
	waited := make(chan answer, 1)
	go func() {
		code, body := a.req("POST", "/tools/email/send", `{"to":"ops@example.com"}`,
			"X-API-Key", key, "Content-Type", "application/json", "Prefer", "wait=30")
		waited <- answer{code, body}
	}()
	var apID string
	deadline = time.Now().Add(5 * time.Second)
	for apID == "" {
		_, body := b.admin("GET", "/approvals", "")
		var list struct {
			Approvals []struct {
				ID     string `json:"approval_id"`
				Status string `json:"status"`
			} `json:"approvals"`
		}
		json.Unmarshal(body, &list)
		if len(list.Approvals) == 1 && list.Approvals[0].Status == "pending" {
			apID = list.Approvals[0].ID
		} else if time.Now().After(deadline) {
			t.Fatalf("node B lists %s, want the call held on node A", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if hits.Load() != 0 {
		t.Fatalf("upstream hit %d times before the approval, want 0", hits.Load())
	}

	// Both nodes approve at once: one decision wins.
	codes := make([]int, 2)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, p := range nodes {
		wg.Go(func() {
			<-start
			codes[i], _ = p.admin("POST", "/approvals/"+apID, `{"decision":"approve","reason":"looks fine"}`)
		})
	}
	close(start)
	wg.Wait()
	if codes[0]+codes[1] != 200+409 {
		t.Fatalf("concurrent approvals on A and B: got %v, want one 200 and one 409", codes)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("upstream hits: got %d, want 1 (forwarded exactly once)", n)
	}
	select {
	case ans := <-waited:
		if ans.code != 200 || string(ans.body) != `{"sent":true}` {
			t.Fatalf("the waiting caller on node A: got %d %s, want 200 and the upstream's answer", ans.code, ans.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the caller waiting on node A had no answer 10 s after the approval")
	}
	var results []string
	for i, p := range nodes {
		code, body := p.req("GET", "/approvals/"+apID, "", "X-API-Key", key)
		if code != 200 || jsonField(t, body, "status") != "done" || jsonField(t, body, "result", "status") != 200.0 {
			t.Fatalf("node %d: GET /approvals/%s: got %d %s, want done with the call's result", i, apID, code, body)
		}
		rid, _ := json.Marshal(jsonField(t, body, "result"))
		results = append(results, string(rid))
	}
	if results[0] != results[1] {
		t.Fatalf("the two nodes return different results:\n%s\n%s", results[0], results[1])
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("upstream hits at the end: got %d, want 1", n)
	}
}

// startClusterNodes starts n toolgate processes in cluster mode on
// redisURL (node ids node-a, node-b, …), each in its own data dir with
// tools and the repository's policies.json.
func startClusterNodes(t *testing.T, redisURL string, n int, tools string) []*proc {
	t.Helper()
	pol, err := os.ReadFile("../../policies.json")
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*proc, n)
	for i := range nodes {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "tools.json"), []byte(tools), 0o600)
		os.WriteFile(filepath.Join(d, "policies.json"), pol, 0o600)
		nodes[i] = startGateway(t, d, "--cluster-redis", redisURL, "--access-log=false", "--node-id", "node-"+string(rune('a'+i)))
	}
	return nodes
}
