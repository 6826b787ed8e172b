package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// keyTransport adds an API key to every request, as an MCP client
// configured with a header does.
type keyTransport struct{ key string }

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if k.key != "" {
		r.Header.Set("X-API-Key", k.key)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mcpConnect connects the official Go SDK client to the gateway's /mcp
// with key (none if ""), at protocol version (the SDK's default if "").
func (h *harness) mcpConnect(t *testing.T, key, version string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-test", Version: "1"}, nil)
	tr := &mcp.StreamableClientTransport{Endpoint: h.url + "/mcp", HTTPClient: &http.Client{Transport: keyTransport{key}, Timeout: 10 * time.Second}, MaxRetries: -1}
	var opts *mcp.ClientSessionOptions
	if version != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, tr, opts)
	if err != nil {
		t.Fatalf("connect (%q): %v", version, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// callMCP calls a tool and returns its result's structured content and _meta.
func callMCP(t *testing.T, cs *mcp.ClientSession, tool string, args any) (res *mcp.CallToolResult, structured map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s: %v", tool, err)
	}
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(b, &structured)
	}
	return res, structured
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	sort.Strings(names)
	return names
}

// TestMCP_SeedScenarioOverEachRevision: the seed scenario through the Go
// SDK client, at each revision served: the allowed call with its cost in
// _meta, the deny body, the quota body on the 6th heavy call; all recorded
// with protocol mcp, and none of the denials reaching the upstream.
func TestMCP_SeedScenarioOverEachRevision(t *testing.T) {
	for _, version := range []string{"", "2025-11-25", "2025-06-18"} {
		name := version
		if name == "" {
			name = "2026-07-28"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			k := h.createKey(`{}`)
			if resp, b := h.admin("PUT", "/credits/keys/"+k.KeyID+"/policy", seedOverride); resp.StatusCode != 200 {
				t.Fatalf("policy: %d %s", resp.StatusCode, b)
			}
			cs := h.mcpConnect(t, k.Secret, version)
			if got := cs.InitializeResult().ProtocolVersion; got != name {
				t.Fatalf("negotiated %s, want %s", got, name)
			}

			res, sc := callMCP(t, cs, "extract/structured", map[string]any{"text": "Invoice 42"})
			if res.IsError || res.Meta["toolgate/cost_usd"] != "0.010" || res.Meta["toolgate/request_id"] == nil {
				t.Fatalf("allowed call: isError %v meta %v", res.IsError, res.Meta)
			}
			if sc["path"] != "/extract" || sc["echo"].(map[string]any)["text"] != "Invoice 42" {
				t.Fatalf("structuredContent %v: want the upstream's JSON answer", sc)
			}

			hits := h.up.hits.Load()
			res, sc = callMCP(t, cs, "code_execute", map[string]any{})
			if !res.IsError {
				t.Fatal("denied call: want isError")
			}
			wantMap(t, sc, `{"error":"Tool access denied by policy","tool":"code_execute","reason":"deny_tools"}`)

			for i := 0; i < 5; i++ {
				if res, _ := callMCP(t, cs, "image/generate", map[string]any{}); res.IsError {
					t.Fatalf("heavy call %d: isError", i)
				}
			}
			res, sc = callMCP(t, cs, "image/generate", map[string]any{})
			if !res.IsError || sc["error"] != "Policy rate class quota exceeded" || sc["rate_class"] != "heavy" ||
				sc["limit"] != 5.0 || sc["calls_this_minute"] != 5.0 || sc["reset_in_seconds"] == nil {
				t.Fatalf("6th heavy call: isError %v %v", res.IsError, sc)
			}
			if got := h.up.hits.Load() - hits; got != 5 {
				t.Fatalf("upstream calls after the denials: %d, want the 5 allowed heavy calls", got)
			}
			mcpRecords := 0
			for _, r := range h.records("key:" + k.KeyID) {
				if r.Protocol == "mcp" {
					mcpRecords++
				}
			}
			if mcpRecords != 8 {
				t.Fatalf("records with protocol mcp: %d, want 8", mcpRecords)
			}
		})
	}
}

