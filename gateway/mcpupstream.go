package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
)

// Upstream MCP servers (tools.json "mcp_servers"). The gateway keeps its
// own session with each: initialized once (2025-11-25, or what the server
// answers), reused by every call, initialized again when the server says
// the session is gone (404). tools/list at start and on reload decides
// which of the server's tools exist; tools/call goes through the same
// upstream exchange as REST tools (connection reuse, response limits,
// budget), with the call's arguments.

// mcpUpstream is the gateway's client side of one upstream MCP server.
type mcpUpstream struct {
	id, url string
	client  *upstreamClient
	uri     string

	initMu  sync.Mutex // one initialize at a time
	mu      sync.Mutex
	session string // Mcp-Session-Id, "" before initialize (or when the server issues none)
	version string // negotiated protocol version
	ready   bool
	ids     atomic.Int64
}

var errMCPSessionGone = errors.New("gateway: upstream MCP session expired")

// mcpUp returns the client of upstream MCP server id, creating it.
func (g *Gateway) mcpUp(s *catalog.MCPServer) (*mcpUpstream, error) {
	g.mcpUpsMu.Lock()
	defer g.mcpUpsMu.Unlock()
	if up := g.mcpUps[s.ID]; up != nil && up.url == s.URL {
		return up, nil
	}
	uc, uri, err := g.clientFor(s.URL, s.Defaults.IdleTimeout)
	if err != nil {
		return nil, err
	}
	up := &mcpUpstream{id: s.ID, url: s.URL, client: uc, uri: uri}
	if g.mcpUps == nil {
		g.mcpUps = make(map[string]*mcpUpstream)
	}
	g.mcpUps[s.ID] = up
	return up, nil
}

// rpc sends one JSON-RPC request to the server on its session and returns
// the result, or the server's JSON-RPC error as an error.
func (up *mcpUpstream) rpc(method string, params any, timeout time.Duration) (json.RawMessage, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	id := up.ids.Add(1)
	up.prepare(req, method, id, params)
	if err := up.do(req, resp, timeout); err != nil {
		return nil, err
	}
	if resp.StatusCode() == fasthttp.StatusNotFound && up.sessionOf(req) != "" {
		return nil, errMCPSessionGone
	}
	if method == "notifications/initialized" {
		return nil, nil
	}
	return parseRPCResponse(resp, id)
}

// prepare builds a JSON-RPC request to the server.
func (up *mcpUpstream) prepare(req *fasthttp.Request, method string, id int64, params any) {
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(up.uri)
	req.Header.SetContentTypeBytes(strJSON)
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.SetUserAgentBytes(strToolgate)
	up.mu.Lock()
	if up.session != "" {
		req.Header.Set(hdrMCPSession, up.session)
	}
	if up.version != "" {
		req.Header.Set(hdrMCPVersion, up.version)
	}
	up.mu.Unlock()
	msg := map[string]any{"jsonrpc": "2.0", "method": method}
	if method != "notifications/initialized" {
		msg["id"] = id
	}
	if params != nil {
		msg["params"] = params
	}
	b, _ := json.Marshal(msg)
	req.SetBodyRaw(b)
}

func (up *mcpUpstream) sessionOf(req *fasthttp.Request) string {
	return string(req.Header.Peek(hdrMCPSession))
}

// do sends a session-management request (initialize, notifications,
// tools/list: safe to send twice) and, when a pooled connection turns out
// closed before answering, once more on a fresh one.
func (up *mcpUpstream) do(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	err := up.client.pooled.DoTimeout(req, resp, timeout)
	if err != nil && !isTimeout(err) && !errors.Is(err, fasthttp.ErrTimeout) {
		resp.Reset()
		req.SetConnectionClose()
		err = up.client.fresh.DoTimeout(req, resp, timeout)
	}
	return err
}

// isReady reports whether there is a session.
func (up *mcpUpstream) isReady() bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.ready
}

