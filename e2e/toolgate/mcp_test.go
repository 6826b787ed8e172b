package toolgate_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// The MCP front end (POST /mcp) driven by the official TypeScript SDK
// client, @modelcontextprotocol/sdk 1.32.2 (e2e/mcp-client.mjs), and x402
// over MCP paid by the reference x402 client packages on the local chain
// (e2e/mcp-pay.mjs). The Go SDK client is tested in gateway/mcp_test.go.

// seedPolicy is the seed scenario's per-key policy: heavy quota 5,
// code_execute and browser/act denied.
const seedPolicy = `{"allow_tools":["whatsapp/send","email/send","extract/structured","image/generate"],` +
	`"deny_tools":["code_execute","browser/act"],"rate_class_quota":{"light":120,"medium":30,"heavy":5}}`

// mcpLegacyVersion is what the TS SDK 1.32.2 negotiates: its newest
// revision (it knows nothing of 2026-07-28).
const mcpLegacyVersion = "2025-11-25"

// mcpStep is one step of e2e/mcp-common.mjs's --steps.
type mcpStep map[string]any

// mcpLine is one output line of the node MCP scripts.
type mcpLine struct {
	Event           string `json:"event"`
	ProtocolVersion string `json:"protocolVersion"`
	SessionID       string `json:"sessionId"`
	ServerInfo      struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"serverInfo"`

	Step  *int   `json:"step"`
	Op    string `json:"op"`
	N     int    `json:"n"`
	Error string `json:"error"`
	Code  *int   `json:"code"`
	Tools []struct {
		Name string                     `json:"name"`
		Meta map[string]json.RawMessage `json:"_meta"`
	} `json:"tools"`
	Result          *mcpResult      `json:"result"`
	PaymentRequired json.RawMessage `json:"paymentRequired"`
	Payload         json.RawMessage `json:"payload"`

	// "fetch" lines of mcp-oauth.mjs.
	Method          string `json:"method"`
	URL             string `json:"url"`
	Status          int    `json:"status"`
	WWWAuthenticate string `json:"wwwAuthenticate"`
}

// mcpResult is a CallToolResult as the TS SDK parsed it.
type mcpResult struct {
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StructuredContent json.RawMessage            `json:"structuredContent"`
	IsError           bool                       `json:"isError"`
	Meta              map[string]json.RawMessage `json:"_meta"`
}

// structured decodes structuredContent into a map (nil when absent).
func (r *mcpResult) structured(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if len(r.StructuredContent) > 0 {
		if err := json.Unmarshal(r.StructuredContent, &m); err != nil {
			t.Fatalf("structuredContent %s: %v", r.StructuredContent, err)
		}
	}
	return m
}

// metaString returns the string _meta[key] ("" when absent).
func (r *mcpResult) metaString(key string) string {
	var s string
	_ = json.Unmarshal(r.Meta[key], &s)
	return s
}

// settlement decodes _meta["x402/payment-response"]; ok is false when absent.
func (r *mcpResult) settlement(t testing.TB) (s settleResponse, ok bool) {
	t.Helper()
	raw := r.Meta["x402/payment-response"]
	if len(raw) == 0 || string(raw) == "null" {
		return s, false
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("x402/payment-response %s: %v", raw, err)
	}
	return s, true
}

// mcpRun is a finished run of a node MCP script.
type mcpRun struct {
	Connected mcpLine
	Steps     []mcpLine // in output order; a repeated call has one line per call
	Fetches   []mcpLine // mcp-oauth.mjs: every HTTP request the client made
}

// op returns the lines of step i.
func (r mcpRun) op(i int) []mcpLine {
	var out []mcpLine
	for _, l := range r.Steps {
		if l.Step != nil && *l.Step == i {
			out = append(out, l)
		}
	}
	return out
}

// one returns the single line of step i, failing if the step threw.
func (r mcpRun) one(t testing.TB, i int) mcpLine {
	t.Helper()
	ls := r.op(i)
	if len(ls) != 1 {
		t.Fatalf("step %d: got %d output lines, want 1", i, len(ls))
	}
	if ls[0].Error != "" {
		t.Fatalf("step %d (%s): the client threw: %s (code %v)", i, ls[0].Op, ls[0].Error, ls[0].Code)
	}
	if ls[0].Op != "list" && ls[0].Result == nil {
		t.Fatalf("step %d (%s): no result", i, ls[0].Op)
	}
	return ls[0]
}

// runMCP runs e2e/<script> against g's /mcp, with key as X-API-Key (none
// if ""), and returns its output. env is added to the script's
// environment. It fails the test if the script could not connect or did
// not run; a step that threw is reported in its line's Error.
func runMCP(t testing.TB, g *gateway, script, key string, steps []mcpStep, env ...string) mcpRun {
	t.Helper()
	var flags []string
	if key != "" {
		flags = []string{"--key", key}
	}
	return runMCPFlags(t, g, script, flags, steps, env...)
}

// runMCPFlags is runMCP with the script's own flags.
func runMCPFlags(t testing.TB, g *gateway, script string, flags []string, steps []mcpStep, env ...string) mcpRun {
	t.Helper()
	d := chain.RequireDeps(t)
	stepsJSON, err := json.Marshal(steps)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{filepath.Join(d.Dir, script), "--steps", string(stepsJSON)}, flags...)
	args = append(args, g.url+"/mcp")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Node, args...)
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	t.Logf("%s: %d steps in %s", script, len(steps), time.Since(start).Round(time.Millisecond))
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("%s: %v\nstderr: %s\nstdout: %s", script, err, stderr.String(), stdout.String())
	}
	var run mcpRun
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var l mcpLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s: output line %q: %v", script, sc.Text(), err)
		}
		switch l.Event {
		case "connected":
			run.Connected = l
		case "fetch":
			run.Fetches = append(run.Fetches, l)
		default:
			run.Steps = append(run.Steps, l)
		}
	}
	if run.Connected.Event == "" {
		t.Fatalf("%s: no connected line\nstderr: %s\nstdout: %s", script, stderr.String(), stdout.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("%s stderr: %s", script, s)
	}
	return run
}

// mcpKey creates an API key with the per-key policy (if not "") and
// returns its id and secret.
func (g *gateway) mcpKey(t testing.TB, policy string) (id, secret string) {
	t.Helper()
	r := g.admin(t, "POST", "/credits/keys", map[string]any{})
	var k struct {
		KeyID  string `json:"key_id"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(r.Body, &k); err != nil || r.Status != 201 || k.Secret == "" {
		t.Fatalf("create key: got %d %s, want 201 with a secret", r.Status, r.Body)
	}
	if policy != "" {
		if r := g.admin(t, "PUT", "/credits/keys/"+k.KeyID+"/policy", json.RawMessage(policy)); r.Status != 200 {
			t.Fatalf("PUT key policy: got %d %s, want 200", r.Status, r.Body)
		}
	}
	return k.KeyID, k.Secret
}

