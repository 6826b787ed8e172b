package toolgate_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/e2e/chain"
)

// Importing an upstream MCP server (tools.json "mcp_servers") end to end:
// the real toolgate binary imports e2e/mcp-upstream.mjs, an MCP server
// built with the official TypeScript SDK (McpServer +
// StreamableHTTPServerTransport, stateful sessions, SSE answers), and the
// official Go SDK client calls the imported tools through toolgate's /mcp.

// filesUpstream is a running e2e/mcp-upstream.mjs.
type filesUpstream struct {
	t      testing.TB
	port   int
	url    string // http://127.0.0.1:PORT/mcp
	pid    int
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	stderr strings.Builder
}

// filesStats is the upstream's GET /stats.
type filesStats struct {
	Calls          map[string]int `json:"calls"`
	Initialize     int            `json:"initialize"`
	Sessions       int            `json:"sessions"`
	UnknownSession int            `json:"unknownSession"`
	NoSession      int            `json:"noSession"`
	PID            int            `json:"pid"`
}

// errPortInUse: the upstream could not listen on the port it was given.
var errPortInUse = errors.New("port in use")

// startFilesUpstream starts e2e/mcp-upstream.mjs on port (0: any free
// port) and waits for its ready line. The process is killed, by its PID,
// at cleanup. It fails the test unless the only problem is that port was
// taken (errPortInUse).
func startFilesUpstream(t testing.TB, port int) (*filesUpstream, error) {
	t.Helper()
	d := chain.RequireDeps(t)
	cmd := exec.Command(d.Node, filepath.Join(d.Dir, "mcp-upstream.mjs"), "--port", strconv.Itoa(port))
	cmd.Dir = d.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	f := &filesUpstream{t: t, done: make(chan struct{})}
	cmd.Stderr = lockedStringWriter{&f.mu, &f.stderr}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mcp-upstream.mjs: %v", err)
	}
	f.cmd, f.pid = cmd, cmd.Process.Pid
	ready := make(chan []byte, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case ready <- append([]byte(nil), sc.Bytes()...):
			default:
			}
		}
		cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(f.kill)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mcp-upstream.mjs (pid %d) stderr:\n%s", f.pid, f.stderrText())
		}
	})
	select {
	case line := <-ready:
		var r struct {
			Event string `json:"event"`
			Port  int    `json:"port"`
			URL   string `json:"url"`
		}
		if err := json.Unmarshal(line, &r); err != nil || r.Event != "ready" || r.Port == 0 {
			t.Fatalf("mcp-upstream.mjs ready line %q: %v", line, err)
		}
		f.port, f.url = r.Port, r.URL
		return f, nil
	case <-f.done:
		if strings.Contains(f.stderrText(), "EADDRINUSE") {
			return nil, fmt.Errorf("mcp-upstream.mjs on port %d: %w", port, errPortInUse)
		}
		t.Fatalf("mcp-upstream.mjs exited before ready: %s", f.stderrText())
	case <-time.After(10 * time.Second):
		t.Fatalf("mcp-upstream.mjs not ready within 10 s: %s", f.stderrText())
	}
	return nil, nil
}

func (f *filesUpstream) stderrText() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stderr.String()
}

// kill sends SIGKILL to the process by its PID and waits for it to exit.
func (f *filesUpstream) kill() {
	if f.cmd == nil {
		return
	}
	select {
	case <-f.done:
		return
	default:
	}
	_ = syscall.Kill(f.pid, syscall.SIGKILL)
	<-f.done
}

// stats reads the upstream's call counts.
func (f *filesUpstream) stats(t testing.TB) filesStats {
	t.Helper()
	r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/stats", f.port), nil, nil)
	var s filesStats
	if err := json.Unmarshal(r.Body, &s); err != nil || r.Status != 200 {
		t.Fatalf("upstream /stats: %d %s: %v", r.Status, r.Body, err)
	}
	return s
}

