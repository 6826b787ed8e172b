package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/catalog"
)

// filesServer is an upstream MCP server built with the official Go SDK:
// tools read (echoes its path), delete, and fail (a tool error). It counts
// the calls each tool received. Swap replaces the server behind the
// endpoint (its sessions are gone, as after a restart).
type filesServer struct {
	srv   *httptest.Server
	calls sync.Map // tool name → *atomic.Int64

	mu      sync.Mutex
	handler http.Handler
	server  *mcp.Server
}

type pathArgs struct {
	Path string `json:"path"`
}

func newFilesServer(t *testing.T, sse bool) *filesServer {
	f := &filesServer{}
	f.swap(sse)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		h := f.handler
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *filesServer) count(name string) *atomic.Int64 {
	v, _ := f.calls.LoadOrStore(name, new(atomic.Int64))
	return v.(*atomic.Int64)
}

func (f *filesServer) swap(sse bool) {
	s := mcp.NewServer(&mcp.Implementation{Name: "files", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "read", Description: "Read a file"}, func(ctx context.Context, req *mcp.CallToolRequest, in pathArgs) (*mcp.CallToolResult, map[string]any, error) {
		f.count("read").Add(1)
		return nil, map[string]any{"path": in.Path, "bytes": 42}, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "delete", Description: "Delete a file"}, func(ctx context.Context, req *mcp.CallToolRequest, in pathArgs) (*mcp.CallToolResult, map[string]any, error) {
		f.count("delete").Add(1)
		return nil, map[string]any{"deleted": in.Path}, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "Always fails"}, func(ctx context.Context, req *mcp.CallToolRequest, in pathArgs) (*mcp.CallToolResult, any, error) {
		f.count("fail").Add(1)
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "disk on fire"}}}, nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{JSONResponse: !sse})
	f.mu.Lock()
	f.handler, f.server = h, s
	f.mu.Unlock()
}

func filesCatalog(up, mcpURL string) string {
	return strings.Replace(testCatalog(up), `{"tools":[`, `{"mcp_servers":[{"id":"files","url":"`+mcpURL+`","rate_class":"light","price_usd":"0",
  "tools":{"delete":{"rate_class":"heavy","price_usd":"0.01"}}}],"tools":[`, 1)
}

// TestMCPUpstream_Import: an upstream MCP server's tools become toolgate
// tools (files/T) with the per-tool class and price, callable over MCP and
// over REST; tool results and tool errors pass through; the quota and the
// cost apply; a tool the upstream stops listing disappears on reload; a
// session the upstream lost is opened again without failing the call.
func TestMCPUpstream_Import(t *testing.T) {
	for _, sse := range []bool{false, true} {
		name := "JSON"
		if sse {
			name = "SSE"
		}
		t.Run(name, func(t *testing.T) {
			files := newFilesServer(t, sse)
			up := newUpstream(t)
			cat := filesCatalog(up.srv.URL, files.srv.URL)
			h := newHarnessWith(t, up, cat, nil)
			k := h.createKey(`{"policy":{"rate_class_quota":{"heavy":2}}}`)
			cs := h.mcpConnect(t, k.Secret, "")

			res, err := cs.ListTools(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			meta := map[string]map[string]any{}
			for _, tl := range res.Tools {
				meta[tl.Name] = tl.Meta
			}
			if meta["files/delete"]["toolgate/rate_class"] != "heavy" || meta["files/delete"]["toolgate/price_usd"] != "0.01" ||
				meta["files/read"]["toolgate/rate_class"] != "light" {
				t.Fatalf("imported tools: %v", meta)
			}

			r, sc := callMCP(t, cs, "files/read", map[string]any{"path": "/a"})
			if r.IsError || sc["path"] != "/a" || r.Meta["toolgate/cost_usd"] != "0.000" {
				t.Fatalf("files/read over MCP: isError %v %v %v", r.IsError, sc, r.Meta)
			}
			r, sc = callMCP(t, cs, "files/delete", map[string]any{"path": "/b"})
			if r.IsError || sc["deleted"] != "/b" || r.Meta["toolgate/cost_usd"] != "0.010" {
				t.Fatalf("files/delete: isError %v %v %v", r.IsError, sc, r.Meta)
			}

			// REST front end, same tool, same quota window (heavy: 2).
			resp, b := h.call(k.Secret, "files/delete", `{"path":"/c"}`)
			var rest struct {
				StructuredContent map[string]any `json:"structuredContent"`
			}
			json.Unmarshal(b, &rest)
			if resp.StatusCode != 200 || rest.StructuredContent["deleted"] != "/c" || resp.Header.Get("X-Cost-Usd") != "0.010" {
				t.Fatalf("files/delete over REST: %d %s cost %s", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
			}
			r, sc = callMCP(t, cs, "files/delete", map[string]any{"path": "/d"})
			if !r.IsError || sc["error"] != "Policy rate class quota exceeded" || files.count("delete").Load() != 2 {
				t.Fatalf("3rd heavy call: isError %v %v, upstream saw %d", r.IsError, sc, files.count("delete").Load())
			}

			// A tool error passes through and is not billed.
			r, _ = callMCP(t, cs, "files/fail", map[string]any{"path": "/x"})
			if !r.IsError || len(r.Content) == 0 || r.Content[0].(*mcp.TextContent).Text != "disk on fire" {
				t.Fatalf("files/fail: %+v", r)
			}

			// The upstream restarts: its sessions are gone; the next call
			// opens a new one.
			files.swap(sse)
			if r, sc := callMCP(t, cs, "files/read", map[string]any{"path": "/again"}); r.IsError || sc["path"] != "/again" {
				t.Fatalf("after the upstream restarted: isError %v %v", r.IsError, sc)
			}

			// The upstream stops listing delete: after a reload it is gone.
			files.mu.Lock()
			files.server.RemoveTools("delete")
			files.mu.Unlock()
			c, err := catalog.Decode([]byte(cat))
			if err != nil {
				t.Fatal(err)
			}
			if err := h.gw.Reload(c, mustPolicies(t, seedPolicies)); err != nil {
				t.Fatal(err)
			}
			for _, n := range toolNames(t, h.mcpConnect(t, k.Secret, "")) {
				if n == "files/delete" {
					t.Fatal("a tool the upstream no longer lists is still listed")
				}
			}
			if resp, _ := h.call(k.Secret, "files/delete", `{}`); resp.StatusCode != 404 {
				t.Fatalf("REST call to a tool no longer listed: %d, want 404", resp.StatusCode)
			}
		})
	}
}

// TestMCPUpstream_Dies: an upstream MCP server that is gone answers the
// caller with a JSON-RPC error naming the tool, recorded, unbilled; never
// a hang.
func TestMCPUpstream_Dies(t *testing.T) {
	files := newFilesServer(t, false)
	up := newUpstream(t)
	h := newHarnessWith(t, up, filesCatalog(up.srv.URL, files.srv.URL), nil)
	k := h.createKey(`{}`)
	cs := h.mcpConnect(t, k.Secret, "")
	files.srv.CloseClientConnections()
	files.srv.Close()
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "files/read", Arguments: map[string]any{"path": "/a"}})
	if err == nil || !strings.Contains(err.Error(), "files/read") {
		t.Fatalf("call to a dead upstream: %v, want a JSON-RPC error naming the tool", err)
	}
	recs := h.records("key:" + k.KeyID)
	if last := recs[len(recs)-1]; last.Outcome != "upstream_error" || last.Cost != 0 || last.Protocol != "mcp" {
		t.Fatalf("record %+v: want upstream_error, unbilled, protocol mcp", last)
	}
}
