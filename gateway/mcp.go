package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"iter"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
)

// The MCP front end: POST /mcp, the Streamable HTTP transport of the Model
// Context Protocol, JSON-RPC 2.0. tools/list shows the catalog filtered by
// the caller's policy; tools/call runs the same stages as REST (run) and
// renders the outcome as a tool result. See docs/mcp.md.

// MCPPath is the MCP endpoint.
const MCPPath = "/mcp"

// mcpVersions are the protocol revisions served, newest first.
var mcpVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18"}

// mcpLegacy are the revisions with initialize and sessions.
var mcpLegacy = []string{"2025-11-25", "2025-06-18"}

// mcpStateless is the first revision without sessions: every request
// carries its version in params._meta and the Mcp-Method / Mcp-Name
// headers, and the server answers each one on its own.
const mcpStateless = "2026-07-28"

// Request _meta keys of the stateless revision.
const (
	metaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	metaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	metaServerInfo         = "io.modelcontextprotocol/serverInfo"
)

// JSON-RPC error codes.
const (
	rpcParseError     = -32700
	rpcInvalidRequest = -32600
	rpcMethodNotFound = -32601
	rpcInvalidParams  = -32602
	rpcInternalError  = -32603

	rpcHeaderMismatch     = -32020 // 2026-07-28
	rpcUnsupportedVersion = -32022 // 2026-07-28
)