// wantMap checks a decoded object against a JSON object exactly.
func wantMap(t *testing.T, got map[string]any, want string) {
	t.Helper()
	b, _ := json.Marshal(got)
	wantJSON(t, b, want)
}

// TestMCP_ToolsListFiltered: a tool the caller's policy denies is not
// listed, for every deny reason; priced tools carry price and rate class.
func TestMCP_ToolsListFiltered(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), nil)
	tests := []struct {
		name, policy string
		hidden       []string
	}{
		{"DenyTools", `{"deny_tools":["code_execute","email/*"]}`, []string{"code_execute", "email/send"}},
		{"NotInAllowTools", `{"allow_tools":["pack/research"]}`, []string{"browser/act", "code_execute", "dead", "email/send", "image/generate", "reset", "slow", "time/now", "whatsapp/send"}},
		{"QuotaZero", `{"rate_class_quota":{"heavy":0}}`, []string{"browser/act", "code_execute", "image/generate"}},
	}
	all := []string{"browser/act", "code_execute", "dead", "email/send", "extract/structured", "image/generate", "reset", "search/web", "slow", "time/now", "whatsapp/send"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := h.createKey(`{"policy":` + tc.policy + `}`)
			cs := h.mcpConnect(t, k.Secret, "2025-11-25")
			got := toolNames(t, cs)
			want := without(all, tc.hidden)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("listed %v, want %v", got, want)
			}
			// A hidden tool called anyway is refused with the REST fields.
			res, sc := callMCP(t, cs, tc.hidden[0], map[string]any{})
			if !res.IsError || sc["error"] == nil {
				t.Fatalf("hidden tool %s called: isError %v %v", tc.hidden[0], res.IsError, sc)
			}
		})
	}
	t.Run("EnforcedDeny", func(t *testing.T) {
		up := newUpstream(t)
		h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
			o.Policies = mustPolicies(t, strings.Replace(seedPolicies, `"enforced": { "deny_tools": [] }`, `"enforced": { "deny_tools": ["browser/act"] }`, 1))
		})
		k := h.createKey(`{"policy":{"allow_tools":["*"]}}`)
		for _, n := range toolNames(t, h.mcpConnect(t, k.Secret, "")) {
			if n == "browser/act" {
				t.Fatal("an enforced deny is listed")
			}
		}
	})
	t.Run("PricesInMeta", func(t *testing.T) {
		k := h.createKey(`{}`)
		res, err := h.mcpConnect(t, k.Secret, "").ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tl := range res.Tools {
			if tl.Name == "extract/structured" && (tl.Meta["toolgate/price_usd"] != "0.01" || tl.Meta["toolgate/rate_class"] != "light") {
				t.Fatalf("extract/structured _meta %v", tl.Meta)
			}
		}
	})
}

func without(all, drop []string) []string {
	var out []string
	for _, a := range all {
		keep := true
		for _, d := range drop {
			keep = keep && a != d
		}
		if keep {
			out = append(out, a)
		}
	}
	return out
}

