package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster/redistest"
)

// TestCluster_IdempotentAnswersShared: with --cluster-redis the recorded
// answers of idempotent calls are shared (cluster.Answers): a retry with
// the same Idempotency-Key sent to another node gets the first node's
// answer, billed once, without a second upstream call; another request
// under the key is a 409 there too; and two copies sent to two nodes at
// once run once (the second waits on the first's claim and replays).
func TestCluster_IdempotentAnswersShared(t *testing.T) {
	rs := redistest.Start(t)
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond) // the first copy is still running when the second arrives
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true,"n":` + strconv.FormatInt(n, 10) + `}`))
	}))
	t.Cleanup(up.Close)
	tools := `{"tools":[{"id":"paid","rate_class":"light","price_usd":"0.01","upstream":"` + up.URL + `/paid"},
 {"id":"slow","rate_class":"light","price_usd":"0.01","upstream":"` + up.URL + `/slow"}]}`
	nodes := startClusterNodes(t, rs.URL(), 2, tools)
	key, _ := nodes[0].createKey(`{"name":"retrier"}`)
	callKey := func(p *proc, tool, idem, body string) (int, string, string) {
		req, _ := http.NewRequest("POST", p.url+"/tools/"+tool, strings.NewReader(body))
		req.Header.Set("X-API-Key", key)
		req.Header.Set("Idempotency-Key", idem)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error(), ""
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header.Get("Idempotent-Replayed")
	}
	call := func(p *proc, body string) (int, string, string) { return callKey(p, "paid", "order-1", body) }
	// The key reaches node 1 through the shared key store.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := nodes[1].req("POST", "/tools/paid", `{"probe":1}`, "X-API-Key", key); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key not usable on node 1 within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hits0 := hits.Load()
	code, first, _ := call(nodes[0], `{"q":1}`)
	if code != 200 {
		t.Fatalf("first call on node 0: got %d %s", code, first)
	}
	code, again, replayed := call(nodes[1], `{"q":1}`)
	if code != 200 || again != first || replayed != "true" {
		t.Errorf("retry on node 1: got %d %q replayed %q, want node 0's answer %q replayed", code, again, replayed, first)
	}
	if code, b, _ := call(nodes[1], `{"q":2}`); code != 409 {
		t.Errorf("another request under the key on node 1: got %d %s, want 409", code, b)
	}
	if got := hits.Load() - hits0; got != 1 {
		t.Errorf("upstream calls: got %d, want 1", got)
	}

	// Two copies at once on two nodes.
	hits0 = hits.Load()
	type answer struct {
		code           int
		body, replayed string
	}
	answers := make(chan answer, 2)
	for _, p := range nodes {
		go func() {
			code, body, replayed := callKey(p, "slow", "order-2", `{"q":3}`)
			answers <- answer{code, body, replayed}
		}()
	}
	a1, a2 := <-answers, <-answers
	if a1.code != 200 || a2.code != 200 || a1.body != a2.body || (a1.replayed == "true") == (a2.replayed == "true") {
		t.Errorf("concurrent copies on two nodes: got %+v and %+v, want the same 200, one of them replayed", a1, a2)
	}
	if got := hits.Load() - hits0; got != 1 {
		t.Errorf("upstream calls for the concurrent copies: got %d, want 1", got)
	}
}