// rpcMessage is one JSON-RPC 2.0 message as received.
type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  rpcParams       `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// isNotification: no id (a request without a response).
func (m *rpcMessage) isNotification() bool {
	return len(m.ID) == 0 || string(m.ID) == "null" && m.Method != ""
}

// isResponse: a client's answer to a server request (we send none).
func (m *rpcMessage) isResponse() bool { return m.Method == "" && (m.Result != nil || m.Error != nil) }

// mcpSession is a session of a stateful revision, bound to the principal
// that opened it: another caller presenting its id is told it does not
// exist.
type mcpSession struct {
	version   string
	principal string
	lastUsed  time.Time
	checked   time.Time // last compared with the shared store
	renewed   time.Time // last written there (its expiry renewed)
}

// mcpSessions holds the sessions of stateful revisions, bounded; idle ones
// expire. With shared set (a cluster's store, Options.Sessions) a session
// opened on one node is found on every node: a node that does not hold
// an id reads it from the store (under the SHA-256 of the id) and keeps
// it, checking it against the store again at most every
// mcpSessionRecheck, so that a DELETE on one node ends the session on all
// within that time; the node that uses a session renews its expiry there.
// A store that does not answer leaves each node with the sessions it
// holds.
type mcpSessions struct {
	shared AnswerStore
	log    *slog.Logger
	mu     sync.Mutex
	m      map[string]*mcpSession
}

const (
	mcpSessionIdle    = 24 * time.Hour
	mcpSessionMax     = 100_000
	mcpSessionRecheck = time.Second
	mcpSessionRenew   = time.Hour // how stale the store's expiry may get
	mcpSessionPrefix  = "mcp-session/"
)

func (s *mcpSessions) open(version, principal string, now time.Time) string {
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	ss := &mcpSession{version: version, principal: principal, lastUsed: now, checked: now, renewed: now}
	s.put(id, *ss)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]*mcpSession)
	}
	if len(s.m) >= mcpSessionMax {
		for k, v := range s.m {
			if now.Sub(v.lastUsed) > mcpSessionIdle || len(s.m) >= mcpSessionMax {
				delete(s.m, k)
			}
		}
	}
	s.m[id] = ss
	return id
}

// get returns the session id for principal, or nil when it does not exist
// (unknown, expired, closed, or another principal's).
func (s *mcpSessions) get(id, principal string, now time.Time) *mcpSession {
	s.mu.Lock()
	ss := s.m[id]
	if ss != nil && now.Sub(ss.lastUsed) > mcpSessionIdle {
		delete(s.m, id)
		ss = nil
	}
	if s.shared == nil || ss != nil && now.Sub(ss.checked) < mcpSessionRecheck {
		defer s.mu.Unlock()
		return ss.use(principal, now)
	}
	s.mu.Unlock()

	stored, state, err := s.read(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		return ss.use(principal, now) // the store did not answer: as held
	case state == storedClosed || state == storedNone && ss == nil:
		delete(s.m, id)
		return nil
	case state == storedNone:
		// Held here, not in the store (its write failed, or Redis lost
		// it): written again.
		ss.checked, ss.renewed = now, now
		go s.put(id, *ss)
		return ss.use(principal, now)
	case ss == nil:
		stored.checked, stored.renewed, stored.lastUsed = now, now, now
		if s.m == nil {
			s.m = make(map[string]*mcpSession)
		}
		if cur := s.m[id]; cur != nil {
			stored = cur
		} else if len(s.m) < mcpSessionMax {
			s.m[id] = stored
		}
		return stored.use(principal, now)
	}
	ss.checked = now
	if now.Sub(ss.renewed) >= mcpSessionRenew {
		ss.renewed = now
		go s.put(id, *ss)
	}
	return ss.use(principal, now)
}

// use returns ss, used now, when principal's; the caller holds s.mu.
func (ss *mcpSession) use(principal string, now time.Time) *mcpSession {
	if ss == nil || ss.principal != principal {
		return nil
	}
	ss.lastUsed = now
	return ss
}

func (s *mcpSessions) close(id, principal string, now time.Time) bool {
	ss := s.get(id, principal, now)
	if ss == nil {
		return false
	}
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
	if s.shared != nil {
		if err := s.shared.PutAnswer(mcpSessionKey(id), nil, mcpSessionIdle); err != nil {
			s.log.Warn("MCP session store: a closed session stays open on the other nodes until it is idle", "err", err)
		}
	}
	return true
}

func mcpSessionKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return mcpSessionPrefix + hex.EncodeToString(h[:])
}

// put writes a session to the shared store: "1", its version and its
// principal, tab-separated, for mcpSessionIdle.
func (s *mcpSessions) put(id string, ss mcpSession) {
	if s.shared == nil {
		return
	}
	if err := s.shared.PutAnswer(mcpSessionKey(id), []byte("1\t"+ss.version+"\t"+ss.principal), mcpSessionIdle); err != nil {
		s.log.Warn("MCP session store: the session is known on this node only", "err", err)
	}
}

// What the shared store holds for a session id.
const (
	storedNone   = iota // nothing: never written, or lost (Redis restarted)
	storedOpen          // the session
	storedClosed        // a DELETE's tombstone
)

// read looks id up in the shared store; an error when the store did not
// answer (logged).
func (s *mcpSessions) read(id string) (*mcpSession, int, error) {
	v, ok, err := s.shared.GetAnswer(mcpSessionKey(id))
	if err != nil {
		s.log.Warn("MCP session store", "err", err)
		return nil, storedNone, err
	}
	if !ok {
		return nil, storedNone, nil
	}
	f := strings.SplitN(string(v), "\t", 3)
	if len(f) != 3 || f[0] != "1" {
		return nil, storedClosed, nil
	}
	return &mcpSession{version: f[1], principal: f[2]}, storedOpen, nil
}

var (
	hdrMCPSession  = "Mcp-Session-Id"
	hdrMCPVersion  = "Mcp-Protocol-Version"
	hdrMCPMethod   = "Mcp-Method"
	hdrMCPName     = "Mcp-Name"
	strEventStream = []byte("text/event-stream")
)

// mcpExchange is one HTTP request to /mcp: its message and how to answer.
// mcpParams are the params fields any method served reads, decoded once.
type mcpParams struct {
	Name            string          `json:"name"`
	URI             string          `json:"uri"`
	Arguments       json.RawMessage `json:"arguments"`
	Meta            mcpMeta         `json:"_meta"`
	ProtocolVersion string          `json:"protocolVersion"`
}

// mcpMeta is the part of params._meta the gateway reads.
type mcpMeta struct {
	ProtocolVersion    *string         `json:"io.modelcontextprotocol/protocolVersion"`
	ClientCapabilities json.RawMessage `json:"io.modelcontextprotocol/clientCapabilities"`
	Payment            json.RawMessage `json:"x402/payment"`
	IdempotencyKey     json.RawMessage `json:"toolgate/idempotency-key"` // mcpreplay.go
}

// rpcParams decodes params in the same pass as the message: into
// mcpParams when they have its shape (ok), and never failing the message
// when they do not (the method then says what it wanted).
type rpcParams struct {
	present, ok bool
	mcpParams
}

func (p *rpcParams) UnmarshalJSON(b []byte) error {
	p.present = string(b) != "null"
	p.ok = !p.present || json.Unmarshal(b, &p.mcpParams) == nil
	return nil
}

type mcpExchange struct {
	ctx      *fasthttp.RequestCtx
	msg      rpcMessage
	params   *mcpParams // = &msg.Params.mcpParams
	paramsOK bool       // params absent, or of the shape read
	version  string
	modern   bool          // the stateless revision
	key      *identity.Key // the caller's key, authenticated; nil without one
	tok      *oauth.Token  // the caller's access token, verified; nil without one
	who      identity.Principal
	sse      bool // answer as text/event-stream
}

// serveMCP handles /mcp.
func (g *Gateway) serveMCP(ctx *fasthttp.RequestCtx, st *state) {
	ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
	switch {
	case ctx.IsPost():
	case ctx.IsDelete():
		g.mcpDelete(ctx)
		return
	default:
		// No server-initiated stream is offered: GET (and the rest) 405.
		ctx.Response.Header.Set("Allow", "POST, DELETE")
		writeRPCError(ctx, fasthttp.StatusMethodNotAllowed, nil, rpcInvalidRequest, "Method not allowed: POST JSON-RPC messages to /mcp")
		return
	}
	if !g.sameOrigin(ctx) {
		writeRPCError(ctx, fasthttp.StatusForbidden, nil, rpcInvalidRequest, "Forbidden: Origin not allowed")
		return
	}
	x := &mcpExchange{ctx: ctx}
	body := bytes.TrimSpace(ctx.PostBody())
	if len(body) > 0 && body[0] == '[' {
		writeRPCError(ctx, fasthttp.StatusBadRequest, nil, rpcInvalidRequest, "JSON-RPC batches are not supported: send one message per request")
		return
	}
	if err := decodeRPC(body, &x.msg); err != nil {
		writeRPCError(ctx, fasthttp.StatusBadRequest, nil, rpcParseError, "Parse error: the body is not one JSON-RPC message")
		return
	}
	m := &x.msg
	if m.JSONRPC != "2.0" || (m.Method == "" && !m.isResponse()) || !validRPCID(m.ID) {
		writeRPCError(ctx, fasthttp.StatusBadRequest, nil, rpcInvalidRequest, "Invalid Request: want a JSON-RPC 2.0 request, notification or response")
		return
	}
	accept := ctx.Request.Header.Peek("Accept")
	x.sse = bytes.Contains(accept, strEventStream) && !bytes.Contains(accept, strJSON)

	// The caller, on every request: a key that does not authenticate is
	// refused whatever the method.
	rh := &ctx.Request.Header
	k, ok := g.mcpCaller(ctx)
	if !ok {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="toolgate"`)
		writeRPCError(ctx, fasthttp.StatusUnauthorized, m.ID, rpcInvalidRequest, "Invalid API key")
		return
	}
	if k != nil {
		x.key, x.who = k, k.Who()
	} else {
		tok, ok := g.mcpToken(ctx, st, m.ID)
		switch {
		case !ok:
			return // refused and answered
		case tok != nil:
			x.tok, x.who = tok, tok.Who
		case st.auth != nil && !st.auth.Config.MCPAnonymous:
			g.mcpChallenge(ctx, st, m.ID)
			return
		}
	}

	x.params, x.paramsOK = &m.Params.mcpParams, m.Params.ok || !m.Params.present
	hv := string(rh.Peek(hdrMCPVersion))
	x.modern = hv >= mcpStateless || x.params.Meta.ProtocolVersion != nil
	if x.modern {
		if !g.mcpStatelessChecks(x, hv) {
			return
		}
	} else if m.Method == "initialize" {
		g.mcpInitialize(x)
		return
	} else if !g.mcpSession(x, hv) {
		return
	}
	if m.isResponse() || m.isNotification() {
		ctx.SetStatusCode(fasthttp.StatusAccepted)
		return
	}
	switch m.Method {
	case "ping":
		if !x.modern {
			g.writeRPCResult(x, map[string]any{})
			return
		}
	case "server/discover":
		if x.modern {
			g.writeRPCResult(x, map[string]any{
				"supportedVersions": mcpVersions,
				"capabilities":      map[string]any{"tools": map[string]any{}},
				"instructions":      mcpInstructions,
				"ttlMs":             3_600_000,
				"cacheScope":        "public",
			})
			return
		}
	case "tools/list":
		g.writeRPCResult(x, g.mcpToolsList(st, x))
		return
	case "tools/call":
		g.mcpToolsCall(st, x)
		return
	}
	msg := "Method not found: " + m.Method
	if strings.HasPrefix(m.Method, "resources/") || strings.HasPrefix(m.Method, "prompts/") || strings.HasPrefix(m.Method, "completion/") {
		msg += " (toolgate serves tools only)"
	}
	status := fasthttp.StatusOK
	if x.modern {
		status = fasthttp.StatusNotFound
	}
	writeRPC(ctx, status, rpcErrorBody(m.ID, rpcMethodNotFound, msg, nil), x.sse)
}