// wantJSONEqual checks that got and want are the same JSON value.
func wantJSONEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: %q is not JSON: %v", what, got, err)
		return
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: want %q is not JSON: %v", what, want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("%s: got %s, want %s", what, gb, wb)
	}
}

// mcpRecords counts principal's ledger call records by protocol and outcome.
func (g *gateway) mcpRecords(t testing.TB, principal string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range g.audit(t, principal) {
		if r.Type == "call" {
			p := r.Protocol
			if p == "" {
				p = "rest"
			}
			out[p+":"+r.Outcome]++
		}
	}
	return out
}

func listedNames(l mcpLine) []string {
	var names []string
	for _, tl := range l.Tools {
		names = append(names, tl.Name)
	}
	sort.Strings(names)
	return names
}

// wantConnected checks the negotiated revision and the session.
func wantConnected(t testing.TB, run mcpRun) {
	t.Helper()
	c := run.Connected
	if c.ProtocolVersion != mcpLegacyVersion || c.SessionID == "" || c.ServerInfo.Name != "toolgate" {
		t.Errorf("connected: got protocolVersion %q session %q server %q, want %s with a session id from toolgate",
			c.ProtocolVersion, c.SessionID, c.ServerInfo.Name, mcpLegacyVersion)
	}
}

// TestMCP_SeedScenarioTS runs the seed scenario through the TS SDK client
// with an API key (X-API-Key in the transport's requestInit): it
// negotiates 2025-11-25 with a session; tools/list hides the tools the
// key's policy denies; the allowed call carries its cost in
// _meta["toolgate/cost_usd"] and the upstream's JSON as structuredContent;
// the denied call is a tool error with REST's 403 body; the 6th heavy call
// at the per-key heavy quota 5 is a tool error with the quota body; the
// denials never reach the upstream; the ledger records the MCP calls with
// protocol mcp.
func TestMCP_SeedScenarioTS(t *testing.T) {
	t.Parallel()
	chain.RequireDeps(t)
	up := startUpstream(t)
	g := startGateway(t, up.url, "--x402-facilitator", "http://127.0.0.1:9") // no payment here
	keyID, secret := g.mcpKey(t, seedPolicy)

	run := runMCP(t, g, "mcp-client.mjs", secret, []mcpStep{
		{"op": "list"},
		{"op": "call", "name": "extract/structured", "arguments": map[string]any{"text": "Invoice 42"}},
		{"op": "call", "name": "code_execute", "arguments": map[string]any{"code": "1+1"}},
		{"op": "call", "name": "image/generate", "arguments": map[string]any{"prompt": "cat"}, "repeat": 6},
	})
	wantConnected(t, run)

	t.Run("ToolsListHidesDenied", func(t *testing.T) {
		l := run.one(t, 0)
		// The catalog has extract/structured, email/send, flaky,
		// code_execute, image/generate; the policy allows three of them.
		if got := strings.Join(listedNames(l), ","); got != "email/send,extract/structured,image/generate" {
			t.Errorf("tools/list: got %s, want email/send,extract/structured,image/generate (code_execute denied, flaky not allowed)", got)
		}
		for _, tl := range l.Tools {
			if tl.Name == "extract/structured" {
				if p := string(tl.Meta["toolgate/price_usd"]); p != `"0.01"` {
					t.Errorf("extract/structured _meta toolgate/price_usd: got %s, want \"0.01\"", p)
				}
			}
		}
	})

	t.Run("Allowed", func(t *testing.T) {
		r := run.one(t, 1).Result
		if r.IsError {
			t.Fatalf("allowed call: isError, result %+v", r)
		}
		if got := r.metaString("toolgate/cost_usd"); got != "0.010" {
			t.Errorf(`_meta["toolgate/cost_usd"]: got %q, want "0.010"`, got)
		}
		if r.metaString("toolgate/request_id") == "" {
			t.Errorf(`_meta["toolgate/request_id"]: missing`)
		}
		sc := r.structured(t)
		if sc["ok"] != true || sc["path"] != "/extract" || sc["principal"] != "key:"+keyID || sc["echo"] != `{"text":"Invoice 42"}` {
			t.Errorf("structuredContent: got %v, want the upstream's answer to key:%s with the arguments as body", sc, keyID)
		}
		if len(r.Content) != 1 || r.Content[0].Type != "text" {
			t.Fatalf("content: got %+v, want one text block", r.Content)
		}
		wantJSONEqual(t, "content[0].text", []byte(r.Content[0].Text), r.StructuredContent)
	})

	t.Run("Denied", func(t *testing.T) {
		r := run.one(t, 2).Result
		if !r.IsError {
			t.Fatalf("denied call: got isError false, want true")
		}
		wantJSONEqual(t, "structuredContent", r.StructuredContent,
			[]byte(`{"error":"Tool access denied by policy","tool":"code_execute","reason":"deny_tools"}`))
		if got := r.metaString("toolgate/cost_usd"); got != "0.000" {
			t.Errorf(`_meta["toolgate/cost_usd"]: got %q, want "0.000"`, got)
		}
		// The same body as the REST answer.
		rest := do(t, "POST", g.url+"/tools/code_execute", []byte(`{"code":"1+1"}`), map[string]string{"X-API-Key": secret})
		if rest.Status != 403 {
			t.Fatalf("REST code_execute: got %d %s, want 403", rest.Status, rest.Body)
		}
		wantJSONEqual(t, "MCP structuredContent vs REST 403 body", r.StructuredContent, rest.Body)
	})

	t.Run("Quota", func(t *testing.T) {
		calls := run.op(3)
		if len(calls) != 6 {
			t.Fatalf("heavy calls: got %d lines, want 6", len(calls))
		}
		for i, l := range calls[:5] {
			if l.Error != "" || l.Result == nil || l.Result.IsError {
				t.Fatalf("heavy call %d: got error %q result %+v, want served", i+1, l.Error, l.Result)
			}
		}
		l := calls[5]
		if l.Error != "" || l.Result == nil || !l.Result.IsError {
			t.Fatalf("6th heavy call: got error %q result %+v, want a tool error", l.Error, l.Result)
		}
		sc := l.Result.structured(t)
		if sc["error"] != "Policy rate class quota exceeded" || sc["rate_class"] != "heavy" || sc["limit"] != 5.0 ||
			sc["calls_this_minute"] != 5.0 || sc["reset_in_seconds"] == nil {
			t.Errorf("6th heavy call structuredContent: got %v, want the heavy quota body with limit 5", sc)
		}
	})

	t.Run("UpstreamAndLedger", func(t *testing.T) {
		if up.Hits("/code") != 0 || up.Hits("/image") != 5 || up.Hits("/extract") != 1 {
			t.Errorf("upstream hits: got /code %d /image %d /extract %d, want 0, 5, 1",
				up.Hits("/code"), up.Hits("/image"), up.Hits("/extract"))
		}
		got := g.mcpRecords(t, "key:"+keyID)
		want := map[string]int{"mcp:allowed": 6, "mcp:denied": 1, "mcp:quota_exceeded": 1, "rest:denied": 1}
		if !sameCounts(got, want) {
			t.Errorf("ledger call records by protocol:outcome: got %v, want %v", got, want)
		}
	})
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestMCP_SharedQuotaWithREST: REST and MCP calls of one key count in one
// quota window. With heavy quota 5, two REST calls leave three for MCP; the
// fourth MCP call is refused with the quota body (5 calls this minute), and
// so is the next REST call.
func TestMCP_SharedQuotaWithREST(t *testing.T) {
	t.Parallel()
	chain.RequireDeps(t)
	up := startUpstream(t)
	g := startGateway(t, up.url, "--x402-facilitator", "http://127.0.0.1:9")
	keyID, secret := g.mcpKey(t, `{"rate_class_quota":{"heavy":5}}`)
	rest := func() response {
		return do(t, "POST", g.url+"/tools/image/generate", []byte(`{"prompt":"rest"}`), map[string]string{"X-API-Key": secret})
	}
	for i := range 2 {
		if r := rest(); r.Status != 200 {
			t.Fatalf("REST heavy call %d: got %d %s, want 200", i+1, r.Status, r.Body)
		}
	}
	run := runMCP(t, g, "mcp-client.mjs", secret, []mcpStep{
		{"op": "call", "name": "image/generate", "arguments": map[string]any{"prompt": "mcp"}, "repeat": 4},
	})
	wantConnected(t, run)
	calls := run.op(0)
	if len(calls) != 4 {
		t.Fatalf("MCP heavy calls: got %d lines, want 4", len(calls))
	}
	for i, l := range calls {
		if l.Error != "" || l.Result == nil {
			t.Fatalf("MCP heavy call %d: the client threw %q", i+1, l.Error)
		}
		if want := i == 3; l.Result.IsError != want {
			t.Errorf("MCP heavy call %d: got isError %t, want %t (2 REST calls + 3 MCP calls fill the quota of 5)", i+1, l.Result.IsError, want)
		}
	}
	sc := calls[3].Result.structured(t)
	if sc["error"] != "Policy rate class quota exceeded" || sc["limit"] != 5.0 || sc["calls_this_minute"] != 5.0 {
		t.Errorf("4th MCP heavy call: got %v, want the quota body with 5 of 5 calls this minute", sc)
	}
	r := rest()
	if r.Status != 403 || errorField(r.Body) != "Policy rate class quota exceeded" {
		t.Errorf("REST call after the MCP calls: got %d %s, want 403 quota exceeded", r.Status, r.Body)
	}
	if got := up.Hits("/image"); got != 5 {
		t.Errorf("upstream /image hits: got %d, want 5", got)
	}
	got := g.mcpRecords(t, "key:"+keyID)
	want := map[string]int{"rest:allowed": 2, "mcp:allowed": 3, "mcp:quota_exceeded": 1, "rest:quota_exceeded": 1}
	if !sameCounts(got, want) {
		t.Errorf("ledger call records by protocol:outcome: got %v, want %v", got, want)
	}
}

// drainMarker in a call's arguments makes TestMCP_X402's upstream empty the
// payer's balance while the tool runs, so that the after_upstream
// settlement that follows fails on chain.
const drainMarker = "drain-before-settlement: secret tool output"

// TestMCP_X402 pays over MCP with the TS SDK client and the reference x402
// client on anvil, through the reference facilitator: an unpaid call of a
// priced tool is a tool error carrying PaymentRequired (x402Version 2,
// accepts[]) in structuredContent and as content[0].text; paid with
// params._meta["x402/payment"] it is served with the settlement in
// result._meta["x402/payment-response"]; a replay of the payload is
// refused (nonce used); a payment whose settlement fails (the payer's
// funds moved away while the tool ran) gets no tool output. The payTo
// balance rises by the price exactly once and the ledger has one
// x402_settlement.
func TestMCP_X402(t *testing.T) {
	t.Parallel()
	chain.RequireDeps(t)
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	payer, sink := chain.NewAccount(t), chain.NewAccount(t)
	const funds = money.PerUSD
	chain.Mint(t, a, payer.Address, funds)
	fac := chain.StartFacilitator(t, a, chain.FacilitatorConfig{})

	// Signed now, sent from the upstream by another account while the
	// drain call runs: everything left after the one paid call.
	drain := chain.NewAuthorization(payer.Address, sink.Address, funds-priceExtract, 2*time.Minute)
	drainSig, err := drain.Sign(payer)
	if err != nil {
		t.Fatal(err)
	}
	drainDone := make(chan error, 1)
	up := &upstream{hits: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte("drain-before-settlement")) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_, err := chain.TransferWithAuthorization(ctx, t, a, chain.Accounts[5], drain, drainSig, 0)
			cancel()
			select {
			case drainDone <- err:
			default:
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		up.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	g := startGateway(t, "http://"+ln.Addr().String(), "--x402-facilitator", fac.URL())

	payTo0 := chain.BalanceOf(t, a, chain.PayTo.Address)
	args := map[string]any{"text": "Invoice 42 from ACME, total $120"}
	run := runMCP(t, g, "mcp-pay.mjs", "", []mcpStep{
		{"op": "list"},
		{"op": "unpaid", "name": "extract/structured", "arguments": args},
		{"op": "pay", "name": "extract/structured", "arguments": args},
		{"op": "replay"},
		{"op": "pay", "name": "extract/structured", "arguments": map[string]any{"text": drainMarker}},
	}, "PAYER_PRIVATE_KEY="+payer.KeyHex, "PAYER_RPC_URL="+a.RPC())
	wantConnected(t, run)

	t.Run("ToolsList", func(t *testing.T) {
		// Without a key: the priced tools an unknown wallet may pay for.
		if got := strings.Join(listedNames(run.one(t, 0)), ","); got != "email/send,extract/structured,flaky,image/generate" {
			t.Errorf("anonymous tools/list: got %s, want email/send,extract/structured,flaky,image/generate (code_execute denied to unknown_wallet)", got)
		}
	})

	var paidNonce [32]byte
	t.Run("Unpaid", func(t *testing.T) {
		l := run.one(t, 1)
		r := l.Result
		if !r.IsError || len(l.PaymentRequired) == 0 || string(l.PaymentRequired) == "null" {
			t.Fatalf("unpaid call: got isError %t, payment required %s; want a payment-required tool error", r.IsError, l.PaymentRequired)
		}
		var pr paymentRequired
		if err := json.Unmarshal(r.StructuredContent, &pr); err != nil {
			t.Fatalf("structuredContent %s: %v", r.StructuredContent, err)
		}
		if pr.X402Version != 2 || len(pr.Accepts) != 1 {
			t.Fatalf("PaymentRequired: got x402Version %d with %d accepts, want 2 with 1", pr.X402Version, len(pr.Accepts))
		}
		// The tool as an MCP resource (Bazaar "MCP Tools"): the MCP
		// endpoint, and the tool's name and input schema as MCP input.
		var bz struct {
			Info struct {
				Input struct {
					Type, Tool, Transport string
					InputSchema           map[string]any `json:"inputSchema"`
				} `json:"input"`
			} `json:"info"`
		}
		_ = json.Unmarshal(pr.Extensions["bazaar"], &bz)
		if in := bz.Info.Input; pr.Resource.URL != g.url+"/mcp" || in.Type != "mcp" || in.Tool != "extract/structured" ||
			in.Transport != "streamable-http" || in.InputSchema["type"] != "object" {
			t.Errorf("PaymentRequired over MCP: resource %q, bazaar %s; want %s/mcp with an MCP input for extract/structured",
				pr.Resource.URL, pr.Extensions["bazaar"], g.url)
		}
		var req requirements
		if err := json.Unmarshal(pr.Accepts[0], &req); err != nil {
			t.Fatal(err)
		}
		want := requirements{Scheme: "exact", Network: network, Amount: "10000", Asset: chain.USDCAddress.Hex(),
			PayTo: chain.PayTo.Address.Hex(), MaxTimeoutSeconds: req.MaxTimeoutSeconds}
		want.Extra.Name, want.Extra.Version = "USDC", "2"
		if req != want {
			t.Errorf("accepts[0]: got %+v, want %+v", req, want)
		}
		if len(r.Content) != 1 || r.Content[0].Type != "text" {
			t.Fatalf("content: got %+v, want one text block", r.Content)
		}
		wantJSONEqual(t, "content[0].text vs structuredContent", []byte(r.Content[0].Text), r.StructuredContent)
		if _, ok := r.settlement(t); ok {
			t.Errorf("x402/payment-response on an unpaid call: got one, want none")
		}
	})

	var tx string
	t.Run("Paid", func(t *testing.T) {
		l := run.one(t, 2)
		r := l.Result
		if r.IsError {
			t.Fatalf("paid call: got a tool error %s %+v, want served", r.StructuredContent, r.Content)
		}
		s, ok := r.settlement(t)
		if !ok || !s.Success || !strings.HasPrefix(s.Transaction, "0x") || len(s.Transaction) != 66 ||
			s.Network != network || !strings.EqualFold(s.Payer, payer.Address.Hex()) {
			t.Fatalf(`_meta["x402/payment-response"]: got %+v (present %t), want success with a tx hash on %s by %s`, s, ok, network, payer.Address.Hex())
		}
		tx = s.Transaction
		if got := r.metaString("toolgate/cost_usd"); got != "0.010" {
			t.Errorf(`_meta["toolgate/cost_usd"]: got %q, want "0.010"`, got)
		}
		sc := r.structured(t)
		if sc["ok"] != true || sc["principal"] != "wallet:"+payer.Address.Hex() || sc["leaked_payment"] != false {
			t.Errorf("structuredContent: got %v, want the upstream's answer to wallet:%s without payment headers", sc, payer.Address.Hex())
		}
		var p struct {
			X402Version int `json:"x402Version"`
			Payload     struct {
				Authorization struct {
					Nonce string `json:"nonce"`
				} `json:"authorization"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(l.Payload, &p); err != nil || p.X402Version != 2 {
			t.Fatalf("payload %s: %v", l.Payload, err)
		}
		copy(paidNonce[:], hexBytes(t, p.Payload.Authorization.Nonce))
		if !chain.AuthorizationState(t, a, payer.Address, paidNonce) {
			t.Errorf("authorizationState(payer, %x): got false, want true", paidNonce)
		}
		g.wantSettledInLedger(t, payer.Address, "extract/structured", r.metaString("toolgate/request_id"), tx, priceExtract)
	})

	t.Run("Replay", func(t *testing.T) {
		r := run.one(t, 3).Result
		if !r.IsError {
			t.Fatalf("replayed payment: got served, want a tool error")
		}
		var pr paymentRequired
		if err := json.Unmarshal(r.StructuredContent, &pr); err != nil || pr.X402Version != 2 || pr.Error != reasonNonce {
			t.Errorf("replay structuredContent: got %s, want PaymentRequired with error %s", r.StructuredContent, reasonNonce)
		}
		if s, ok := r.settlement(t); ok && s.Success {
			t.Errorf("replay: got a successful x402/payment-response %+v", s)
		}
	})

	t.Run("SettlementFailedWithholdsOutput", func(t *testing.T) {
		select {
		case err := <-drainDone:
			if err != nil {
				t.Fatalf("draining the payer from the upstream: %v", err)
			}
		default:
			t.Fatalf("the upstream never ran the drain call")
		}
		l := run.one(t, 4)
		r := l.Result
		all, _ := json.Marshal(r)
		if !r.IsError || bytes.Contains(all, []byte("secret tool output")) {
			t.Fatalf("failed settlement: got isError %t, result %s; want a tool error without the tool's output", r.IsError, all)
		}
		var pr paymentRequired
		if err := json.Unmarshal(r.StructuredContent, &pr); err != nil || pr.X402Version != 2 || pr.Error == "" || len(pr.Accepts) != 1 {
			t.Errorf("failed settlement structuredContent: got %s, want PaymentRequired with the failure reason", r.StructuredContent)
		}
		// The x402 MCP transport's reference server sends no receipt with a
		// failed settlement; toolgate sends one saying it failed. Either is
		// safe; a successful one is not.
		if s, ok := r.settlement(t); ok && (s.Success || s.ErrorReason != pr.Error) {
			t.Errorf("failed settlement: got x402/payment-response %+v, want none or success false with errorReason %q", s, pr.Error)
		}
		var p struct {
			Payload struct {
				Authorization struct {
					Nonce string `json:"nonce"`
				} `json:"authorization"`
			} `json:"payload"`
		}
		_ = json.Unmarshal(l.Payload, &p)
		var n [32]byte
		copy(n[:], hexBytes(t, p.Payload.Authorization.Nonce))
		if chain.AuthorizationState(t, a, payer.Address, n) {
			t.Errorf("authorizationState of the failed payment: got true, want false")
		}
		t.Logf("failed settlement reason: %s", pr.Error)
	})

	t.Run("MoneyAndLedger", func(t *testing.T) {
		if got := chain.BalanceOf(t, a, chain.PayTo.Address) - payTo0; got != priceExtract {
			t.Errorf("payTo balance rose by %d, want exactly %d (one paid call)", got, priceExtract)
		}
		if got := chain.BalanceOf(t, a, payer.Address); got != 0 {
			t.Errorf("payer balance: got %d, want 0 (one payment, the rest drained)", got)
		}
		if got := up.Hits("/extract"); got != 2 {
			t.Errorf("upstream /extract hits: got %d, want 2 (the paid call and the one whose settlement failed)", got)
		}
		if s := fac.Stats(t); s.Settle != 2 {
			t.Errorf("facilitator /settle calls: got %d, want 2 (one settled, one failed)", s.Settle)
		}
		outs := g.outcomes(t, "wallet:"+payer.Address.Hex())
		if outs["x402_settlement"] != 1 || outs["allowed"] != 1 || outs["settle_failed"] != 1 {
			t.Errorf("ledger of the payer: got %v, want 1 allowed, 1 settle_failed, 1 x402_settlement", outs)
		}
	})
}

// hexBytes decodes 0x-prefixed hex.
func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil || len(b) != 32 {
		t.Fatalf("nonce %q: not 32 bytes of hex", s)
	}
	return b
}