// TestMCP_ConcurrentQuota: 200 concurrent tools/call at heavy quota 5 →
// exactly 5 upstream calls.
func TestMCP_ConcurrentQuota(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{"policy":{"rate_class_quota":{"heavy":5}}}`)
	cs := h.mcpConnect(t, k.Secret, "")
	var wg sync.WaitGroup
	var mu sync.Mutex
	okCalls := 0
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "image/generate", Arguments: map[string]any{}})
			if err != nil {
				t.Error(err)
				return
			}
			if !res.IsError {
				mu.Lock()
				okCalls++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if okCalls != 5 || h.up.hits.Load() != 5 {
		t.Fatalf("served %d, upstream saw %d; want exactly 5", okCalls, h.up.hits.Load())
	}
}

// TestMCP_X402: an unpaid tools/call to a priced tool returns the payment
// requirements as a tool error; paid with params._meta["x402/payment"] it
// is served with the receipt in _meta; a replay is refused; a failed
// settlement withholds the output.
func TestMCP_X402(t *testing.T) {
	settler := &fakeSettler{}
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), withX402(t, settler))
	cs := h.mcpConnect(t, "", "")
	if got := toolNames(t, cs); strings.Join(got, ",") != "browser/act,email/send,extract/structured,image/generate,reset,search/web,whatsapp/send" {
		t.Fatalf("anonymous tools/list %v: want the priced tools an unknown wallet may use", got)
	}
	res, sc := callMCP(t, cs, "extract/structured", map[string]any{"text": "x"})
	if !res.IsError || sc["x402Version"] != 2.0 || len(sc["accepts"].([]any)) != 1 {
		t.Fatalf("unpaid: isError %v %v", res.IsError, sc)
	}
	if up.hits.Load() != 0 {
		t.Fatal("an unpaid call reached the upstream")
	}

	payer := chain.Accounts[7]
	payment := mcpPayment(t, h, payer, "extract/structured", 10000)
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "extract/structured", Arguments: map[string]any{"text": "x"},
		Meta: mcp.Meta{"x402/payment": payment}})
	if err != nil {
		t.Fatal(err)
	}
	receipt, _ := res.Meta["x402/payment-response"].(map[string]any)
	if res.IsError || receipt["success"] != true || receipt["transaction"] == "" || settler.settles.Load() != 1 {
		t.Fatalf("paid: isError %v meta %v settles %d", res.IsError, res.Meta, settler.settles.Load())
	}
	res, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "extract/structured", Arguments: map[string]any{"text": "x"},
		Meta: mcp.Meta{"x402/payment": payment}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res.StructuredContent)
	if !res.IsError || !strings.Contains(string(b), "nonce") || settler.settles.Load() != 1 {
		t.Fatalf("replay: isError %v %s settles %d", res.IsError, b, settler.settles.Load())
	}

	settler.SettleFn = func(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
		return x402.SettleResult{Reason: "insufficient_funds"}, nil
	}
	hits := up.hits.Load()
	res, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "extract/structured", Arguments: map[string]any{"text": "secret output"},
		Meta: mcp.Meta{"x402/payment": mcpPayment(t, h, payer, "extract/structured", 10000)}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(res)
	if !res.IsError || strings.Contains(string(b), "secret output") || up.hits.Load() != hits+1 {
		t.Fatalf("failed settlement: isError %v, result %s: the tool ran once and its output must be withheld", res.IsError, b)
	}
	var paid int
	for _, r := range h.records("wallet:" + payer.Address.Hex()) {
		if r.Type == ledger.TypeTxn && r.Kind == "x402_settlement" {
			paid++
		}
	}
	if paid != 1 {
		t.Fatalf("settlement records: %d, want 1", paid)
	}
}

// mcpPayment is a v2 payment payload object (not base64) for tool.
func mcpPayment(t *testing.T, h *harness, payer chain.Account, tool string, price int64) map[string]any {
	t.Helper()
	hdr := h.pay(payer, tool, money.Micros(price))
	raw, err := base64.StdEncoding.DecodeString(hdr)
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	json.Unmarshal(raw, &p)
	return p
}

// TestMCP_BadInput: malformed JSON-RPC, batches, wrong Mcp-Name, unknown
// sessions, huge params, unknown methods → the protocol's errors, never an
// HTTP 500, and nothing unrecorded.
func TestMCP_BadInput(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{}`)
	modern := func(method, name string) []string {
		hdr := []string{"X-API-Key", k.Secret, "Content-Type", "application/json", "Accept", "application/json, text/event-stream",
			"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", method}
		if name != "" {
			hdr = append(hdr, "Mcp-Name", name)
		}
		return hdr
	}
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	tests := []struct {
		name, body string
		hdr        []string
		status     int
		code       int
	}{
		{"MalformedJSON", `{"jsonrpc":"2.0","id":1,`, modern("tools/list", ""), 400, -32700},
		{"Batch", `[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]`, modern("tools/list", ""), 400, -32600},
		{"NotJSONRPC", `{"id":1,"method":"tools/list"}`, modern("tools/list", ""), 400, -32600},
		{"WrongMcpName", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"time/now",` + meta + `}}`, modern("tools/call", "extract/structured"), 400, -32020},
		{"MissingMcpName", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"time/now",` + meta + `}}`, modern("tools/call", ""), 400, -32020},
		{"WrongMcpMethod", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{` + meta + `}}`, modern("tools/call", ""), 400, -32020},
		{"MissingMeta", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`, modern("tools/list", ""), 400, -32602},
		{"UnsupportedVersion", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2030-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}`,
			[]string{"X-API-Key", k.Secret, "MCP-Protocol-Version", "2030-01-01", "Mcp-Method", "tools/list"}, 400, -32022},
		{"UnknownMethod", `{"jsonrpc":"2.0","id":1,"method":"resources/list","params":{` + meta + `}}`, modern("resources/list", ""), 404, -32601},
		{"InvalidParams", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":[1],` + meta + `}}`, modern("tools/call", ""), 200, -32602},
		{"UnknownSession", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, []string{"X-API-Key", k.Secret, "Mcp-Session-Id", "nope", "MCP-Protocol-Version", "2025-11-25"}, 404, -32600},
		{"NoSession", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, []string{"X-API-Key", k.Secret, "MCP-Protocol-Version", "2025-11-25"}, 400, -32600},
		{"BadKey", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{` + meta + `}}`, []string{"X-API-Key", "it-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA", "MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"}, 401, -32600},
		{"HugeParams", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"time/now","arguments":{"x":"` + strings.Repeat("a", 1<<20) + `"},` + meta + `}}`, modern("tools/call", "time/now"), 200, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := h.do("POST", "/mcp", tc.body, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, b, tc.status)
			}
			var m struct {
				Error *struct {
					Code int `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("body %q is not JSON-RPC: %v", b, err)
			}
			switch {
			case tc.code == 0 && m.Error != nil:
				t.Fatalf("got error %d, want a result", m.Error.Code)
			case tc.code != 0 && (m.Error == nil || m.Error.Code != tc.code):
				t.Fatalf("got %s, want error code %d", b, tc.code)
			}
		})
	}
	t.Run("ForeignOrigin403", func(t *testing.T) {
		resp, _ := h.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, "X-API-Key", k.Secret, "Origin", "https://evil.example")
		if resp.StatusCode != 403 {
			t.Fatalf("foreign Origin: %d, want 403", resp.StatusCode)
		}
		resp, _ = h.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, "X-API-Key", k.Secret, "Origin", h.url)
		if resp.StatusCode != 200 {
			t.Fatalf("own Origin: %d, want 200", resp.StatusCode)
		}
	})
	t.Run("GetIs405", func(t *testing.T) {
		resp, _ := h.do("GET", "/mcp", "", "Accept", "text/event-stream")
		if resp.StatusCode != 405 {
			t.Fatalf("GET /mcp: %d, want 405", resp.StatusCode)
		}
	})
	t.Run("NotificationIs202", func(t *testing.T) {
		resp, b := h.do("POST", "/mcp", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{`+meta+`}}`, modern("notifications/cancelled", "")...)
		if resp.StatusCode != 202 || len(b) != 0 {
			t.Fatalf("notification: %d %q, want 202 and no body", resp.StatusCode, b)
		}
	})
	if rep, b := h.admin("GET", "/audit/verify", ""); rep.StatusCode != 200 || !strings.Contains(string(b), `"ok":true`) {
		t.Fatalf("verify: %s", b)
	}
}