const mcpInstructions = "Tools governed by toolgate: policies, quotas, spend caps and x402 payments apply per call; each result's _meta carries toolgate/cost_usd and toolgate/request_id."

// sameOrigin guards against DNS rebinding: a request with an Origin
// header (browsers send one; MCP SDK clients do not) must come from the
// gateway's own origin, its Host or --public-url.
func (g *Gateway) sameOrigin(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.Peek("Origin")
	if len(origin) == 0 {
		return true
	}
	u, err := url.Parse(string(origin))
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, string(ctx.Host())) {
		return true
	}
	if g.opts.X402 != nil && g.opts.X402.Config.PublicURL != "" {
		if pu, err := url.Parse(g.opts.X402.Config.PublicURL); err == nil && strings.EqualFold(pu.Host, u.Host) {
			return true
		}
	}
	return false
}

// validRPCID: absent, null, a string or a number.
func validRPCID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	switch id[0] {
	case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return true
	}
	return false
}

// mcpStatelessChecks checks a request of the stateless revision: its
// version in _meta and in MCP-Protocol-Version, its client capabilities,
// and the Mcp-Method / Mcp-Name headers against the body. It answers and
// returns false when the request cannot go on.
func (g *Gateway) mcpStatelessChecks(x *mcpExchange, hv string) bool {
	m := &x.msg
	fail := func(code int, msg string, data any) bool {
		writeRPC(x.ctx, fasthttp.StatusBadRequest, rpcErrorBody(m.ID, code, msg, data), x.sse)
		return false
	}
	var mv string
	if v := x.params.Meta.ProtocolVersion; v != nil {
		mv = *v
	}
	switch {
	case mv == "":
		return fail(rpcInvalidParams, "Invalid params: _meta."+metaProtocolVersion+" is required", nil)
	case hv == "":
		return fail(rpcHeaderMismatch, "Header mismatch: MCP-Protocol-Version header is required", nil)
	case hv != mv:
		return fail(rpcHeaderMismatch, "Header mismatch: MCP-Protocol-Version header "+hv+" does not match _meta version "+mv, nil)
	case mv != mcpStateless:
		return fail(rpcUnsupportedVersion, "Unsupported protocol version "+mv,
			map[string]any{"supported": mcpVersions, "requested": mv})
	case !m.isNotification() && x.params.Meta.ClientCapabilities == nil:
		return fail(rpcInvalidParams, "Invalid params: _meta."+metaClientCapabilities+" is required", nil)
	}
	rh := &x.ctx.Request.Header
	if hm := string(rh.Peek(hdrMCPMethod)); hm != m.Method {
		return fail(rpcHeaderMismatch, "Header mismatch: Mcp-Method header '"+hm+"' does not match body value '"+m.Method+"'", nil)
	}
	if m.Method == "tools/call" || m.Method == "prompts/get" || m.Method == "resources/read" {
		field := "name"
		if m.Method == "resources/read" {
			field = "uri"
		}
		body := x.params.Name
		if field == "uri" {
			body = x.params.URI
		}
		hn, ok := decodeHeaderValue(string(rh.Peek(hdrMCPName)))
		if !ok || hn != body {
			return fail(rpcHeaderMismatch, "Header mismatch: Mcp-Name header '"+hn+"' does not match body value '"+body+"'", nil)
		}
	}
	x.version = mcpStateless
	return true
}