// ensure initializes the session when there is none; concurrent callers
// wait for one initialize.
func (up *mcpUpstream) ensure(timeout time.Duration) error {
	if up.isReady() {
		return nil
	}
	up.initMu.Lock()
	defer up.initMu.Unlock()
	if up.isReady() {
		return nil
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	up.mu.Lock()
	up.session, up.version = "", ""
	up.mu.Unlock()
	id := up.ids.Add(1)
	up.prepare(req, "initialize", id, map[string]any{
		"protocolVersion": mcpLegacy[0],
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": "toolgate", "version": Version},
	})
	if err := up.do(req, resp, timeout); err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	res, err := parseRPCResponse(resp, id)
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	var ir struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if json.Unmarshal(res, &ir) != nil || ir.ProtocolVersion == "" {
		return fmt.Errorf("initialize: no protocolVersion in the result")
	}
	up.mu.Lock()
	up.session = string(resp.Header.Peek(hdrMCPSession))
	up.version = ir.ProtocolVersion
	up.mu.Unlock()
	if _, err := up.rpc("notifications/initialized", nil, timeout); err != nil {
		return fmt.Errorf("notifications/initialized: %w", err)
	}
	up.mu.Lock()
	up.ready = true // only now may calls use the session
	up.mu.Unlock()
	return nil
}

// reset forgets the session sid (all sessions when sid is ""), so that the
// next call initializes again; a newer session is kept.
func (up *mcpUpstream) reset(sid ...string) {
	up.mu.Lock()
	if len(sid) == 0 || sid[0] == up.session {
		up.ready, up.session = false, ""
	}
	up.mu.Unlock()
}

// listTools lists the server's tools (every page).
func (up *mcpUpstream) listTools(timeout time.Duration) ([]catalog.ImportedTool, error) {
	var out []catalog.ImportedTool
	cursor := ""
	for page := 0; page < 100; page++ {
		var params any
		if cursor != "" {
			params = map[string]any{"cursor": cursor}
		}
		res, err := up.rpc("tools/list", params, timeout)
		if err != nil {
			return nil, fmt.Errorf("tools/list: %w", err)
		}
		var lr struct {
			Tools []struct {
				Name        string          `json:"name"`
				Description string          `json:"description"`
				InputSchema json.RawMessage `json:"inputSchema"`
			} `json:"tools"`
			NextCursor string `json:"nextCursor"`
		}
		if err := json.Unmarshal(res, &lr); err != nil {
			return nil, fmt.Errorf("tools/list: result is not a tool list")
		}
		for _, t := range lr.Tools {
			out = append(out, catalog.ImportedTool{Name: t.Name, Description: t.Description, InputSchema: t.InputSchema})
		}
		if lr.NextCursor == "" {
			return out, nil
		}
		cursor = lr.NextCursor
	}
	return out, nil
}

// rpcError is a JSON-RPC error answered by an upstream MCP server.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *rpcError) Error() string { return "JSON-RPC error " + strconv.Itoa(e.Code) + ": " + e.Message }

// parseRPCResponse finds the response with id in an answer given as JSON
// or as an event stream, and returns its result or its error.
func parseRPCResponse(resp *fasthttp.Response, id int64) (json.RawMessage, error) {
	if sc := resp.StatusCode(); sc != fasthttp.StatusOK {
		return nil, fmt.Errorf("HTTP %d", sc)
	}
	body := resp.Body()
	want := strconv.FormatInt(id, 10)
	try := func(msg []byte) (json.RawMessage, error, bool) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *rpcError       `json:"error"`
		}
		if json.Unmarshal(msg, &m) != nil || string(m.ID) != want {
			return nil, nil, false
		}
		if m.Error != nil {
			return nil, m.Error, true
		}
		return m.Result, nil, true
	}
	if bytes.HasPrefix(resp.Header.ContentType(), strEventStream) {
		for _, line := range bytes.Split(body, []byte("\n")) {
			if data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("data:")); ok {
				if res, err, ok := try(bytes.TrimSpace(data)); ok {
					return res, err
				}
			}
		}
		return nil, fmt.Errorf("no response in the event stream")
	}
	if res, err, ok := try(body); ok {
		return res, err
	}
	return nil, fmt.Errorf("not a JSON-RPC response to request %s", want)
}