// restart kills f and starts the server again on its port, retrying
// briefly while the port is taken; errPortInUse if it never got it.
func (f *filesUpstream) restart(t testing.TB) (*filesUpstream, error) {
	t.Helper()
	f.kill()
	var err error
	for range 20 { // the port is normally free at once (node sets SO_REUSEADDR)
		var again *filesUpstream
		if again, err = startFilesUpstream(t, f.port); err == nil {
			return again, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}

// wantDeadUpstreamError checks that a call to files/read, its server
// gone, is promptly a JSON-RPC error naming the tool.
func wantDeadUpstreamError(t testing.TB, cs *mcp.ClientSession) {
	t.Helper()
	t0 := time.Now()
	_, _, err := goCall(cs, "files/read", map[string]any{"path": "/gone"})
	if err == nil || !strings.Contains(err.Error(), "files/read") {
		t.Errorf("call with the upstream gone: got %v, want a JSON-RPC error naming files/read", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("call with the upstream gone took %s, want a prompt error", d)
	}
	t.Logf("dead upstream: %v", err)
}

type lockedStringWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedStringWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// filesCatalog is the test catalog with the upstream MCP server imported
// as "files": light and free, delete heavy at $0.01.
func filesCatalog(restURL, mcpURL string) string {
	return strings.Replace(fmt.Sprintf(testTools, restURL), `{"tools":[`,
		`{"mcp_servers":[{"id":"files","url":"`+mcpURL+`","rate_class":"light","price_usd":"0","timeout_ms":5000,
  "tools":{"delete":{"rate_class":"heavy","price_usd":"0.01"}}}],"tools":[`, 1)
}

// apiKeyTransport sends X-API-Key on every request, as an MCP client
// configured with a header does.
type apiKeyTransport struct{ key string }

func (k apiKeyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-API-Key", k.key)
	return http.DefaultTransport.RoundTrip(r)
}

// goMCPConnect connects the official Go SDK client to g's /mcp with key.
func goMCPConnect(t testing.TB, g *gateway, key string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-e2e-go", Version: "1"}, nil)
	tr := &mcp.StreamableClientTransport{Endpoint: g.url + "/mcp",
		HTTPClient: &http.Client{Transport: apiKeyTransport{key}, Timeout: 5 * time.Second}, MaxRetries: -1}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("Go SDK connect: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// goCall calls tool over cs (bounded by 5 s) and returns the result with
// its structuredContent decoded; err is the SDK's (a JSON-RPC error).
func goCall(cs *mcp.ClientSession, tool string, args any) (*mcp.CallToolResult, map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return nil, nil, err
	}
	var sc map[string]any
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &sc)
	}
	return res, sc, nil
}

func mustGoCall(t testing.TB, cs *mcp.ClientSession, tool string, args any) (*mcp.CallToolResult, map[string]any) {
	t.Helper()
	res, sc, err := goCall(cs, tool, args)
	if err != nil {
		t.Fatalf("tools/call %s: %v", tool, err)
	}
	return res, sc
}

func metaStr(m mcp.Meta, k string) string {
	s, _ := m[k].(string)
	return s
}

func textOf(res *mcp.CallToolResult) string {
	if len(res.Content) != 1 {
		return fmt.Sprintf("<%d content blocks>", len(res.Content))
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); ok {
		return tc.Text
	}
	return fmt.Sprintf("<%T>", res.Content[0])
}

// TestMCPUpstream_TSServer imports a TypeScript SDK MCP server (stateful,
// SSE answers) into the real toolgate binary and drives it with the Go SDK
// client through toolgate's /mcp, plus REST:
//   - tools/list has files/read, files/delete, files/fail with the server's
//     descriptions and input schemas; files/delete carries heavy / 0.01 in
//     _meta, files/read light;
//   - files/read returns the server's structuredContent, free (cost 0.000);
//   - files/delete costs 0.010; with heavy quota 2 the 3rd heavy call is a
//     tool error with the quota body and never reaches the server (its
//     delete count stays 2);
//   - files/fail's isError and text pass through, unbilled;
//   - REST POST /tools/files/read answers 200 with the tool result JSON,
//     files/fail 422;
//   - the server is killed (SIGKILL by PID) and restarted on the same
//     port: the next call succeeds, toolgate having met the 404 for its old
//     session and initialized a new one (exactly one), and reuses it;
//   - the server down: a call is a JSON-RPC error naming the tool, quickly
//     (no hang); back on the same port: the next call succeeds;
//   - the ledger has every files/* call with its protocol and outcome, and
//     bills only the two deletes.
//
// If the restarted server cannot get its port back, the restart step
// checks the dead-upstream error instead (logged).
func TestMCPUpstream_TSServer(t *testing.T) {
	t.Parallel()
	chain.RequireDeps(t)
	start := time.Now()
	files, _ := startFilesUpstream(t, 0)
	rest := startUpstream(t)
	g := startGatewayCatalog(t, filesCatalog(rest.url, files.url), "--x402-facilitator", "http://127.0.0.1:9")
	keyID, secret := g.mcpKey(t, `{"rate_class_quota":{"heavy":2}}`)
	cs := goMCPConnect(t, g, secret)
	if s := files.stats(t); s.Initialize != 1 {
		t.Errorf("upstream initialize count after toolgate started: got %d, want 1 (the import session)", s.Initialize)
	}

	t.Run("ToolsList", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]*mcp.Tool{}
		for _, tl := range res.Tools {
			byName[tl.Name] = tl
		}
		for _, n := range []string{"files/read", "files/delete", "files/fail"} {
			if byName[n] == nil {
				t.Fatalf("tools/list: no %s among %d tools", n, len(res.Tools))
			}
		}
		if byName["files/stats"] != nil || len(byName) != 8 {
			t.Errorf("tools/list: got %d tools, want the 5 REST tools and the 3 imported ones", len(byName))
		}
		del, rd := byName["files/delete"], byName["files/read"]
		if metaStr(del.Meta, "toolgate/rate_class") != "heavy" || metaStr(del.Meta, "toolgate/price_usd") != "0.01" {
			t.Errorf("files/delete _meta: got %v, want toolgate/rate_class heavy, toolgate/price_usd 0.01", del.Meta)
		}
		if metaStr(rd.Meta, "toolgate/rate_class") != "light" {
			t.Errorf("files/read _meta: got %v, want toolgate/rate_class light", rd.Meta)
		}
		if rd.Description != "Read a file" || del.Description != "Delete a file" {
			t.Errorf("descriptions: got %q, %q, want the server's", rd.Description, del.Description)
		}
		schema, _ := json.Marshal(rd.InputSchema)
		var s struct {
			Type       string                     `json:"type"`
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		if json.Unmarshal(schema, &s) != nil || s.Type != "object" || s.Properties["path"] == nil || len(s.Required) != 1 || s.Required[0] != "path" {
			t.Errorf("files/read inputSchema: got %s, want the server's zod schema (object, path required)", schema)
		}
	})

	t.Run("Read", func(t *testing.T) {
		res, sc := mustGoCall(t, cs, "files/read", map[string]any{"path": "/a"})
		if res.IsError || sc["path"] != "/a" || sc["bytes"] != 42.0 || len(sc) != 2 {
			t.Errorf("files/read: isError %v structuredContent %v, want the server's {path:/a, bytes:42}", res.IsError, sc)
		}
		if got := textOf(res); got != `{"path":"/a","bytes":42}` {
			t.Errorf("files/read content: got %s, want the server's text block", got)
		}
		if got := metaStr(res.Meta, "toolgate/cost_usd"); got != "0.000" {
			t.Errorf(`files/read _meta["toolgate/cost_usd"]: got %q, want "0.000"`, got)
		}
		if metaStr(res.Meta, "toolgate/request_id") == "" {
			t.Errorf(`files/read _meta["toolgate/request_id"]: missing (%v)`, res.Meta)
		}
	})

	t.Run("DeleteQuota", func(t *testing.T) {
		for i, p := range []string{"/b", "/c"} {
			res, sc := mustGoCall(t, cs, "files/delete", map[string]any{"path": p})
			if res.IsError || sc["deleted"] != p {
				t.Fatalf("files/delete %d: isError %v structuredContent %v, want {deleted:%s}", i+1, res.IsError, sc, p)
			}
			if got := metaStr(res.Meta, "toolgate/cost_usd"); got != "0.010" {
				t.Errorf(`files/delete %d _meta["toolgate/cost_usd"]: got %q, want "0.010"`, i+1, got)
			}
		}
		res, sc := mustGoCall(t, cs, "files/delete", map[string]any{"path": "/d"})
		if !res.IsError || sc["error"] != "Policy rate class quota exceeded" || sc["rate_class"] != "heavy" || sc["limit"] != 2.0 {
			t.Errorf("3rd heavy call: isError %v structuredContent %v, want the heavy quota body with limit 2", res.IsError, sc)
		}
		if got := metaStr(res.Meta, "toolgate/cost_usd"); got != "0.000" {
			t.Errorf(`3rd heavy call _meta["toolgate/cost_usd"]: got %q, want "0.000"`, got)
		}
		if got := files.stats(t).Calls["delete"]; got != 2 {
			t.Errorf("upstream delete calls: got %d, want 2 (the refused call never reached it)", got)
		}
	})

	t.Run("FailPassesThrough", func(t *testing.T) {
		res, _ := mustGoCall(t, cs, "files/fail", map[string]any{"path": "/x"})
		if !res.IsError || textOf(res) != "disk on fire: /x" {
			t.Errorf("files/fail: isError %v content %s, want isError with the server's text", res.IsError, textOf(res))
		}
		if got := metaStr(res.Meta, "toolgate/cost_usd"); got != "0.000" {
			t.Errorf(`files/fail _meta["toolgate/cost_usd"]: got %q, want "0.000" (a tool error is not billed)`, got)
		}
		if got := files.stats(t).Calls["fail"]; got != 1 {
			t.Errorf("upstream fail calls: got %d, want 1", got)
		}
	})

	t.Run("REST", func(t *testing.T) {
		r := do(t, "POST", g.url+"/tools/files/read", []byte(`{"path":"/r"}`), map[string]string{"X-API-Key": secret})
		if r.Status != 200 {
			t.Fatalf("REST files/read: got %d %s, want 200", r.Status, r.Body)
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("REST files/read Content-Type: got %q, want application/json", ct)
		}
		wantJSONEqual(t, "REST files/read body", r.Body,
			[]byte(`{"content":[{"type":"text","text":"{\"path\":\"/r\",\"bytes\":42}"}],"structuredContent":{"path":"/r","bytes":42}}`))
		if got := r.Header.Get("X-Cost-Usd"); got != "0.000" {
			t.Errorf("REST files/read X-Cost-Usd: got %q, want 0.000", got)
		}
		// A tool error over REST: 422, not billed.
		r = do(t, "POST", g.url+"/tools/files/fail", []byte(`{"path":"/y"}`), map[string]string{"X-API-Key": secret})
		if r.Status != 422 || !strings.Contains(string(r.Body), `"isError":true`) {
			t.Errorf("REST files/fail: got %d %s, want 422 with the tool result", r.Status, r.Body)
		}
	})

	t.Run("UpstreamRestart", func(t *testing.T) {
		oldPID := files.pid
		again, err := files.restart(t)
		if err != nil {
			// Documented fallback: the restarted server could not get
			// its old port, so toolgate cannot reach it; the call must be
			// a clean JSON-RPC error naming the tool.
			t.Logf("restarted upstream could not listen on port %d (%v): checking the dead-upstream error instead", files.port, err)
			wantDeadUpstreamError(t, cs)
			return
		}
		files = again
		if files.pid == oldPID {
			t.Fatalf("restarted upstream has the old pid %d", oldPID)
		}
		res, sc, err := goCall(cs, "files/read", map[string]any{"path": "/again"})
		if err != nil || res.IsError || sc["path"] != "/again" {
			t.Fatalf("first call after the upstream restarted: err %v result %+v structuredContent %v, want success", err, res, sc)
		}
		s := files.stats(t)
		if s.Initialize != 1 || s.Calls["read"] != 1 || s.UnknownSession != 1 || s.NoSession != 0 {
			t.Errorf("restarted upstream: got initialize %d, read %d, unknown-session %d, no-session %d; want 1, 1, 1, 0 "+
				"(toolgate's old session met the 404, it initialized again and sent the call once more)",
				s.Initialize, s.Calls["read"], s.UnknownSession, s.NoSession)
		}
		// The new session is reused.
		if _, sc := mustGoCall(t, cs, "files/read", map[string]any{"path": "/again2"}); sc["path"] != "/again2" {
			t.Errorf("second call after the restart: structuredContent %v", sc)
		}
		if s := files.stats(t); s.Initialize != 1 || s.Calls["read"] != 2 {
			t.Errorf("restarted upstream after two calls: initialize %d, read %d, want 1, 2 (one session)", s.Initialize, s.Calls["read"])
		}
	})

	t.Run("UpstreamDownThenBack", func(t *testing.T) {
		// Down: a JSON-RPC error naming the tool, never a hang.
		files.kill()
		wantDeadUpstreamError(t, cs)
		// Back on the same port: the next call succeeds.
		again, err := files.restart(t)
		if err != nil {
			t.Skipf("restarted upstream could not listen on port %d: %v", files.port, err)
		}
		files = again
		if _, sc, err := goCall(cs, "files/read", map[string]any{"path": "/back"}); err != nil || sc["path"] != "/back" {
			t.Fatalf("first call after the upstream came back: err %v structuredContent %v, want success", err, sc)
		}
		if s := files.stats(t); s.Initialize != 1 || s.Calls["read"] != 1 {
			t.Errorf("upstream back: initialize %d, read %d, want 1, 1", s.Initialize, s.Calls["read"])
		}
	})

	t.Run("Ledger", func(t *testing.T) {
		recs := g.audit(t, "key:"+keyID)
		got := map[string]int{}
		var billed int64
		for _, r := range recs {
			if r.Type != "call" || !strings.HasPrefix(r.Tool, "files/") {
				continue
			}
			p := r.Protocol
			if p == "" {
				p = "rest"
			}
			got[p+":"+r.Tool+":"+r.Outcome]++
			billed += int64(r.Cost)
		}
		t.Logf("ledger: %v", got)
		// A tool error (files/fail) is recorded allowed and unbilled, the
		// call to the dead upstream as upstream_error.
		want := map[string]int{
			"mcp:files/read:allowed": 4, "mcp:files/read:upstream_error": 1, "rest:files/read:allowed": 1,
			"mcp:files/delete:allowed": 2, "mcp:files/delete:quota_exceeded": 1,
			"mcp:files/fail:allowed": 1, "rest:files/fail:allowed": 1,
		}
		if !sameCounts(got, want) {
			t.Errorf("ledger call records of files/* by protocol:tool:outcome: got %v, want %v", got, want)
		}
		if billed != 20_000 {
			t.Errorf("ledger: billed %d micro-USD for files/*, want 20000 (two deletes)", billed)
		}
	})
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %s, want < 15 s", d)
	}
}