// decodeHeaderValue decodes the =?base64?…?= form of a header value.
func decodeHeaderValue(v string) (string, bool) {
	if inner, ok := strings.CutPrefix(v, "=?base64?"); ok {
		inner, ok = strings.CutSuffix(inner, "?=")
		if !ok {
			return v, false
		}
		b, err := base64.StdEncoding.DecodeString(inner)
		if err != nil {
			return v, false
		}
		return string(b), true
	}
	return v, true
}

// mcpSession checks a request of a stateful revision: its session, and
// MCP-Protocol-Version when sent. It answers and returns false when the
// request cannot go on.
func (g *Gateway) mcpSession(x *mcpExchange, hv string) bool {
	rh := &x.ctx.Request.Header
	if hv != "" && !legacyMCP(hv) {
		writeRPCError(x.ctx, fasthttp.StatusBadRequest, x.msg.ID, rpcInvalidRequest,
			"Bad Request: unsupported MCP-Protocol-Version "+hv+" (supported: "+strings.Join(mcpVersions, ", ")+")")
		return false
	}
	sid := string(rh.Peek(hdrMCPSession))
	if sid == "" {
		writeRPCError(x.ctx, fasthttp.StatusBadRequest, x.msg.ID, rpcInvalidRequest,
			"Bad Request: Mcp-Session-Id header is required (send initialize first, or use protocol version "+mcpStateless+")")
		return false
	}
	ss := g.mcp.get(sid, x.who.String(), g.now())
	if ss == nil {
		writeRPCError(x.ctx, fasthttp.StatusNotFound, x.msg.ID, rpcInvalidRequest, "Session not found")
		return false
	}
	if hv != "" && hv != ss.version {
		writeRPCError(x.ctx, fasthttp.StatusBadRequest, x.msg.ID, rpcInvalidRequest,
			"Bad Request: MCP-Protocol-Version "+hv+" differs from the session's "+ss.version)
		return false
	}
	x.version = ss.version
	return true
}