// TestMCP_RESTToolOverMCPAndBack: a REST tool is callable over MCP with its
// arguments as the JSON body; an SSE-only client gets an event stream.
func TestMCP_SSEAnswer(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{}`)
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	resp, b := h.do("POST", "/mcp", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"time/now","arguments":{"a":1},`+meta+`}}`,
		"X-API-Key", k.Secret, "Accept", "text/event-stream", "MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "time/now")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || !strings.HasPrefix(string(b), "event: message\ndata: ") {
		t.Fatalf("SSE answer: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	data := strings.TrimSpace(strings.TrimPrefix(string(b), "event: message\ndata: "))
	var m struct {
		Result struct {
			StructuredContent map[string]any `json:"structuredContent"`
			ResultType        string         `json:"resultType"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		t.Fatal(err)
	}
	if m.Result.ResultType != "complete" || m.Result.StructuredContent["echo"].(map[string]any)["a"] != 1.0 {
		t.Fatalf("result %s", data)
	}
	_, body := h.up.lastRequest()
	if string(body) != `{"a":1}` {
		t.Fatalf("upstream body %q, want the arguments", body)
	}
}

// mustPolicies decodes a policies.json document.
func mustPolicies(t *testing.T, doc string) *policy.Document {
	t.Helper()
	d, err := policy.DecodeDocument([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestMCP_CapAndCredits: the daily cap and prepaid credits refuse over MCP
// with the REST bodies' fields, never forwarded, never billed.
func TestMCP_CapAndCredits(t *testing.T) {
	h := newHarness(t)
	t.Run("Cap", func(t *testing.T) {
		k := h.createKey(`{"policy":{"daily_spend_cap_usd":0.02}}`)
		cs := h.mcpConnect(t, k.Secret, "")
		for i := 0; i < 2; i++ {
			if res, _ := callMCP(t, cs, "extract/structured", map[string]any{}); res.IsError {
				t.Fatalf("call %d under the cap: isError", i)
			}
		}
		hits := h.up.hits.Load()
		res, sc := callMCP(t, cs, "extract/structured", map[string]any{})
		if !res.IsError || sc["error"] != "Daily spend cap exceeded" || sc["spend_today_usd"] != 0.02 || sc["spend_limit_usd"] != 0.02 ||
			sc["cost_usd"] != 0.01 || sc["reserved_usd"] != 0.0 || sc["reset_at"] == nil || sc["reset_in_seconds"] == nil {
			t.Fatalf("over the cap: isError %v %v", res.IsError, sc)
		}
		if h.up.hits.Load() != hits || res.Meta["toolgate/cost_usd"] != "0.000" {
			t.Fatalf("a capped call reached the upstream or was billed: %v", res.Meta)
		}
	})
	t.Run("Credits", func(t *testing.T) {
		k := h.createKey(`{"credits_usd":"0.015"}`)
		cs := h.mcpConnect(t, k.Secret, "2025-11-25")
		if res, _ := callMCP(t, cs, "extract/structured", map[string]any{}); res.IsError {
			t.Fatal("first call within the credits: isError")
		}
		res, sc := callMCP(t, cs, "extract/structured", map[string]any{})
		if !res.IsError || sc["error"] != "Insufficient credits" || sc["balance_usd"] != 0.005 || sc["cost_usd"] != 0.01 {
			t.Fatalf("beyond the credits: isError %v %v", res.IsError, sc)
		}
		if st := h.status("key_id=" + k.KeyID); st["balance_usd"] != 0.005 {
			t.Fatalf("balance %v, want 0.005 (one call debited)", st["balance_usd"])
		}
	})
	t.Run("UpstreamTimeoutIsAnErrorNamingTheTool", func(t *testing.T) {
		k := h.createKey(`{}`)
		cs := h.mcpConnect(t, k.Secret, "")
		h.up.delay.Store(int64(time.Second))
		defer h.up.delay.Store(0)
		start := time.Now()
		_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{}})
		if err == nil || !strings.Contains(err.Error(), "slow") || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("slow upstream: %v, want a JSON-RPC error naming the tool", err)
		}
		if el := time.Since(start); el > 900*time.Millisecond {
			t.Fatalf("answered after %v, want near the tool's 150 ms timeout", el)
		}
	})
}