// TestMCPUpstream_RestartBeforeAnyCall: the server restarts before any
// tools/call went to it. toolgate's only pooled connection to it served
// the import (initialize, notifications/initialized, tools/list); it is
// dead now. The first call must still succeed: the request never reached
// the server, so it can be sent again on a new connection.
func TestMCPUpstream_RestartBeforeAnyCall(t *testing.T) {
	t.Parallel()
	chain.RequireDeps(t)
	files, _ := startFilesUpstream(t, 0)
	rest := startUpstream(t)
	g := startGatewayCatalog(t, filesCatalog(rest.url, files.url), "--x402-facilitator", "http://127.0.0.1:9")
	_, secret := g.mcpKey(t, "")
	cs := goMCPConnect(t, g, secret)
	files, err := files.restart(t)
	if err != nil {
		t.Skipf("restarted upstream could not get its port back: %v", err)
	}
	if _, sc, err := goCall(cs, "files/read", map[string]any{"path": "/p"}); err != nil || sc["path"] != "/p" {
		t.Errorf("first call after the restart: err %v structuredContent %v, want success", err, sc)
	}
	if s := files.stats(t); s.Initialize != 1 || s.Calls["read"] != 1 {
		t.Errorf("restarted upstream: initialize %d, read %d, want 1, 1", s.Initialize, s.Calls["read"])
	}
}