func legacyMCP(v string) bool {
	for _, s := range mcpLegacy {
		if s == v {
			return true
		}
	}
	return false
}

// mcpInitialize answers initialize (stateful revisions): the requested
// revision when served, else the newest stateful one; a session.
func (g *Gateway) mcpInitialize(x *mcpExchange) {
	p := x.params
	if !x.paramsOK {
		g.writeRPCErrorX(x, rpcInvalidParams, "Invalid params: initialize takes an object")
		return
	}
	if len(x.msg.ID) == 0 {
		writeRPCError(x.ctx, fasthttp.StatusBadRequest, nil, rpcInvalidRequest, "Invalid Request: initialize must be a request (with an id)")
		return
	}
	v := mcpLegacy[0]
	if legacyMCP(p.ProtocolVersion) {
		v = p.ProtocolVersion
	}
	x.version = v
	x.ctx.Response.Header.Set(hdrMCPSession, g.mcp.open(v, x.who.String(), g.now()))
	g.writeRPCResult(x, map[string]any{
		"protocolVersion": v,
		"capabilities":    map[string]any{"tools": map[string]any{"listChanged": false}},
		"serverInfo":      map[string]any{"name": "toolgate", "version": Version},
		"instructions":    mcpInstructions,
	})
}

// Version is the gateway's version, set by main.
var Version = "dev"