// importMCP lists the tools of cat's MCP servers and returns the catalog
// with them. A server that cannot be reached contributes no tools (logged,
// tried again at the next reload).
func (g *Gateway) importMCP(cat *catalog.Catalog) *catalog.Catalog {
	if len(cat.MCPServers) == 0 {
		return cat
	}
	listed := map[string][]catalog.ImportedTool{}
	for _, s := range cat.MCPServers {
		up, err := g.mcpUp(s)
		if err == nil {
			up.reset()
			if err = up.ensure(s.Defaults.Timeout); err == nil {
				listed[s.ID], err = up.listTools(s.Defaults.Timeout)
			}
		}
		if err != nil {
			g.log.Error("MCP server not imported: its tools are unavailable until the next reload", "server", s.ID, "err", err)
			continue
		}
		g.log.Info("MCP server imported", "server", s.ID, "tools", len(listed[s.ID]))
	}
	out, skipped := cat.WithImports(listed)
	for _, sk := range skipped {
		g.log.Warn("MCP tool not imported", "problem", sk)
	}
	return out
}

// upstreamMCP is the upstream stage for a tool of an upstream MCP server:
// tools/call on the gateway's session, once more on a new session if the
// server had dropped it (it did not run the call then).
func (g *Gateway) upstreamMCP(c *call) *Decision {
	t := c.rt.tool
	up, err := g.mcpUpFor(t.MCPServer)
	if err != nil {
		return g.upstreamFailure(c, err)
	}
	deadline := time.Now().Add(t.Timeout)
	t0 := g.now()
	defer func() {
		c.upLatency = g.now().Sub(t0)
		c.rt.upstreamSeconds.Observe(seconds(c.upLatency))
	}()
	for attempt := 0; ; attempt++ {
		if err := up.ensure(time.Until(deadline)); err != nil {
			g.log.Warn("upstream MCP session", "request_id", string(c.reqID), "server", up.id, "err", err)
			return g.mcpUpstreamFailed(c, "upstream_mcp_unavailable", "Upstream MCP server unavailable")
		}
		req := fasthttp.AcquireRequest()
		id := up.ids.Add(1)
		up.prepare(req, "tools/call", id, map[string]any{"name": t.MCPTool, "arguments": json.RawMessage(c.req.body)})
		err := g.exchange(c, req, c.upResp)
		sent := up.sessionOf(req)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			return g.upstreamFailure(c, err)
		}
		if c.upResp.StatusCode() == fasthttp.StatusNotFound && sent != "" && attempt == 0 {
			up.reset(sent) // that session is gone; the call did not run
			continue
		}
		if c.body != nil {
			c.upResp.SetBodyRaw(c.body.b)
		}
		res, err := parseRPCResponse(c.upResp, id)
		var re *rpcError
		switch {
		case errors.As(err, &re):
			g.log.Warn("upstream MCP server refused tools/call", "request_id", string(c.reqID), "tool", t.ID, "code", re.Code, "message", re.Message)
			return g.mcpUpstreamFailed(c, "upstream_mcp_error", "Upstream MCP server refused the call")
		case err != nil:
			g.log.Warn("upstream MCP answer", "request_id", string(c.reqID), "tool", t.ID, "err", err)
			return g.mcpUpstreamFailed(c, "upstream_bad_response", "Upstream MCP server sent an invalid answer")
		}
		var r struct {
			IsError bool `json:"isError"`
		}
		if json.Unmarshal(res, &r) != nil {
			return g.mcpUpstreamFailed(c, "upstream_bad_response", "Upstream MCP server sent an invalid answer")
		}
		c.upStatus = fasthttp.StatusOK
		if r.IsError {
			c.upStatus = fasthttp.StatusUnprocessableEntity // a tool error: not billed
		}
		// The answer is the tool result; nothing of the upstream's
		// transport (session, event stream) passes on.
		c.upResp.ResetBody()
		c.body.release()
		c.body = &bodyBuf{b: res}
		c.upResp.Header.Reset()
		c.upResp.Header.SetContentTypeBytes(strJSON)
		c.mcpResult = true
		return nil
	}
}

func (g *Gateway) mcpUpstreamFailed(c *call, reason, msg string) *Decision {
	return c.decide(502, outUpstreamError, reason, msg).str("tool", c.rt.tool.ID)
}

// mcpUpFor returns the client of the MCP server with id.
func (g *Gateway) mcpUpFor(id string) (*mcpUpstream, error) {
	g.mcpUpsMu.Lock()
	defer g.mcpUpsMu.Unlock()
	if up := g.mcpUps[id]; up != nil {
		return up, nil
	}
	return nil, fmt.Errorf("gateway: no MCP server %q", id)
}