// TestMCPUpstream_ConcurrentAfterRestart: 8 calls at once after the
// server restarted (its sessions gone) all succeed, on one new session.
func TestMCPUpstream_ConcurrentAfterRestart(t *testing.T) {
	t.Parallel()
	chain.RequireDeps(t)
	files, _ := startFilesUpstream(t, 0)
	rest := startUpstream(t)
	g := startGatewayCatalog(t, filesCatalog(rest.url, files.url), "--x402-facilitator", "http://127.0.0.1:9")
	_, secret := g.mcpKey(t, "")
	cs := goMCPConnect(t, g, secret)
	mustGoCall(t, cs, "files/read", map[string]any{"path": "/warm"}) // the pooled connection has served a call
	files, err := files.restart(t)
	if err != nil {
		t.Skipf("restarted upstream could not get its port back: %v", err)
	}
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			p := "/c" + strconv.Itoa(i)
			_, sc, err := goCall(cs, "files/read", map[string]any{"path": p})
			if err == nil && sc["path"] != p {
				err = fmt.Errorf("structuredContent %v", sc)
			}
			errs <- err
		}()
	}
	failed := 0
	for range n {
		if err := <-errs; err != nil {
			failed++
			t.Logf("call: %v", err)
		}
	}
	s := files.stats(t)
	if failed != 0 || s.Calls["read"] != n || s.Initialize != 1 || s.NoSession != 0 {
		t.Errorf("%d calls after the restart: %d failed; upstream saw %d reads, %d initializes, %d requests with no session; "+
			"want 0 failed, %d reads, 1 initialize, 0 with no session", n, failed, s.Calls["read"], s.Initialize, s.NoSession, n)
	}
}