// mcpTool is a tools/list entry.
type mcpTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"inputSchema"`
	Meta        map[string]any  `json:"_meta,omitempty"`
}

var emptySchema = json.RawMessage(`{"type":"object"}`)

// mcpToolsList lists the tools the caller may call now: those its policy
// does not deny and whose rate class is not blocked. A caller without a
// key sees the priced tools an unknown wallet may pay for (with x402 on).
func (g *Gateway) mcpToolsList(st *state, x *mcpExchange) map[string]any {
	tier := st.tierOf(x.who)
	if x.who.IsZero() {
		tier = policy.TierUnknownWallet // who pays per call without a key
	}
	var eff *policy.Effective
	if x.tok != nil {
		eff, _, _, _ = st.tokenPolicy(x.tok, g.now(), g.keys) // it decided once already in serveMCP
	}
	if eff == nil {
		eff = st.effective(tier, x.who.String())
	}
	tools := make([]mcpTool, 0, len(st.cat.Tools))
	for _, t := range st.cat.Tools {
		if x.who.IsZero() && (t.Price == 0 || st.routes[t.Index].offer == nil) {
			continue // without a key only what can be paid per call
		}
		if ok, _ := eff.Decide(t); !ok || eff.Quota(t.RateClass) == 0 {
			continue
		}
		tools = append(tools, mcpTool{Name: t.ID, Description: t.Description, InputSchema: toolSchema(t),
			Meta: map[string]any{"toolgate/price_usd": t.Price.String(), "toolgate/rate_class": t.RateClass.String()}})
	}
	out := map[string]any{"tools": tools}
	if x.modern {
		// Filtered per caller: never cached for anyone else, and stale at
		// once (a policy may change any time).
		out["cacheScope"], out["ttlMs"] = "private", 0
	}
	return out
}

// toolSchema is the tool's discovery input_schema, or an empty object
// schema.
func toolSchema(t *catalog.Tool) json.RawMessage {
	if len(t.Discovery) == 0 {
		return emptySchema
	}
	var d struct {
		InputSchema json.RawMessage `json:"input_schema"`
	}
	if json.Unmarshal(t.Discovery, &d) != nil || len(d.InputSchema) == 0 || d.InputSchema[0] != '{' {
		return emptySchema
	}
	return d.InputSchema
}

// mcpHeaders is what an upstream of an MCP call sees of the caller's
// headers: only that the body is JSON.
type mcpHeaders struct{}

func (mcpHeaders) All() iter.Seq2[[]byte, []byte] { return mcpHeaderSeq }

var (
	hdrContentType = []byte("Content-Type")
	mcpHeaderSeq   = func(yield func([]byte, []byte) bool) { yield(hdrContentType, strJSON) }
)

func (mcpHeaders) Peek(string) []byte { return nil }

// mcpToolsCall runs tools/call through the stages and renders the outcome
// as a tool result.
func (g *Gateway) mcpToolsCall(st *state, x *mcpExchange) {
	p := x.params
	if !x.paramsOK || p.Name == "" {
		g.writeRPCErrorX(x, rpcInvalidParams, "Invalid params: tools/call takes {\"name\": string, \"arguments\": object}")
		return
	}
	if len(p.Arguments) > 0 && p.Arguments[0] != '{' && string(p.Arguments) != "null" {
		g.writeRPCErrorX(x, rpcInvalidParams, "Invalid params: arguments must be an object")
		return
	}
	t := st.cat.ByID(p.Name)
	if t == nil {
		g.mcpUnknownTool(x, p.Name)
		return
	}
	c := acquireCall()
	defer releaseCall(c)
	c.start = g.now()
	c.st, c.rt = st, st.routes[t.Index]
	c.reqID = g.appendRequestID(c.reqID)
	r := &c.req
	r.protocol = "mcp"
	r.method = mcpMethod(t)
	r.body = p.Arguments
	if len(r.body) == 0 || string(r.body) == "null" {
		r.body = []byte(`{}`)
	}
	r.header = mcpHeaders{}
	r.source = g.clientAddr(x.ctx)
	r.tls = g.viaTLS(x.ctx)
	r.key, r.hasKey = x.key, x.key != nil // authenticated once, in serveMCP
	r.tok = x.tok
	if pay := p.Meta.Payment; isPaymentPayload(pay) {
		r.payment, r.paymentJSON = pay, true
	}
	k, ok := mcpIdempotencyKey(p.Meta.IdempotencyKey)
	if !ok {
		g.writeRPCErrorX(x, rpcInvalidParams, `Invalid params: _meta["toolgate/idempotency-key"] must be a string`)
		return
	}
	r.idemKey = k
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	c.upResp = resp
	d := g.run(c)
	if d != nil && d.Replay != nil {
		g.writeRPCResult(x, g.mcpReplayResult(c, d.Replay))
		return
	}
	if g.mcpInsufficientScope(x, st, c, d) {
		return
	}
	if d != nil && d.Outcome == outUpstreamError {
		// The tool's upstream failed: a protocol error naming the tool
		// (the call was recorded and not billed).
		writeRPC(x.ctx, fasthttp.StatusOK, rpcErrorBody(x.msg.ID, rpcInternalError,
			"Tool "+t.ID+": "+d.Message, json.RawMessage(d.AppendJSON(nil))), x.sse)
		return
	}
	if d == nil && c.mcpResult || d != nil && d.Offer != nil {
		g.writeRPCResult(x, g.mcpResult(c, d))
		return
	}
	g.writeToolResult(x, c, d)
}

// writeToolResult answers x with the tool result of c (appendToolResult).
func (g *Gateway) writeToolResult(x *mcpExchange, c *call, d *Decision) {
	b := c.buf[:0]
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, rpcID(x.msg.ID)...)
	b = append(b, `,"result":`...)
	b = g.appendToolResult(b, x, c, d)
	c.buf = append(b, '}')
	writeRPC(x.ctx, fasthttp.StatusOK, c.buf, x.sse)
}

// appendToolResult appends the tools/call result of a call answered by a
// REST upstream (d nil) or refused by d (not x402): the same as mcpResult,
// written without building maps (the common case, kept cheap).
func (g *Gateway) appendToolResult(b []byte, x *mcpExchange, c *call, d *Decision) []byte {
	var text []byte
	var structured []byte
	isError := true
	if d == nil {
		text = c.upResp.Body()
		if c.body != nil {
			text = c.body.b
		}
		if t := bytes.TrimSpace(text); len(t) > 0 && t[0] == '{' && json.Valid(t) {
			structured = t
		}
		isError = c.upStatus >= 400
	} else {
		n := len(b)
		b = d.AppendJSON(b)
		text = append([]byte(nil), b[n:]...)
		b = b[:n]
		structured = text
	}
	b = append(b, `{"content":[{"type":"text","text":`...)
	b = appendJSONString(b, string(text))
	b = append(b, `}],"isError":`...)
	if isError {
		b = append(b, "true"...)
	} else {
		b = append(b, "false"...)
	}
	if structured != nil {
		b = append(b, `,"structuredContent":`...)
		b = append(b, structured...)
	}
	b = append(b, `,"_meta":{"toolgate/cost_usd":"`...)
	b = c.cost.AppendDecimal(b, 3)
	b = append(b, `","toolgate/request_id":`...)
	b = appendJSONString(b, string(c.reqID))
	if d == nil {
		b = append(b, `,"toolgate/upstream_status":`...)
		b = strconv.AppendInt(b, int64(c.upStatus), 10)
	}
	if c.pay != nil && c.pay.settled && d != ledgerUnavailable {
		pr, _ := json.Marshal(c.pay.result.Response())
		b = append(b, `,"x402/payment-response":`...)
		b = append(b, pr...)
	}
	if x.modern {
		b = append(b, `,"`+metaServerInfo+`":{"name":"toolgate","version":`...)
		b = appendJSONString(b, Version)
		b = append(b, `}},"resultType":"complete"}`...)
		return b
	}
	return append(b, `}}`...)
}

// isPaymentPayload: an object with a non-zero x402Version and a payload,
// as the x402 MCP transport counts a payment present; anything else is no
// payment (answered with the requirements again).
func isPaymentPayload(raw json.RawMessage) bool {
	var p struct {
		X402Version int             `json:"x402Version"`
		Payload     json.RawMessage `json:"payload"`
	}
	return len(raw) > 0 && raw[0] == '{' && json.Unmarshal(raw, &p) == nil && p.X402Version != 0 && len(p.Payload) > 0 && string(p.Payload) != "null"
}

// mcpMethod is the method an MCP call uses toward a REST upstream: POST
// when the tool takes it, else its first method.
func mcpMethod(t *catalog.Tool) []byte {
	for _, m := range t.Methods {
		if m == "POST" {
			return []byte("POST")
		}
	}
	if len(t.Methods) > 0 {
		return []byte(t.Methods[0])
	}
	return []byte("POST")
}

// mcpResult renders a call's outcome as a tools/call result: the
// upstream's answer (JSON objects also as structuredContent), or the
// decision's body as a tool error (isError) with the same fields as REST;
// the cost and request id in _meta, and the x402 receipt.
func (g *Gateway) mcpResult(c *call, d *Decision) map[string]any {
	meta := map[string]any{
		"toolgate/cost_usd":   string(c.cost.AppendDecimal(nil, 3)),
		"toolgate/request_id": string(c.reqID),
	}
	if c.pay != nil && c.pay.settled && d != ledgerUnavailable {
		meta["x402/payment-response"] = c.pay.result.Response()
	}
	var text []byte
	var structured json.RawMessage
	isError := true
	switch {
	case d == nil && c.mcpResult:
		// An upstream MCP server's result passes through, with the
		// gateway's _meta added to its own.
		return withMeta(c.body.b, meta)
	case d == nil:
		text = c.upResp.Body()
		if c.body != nil {
			text = c.body.b
		}
		if t := bytes.TrimSpace(text); len(t) > 0 && t[0] == '{' && json.Valid(t) {
			structured = t
		}
		isError = c.upStatus >= 400
		meta["toolgate/upstream_status"] = c.upStatus
	case d.Offer != nil:
		// A refused or failed payment: the requirements again, with the
		// reason, naming the MCP endpoint and the tool's MCP Bazaar
		// declaration; no receipt (the x402 MCP transport sends none then).
		raw := d.Offer.MCPPaymentRequired(d.PayReason)
		text, structured = raw, raw
	default:
		text = d.AppendJSON(nil)
		structured = text
	}
	out := map[string]any{
		"content": []map[string]any{{"type": "text", "text": string(text)}},
		"isError": isError,
		"_meta":   meta,
	}
	if structured != nil {
		out["structuredContent"] = structured
	}
	return out
}

// mcpUnknownTool answers tools/call for a name the catalog does not have,
// recorded like a REST 404.
func (g *Gateway) mcpUnknownTool(x *mcpExchange, name string) {
	c := acquireCall()
	defer releaseCall(c)
	c.start = g.now()
	c.reqID = g.appendRequestID(c.reqID)
	c.req.protocol = "mcp"
	c.req.source = g.clientAddr(x.ctx)
	c.st = g.state.Load()
	c.who, c.tier = x.who, c.st.tierOf(x.who)
	tool := sanitizePath([]byte(name))
	c.unrecorded = g.space.low.Load()
	d := g.recordRefused(c, c.decide(404, outUnknownTool, "no_route", "Unknown tool").str("tool", tool), "", tool)
	g.writeToolResult(x, c, d)
}

// mcpCaller authenticates an MCP request's API key, on every request: the
// key (nil when none is presented), and false for a key that does not
// authenticate.
func (g *Gateway) mcpCaller(ctx *fasthttp.RequestCtx) (*identity.Key, bool) {
	rh := &ctx.Request.Header
	secret, present := identity.Credential(rh.Peek("X-Api-Key"), rh.Peek("Authorization"))
	if !present {
		return nil, true
	}
	k, ok := g.keys.Authenticate(secret, g.now())
	if !ok {
		return nil, false
	}
	return k, true
}

// mcpDelete ends a session.
func (g *Gateway) mcpDelete(ctx *fasthttp.RequestCtx) {
	k, ok := g.mcpCaller(ctx)
	if !ok {
		writeRPCError(ctx, fasthttp.StatusUnauthorized, nil, rpcInvalidRequest, "Invalid API key")
		return
	}
	var who identity.Principal
	if k != nil {
		who = k.Who()
	} else if tok, ok := g.mcpToken(ctx, g.state.Load(), nil); !ok {
		return
	} else if tok != nil {
		who = tok.Who
	}
	if !g.mcp.close(string(ctx.Request.Header.Peek(hdrMCPSession)), who.String(), g.now()) {
		writeRPCError(ctx, fasthttp.StatusNotFound, nil, rpcInvalidRequest, "Session not found")
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// writeRPCResult answers x's request with result; in the stateless
// revision every result says it is complete and who answered.
func (g *Gateway) writeRPCResult(x *mcpExchange, result map[string]any) {
	if x.modern {
		result["resultType"] = "complete"
		meta, _ := result["_meta"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
			result["_meta"] = meta
		}
		meta[metaServerInfo] = map[string]any{"name": "toolgate", "version": Version}
	}
	res, err := json.Marshal(result)
	if err != nil {
		g.log.Error("encode MCP result", "err", err)
		g.writeRPCErrorX(x, rpcInternalError, "Internal error")
		return
	}
	b := make([]byte, 0, len(res)+64)
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, rpcID(x.msg.ID)...)
	b = append(b, `,"result":`...)
	b = append(b, res...)
	b = append(b, '}')
	writeRPC(x.ctx, fasthttp.StatusOK, b, x.sse)
}

func (g *Gateway) writeRPCErrorX(x *mcpExchange, code int, msg string) {
	writeRPC(x.ctx, fasthttp.StatusOK, rpcErrorBody(x.msg.ID, code, msg, nil), x.sse)
}

// writeRPCError answers with a JSON-RPC error at an HTTP status.
func writeRPCError(ctx *fasthttp.RequestCtx, status int, id json.RawMessage, code int, msg string) {
	writeRPC(ctx, status, rpcErrorBody(id, code, msg, nil), false)
}

func rpcErrorBody(id json.RawMessage, code int, msg string, data any) []byte {
	e := map[string]any{"code": code, "message": msg}
	if data != nil {
		e["data"] = data
	}
	eb, _ := json.Marshal(e)
	b := append([]byte(`{"jsonrpc":"2.0","id":`), rpcID(id)...)
	b = append(b, `,"error":`...)
	b = append(b, eb...)
	return append(b, '}')
}

func rpcID(id json.RawMessage) []byte {
	if len(id) == 0 {
		return []byte("null")
	}
	return id
}

// writeRPC writes a JSON-RPC message as JSON, or as one server-sent event
// when the client accepts only event streams.
func writeRPC(ctx *fasthttp.RequestCtx, status int, msg []byte, sse bool) {
	ctx.Response.SetStatusCode(status)
	if !sse {
		ctx.Response.Header.SetContentTypeBytes(strJSON)
		ctx.Response.SetBody(msg)
		return
	}
	ctx.Response.Header.SetContentTypeBytes(strEventStream)
	b := append([]byte("event: message\ndata: "), msg...)
	ctx.Response.SetBody(append(b, "\n\n"...))
}

// withMeta is an upstream MCP server's result (its JSON) with the
// gateway's _meta entries added to its own.
func withMeta(result []byte, meta map[string]any) map[string]any {
	var out map[string]any
	json.Unmarshal(result, &out)
	if out == nil {
		out = map[string]any{}
	}
	if m, ok := out["_meta"].(map[string]any); ok {
		for k, v := range meta {
			m[k] = v
		}
	} else {
		out["_meta"] = meta
	}
	return out
}
