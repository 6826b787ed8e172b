package gateway

import (
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/x402"
)

// Handler is the gateway's fasthttp request handler.
func (g *Gateway) Handler(ctx *fasthttp.RequestCtx) {
	if g.draining.Load() {
		defer ctx.SetConnectionClose() // after the answer's headers are final
	}
	st := g.state.Load()
	path := ctx.Path()
	if string(path) == MCPPath {
		g.serveMCP(ctx, st)
		return
	}
	if p := string(path); strings.HasPrefix(p, wellKnownResource) {
		g.serveResourceMetadata(ctx, st, p)
		return
	}
	if rt := st.route(path); rt != nil {
		if ctx.IsOptions() {
			preflight(ctx, rt)
			return
		}
		g.serveTool(ctx, st, rt)
		return
	}
	if g.serveManagement(ctx, st, path) {
		return
	}
	g.unknownTool(ctx, path)
}

func preflight(ctx *fasthttp.RequestCtx, rt *route) {
	h := &ctx.Response.Header
	h.SetBytesKV(hdrACAO, strStar)
	h.Set("Access-Control-Allow-Methods", rt.allow+", OPTIONS")
	h.SetBytesKV([]byte("Access-Control-Allow-Headers"), strAllowHeaders)
	h.SetBytesKV(hdrACEH, strExposeHeader)
	h.Set("Access-Control-Max-Age", "600")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// serveTool is the REST front end of a tool call: it fills the request
// model from the HTTP request, runs the stages and renders the outcome.
func (g *Gateway) serveTool(ctx *fasthttp.RequestCtx, st *state, rt *route) {
	c := acquireCall()
	defer releaseCall(c)
	c.start = g.now()
	c.st, c.rt = st, rt
	c.reqID = g.appendRequestID(c.reqID)
	g.restRequest(ctx, &c.req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	c.upResp = resp
	d := g.run(c)
	g.renderREST(ctx, c, d)
}

// restRequest fills r from a REST tool call.
func (g *Gateway) restRequest(ctx *fasthttp.RequestCtx, r *request) {
	rh := &ctx.Request.Header
	r.protocol = "rest"
	r.method = ctx.Method()
	r.body = ctx.Request.Body()
	r.query = ctx.URI().QueryString()
	r.header = rh
	r.source = g.clientAddr(ctx)
	r.tls = g.viaTLS(ctx)
	if k := rh.Peek("X-Api-Key"); len(k) > 0 {
		r.apiKey, r.hasKey = k, true
		return // a key is who the caller is; a payment beside it is not read
	}
	switch form, tok := identity.Bearer(rh.Peek("Authorization")); form {
	case identity.BearerAPIKey:
		r.apiKey, r.hasKey = tok, true
		return
	case identity.BearerJWT, identity.BearerOpaque:
		r.token = tok // an access token, when auth.json is configured (tokenAuth)
	}
	if v := rh.Peek(x402.HeaderPaymentSignature); len(v) > 0 {
		r.payment, r.paymentVersion = v, 2
	} else if v := rh.Peek(x402.HeaderXPayment); len(v) > 0 {
		r.payment, r.paymentVersion = v, 1
	}
}

// remoteAddr is the address of the connection's peer.
func remoteAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}

// unknownTool answers 404 for a path that is neither a tool nor part of
// the management API, and records it. A caller with a valid key is
// identified: its 404s are its own records, one per call, like all its
// calls; an unidentified one's are counted past their burst (anon.go).
func (g *Gateway) unknownTool(ctx *fasthttp.RequestCtx, path []byte) {
	c := acquireCall()
	defer releaseCall(c)
	c.start = g.now()
	c.st = g.state.Load()
	c.reqID = g.appendRequestID(c.reqID)
	ctx.Response.Header.SetBytesKV(hdrRequestID, c.reqID)
	ctx.Response.Header.SetBytesKV(hdrPolicyAllowed, strFalse)
	p := sanitizePath(path)
	c.unrecorded = g.space.low.Load()
	g.restRequest(ctx, &c.req)
	for _, a := range []authenticator{keyAuth{g.keys}, tokenAuth{g}} {
		if id, ok, refused, err := a.authenticate(c); ok && refused == nil && err == nil && !id.who.IsZero() {
			c.who, c.tier = id.who, id.tier
			break
		}
	}
	// Decided after the authenticators: a refusal of theirs is built in c.dec too.
	d := c.decide(404, outUnknownTool, "no_route", "Unknown tool").str("path", p)
	d = g.recordRefused(c, d, "", p) // the record keeps the path asked for
	c.buf = d.AppendJSON(c.buf[:0])
	writeJSON(ctx, d.Status, c.buf)
}

// sanitizePath returns a request path fit for a record and a JSON answer:
// at most 512 bytes, NUL and other control bytes replaced by U+FFFD (a
// ledger index key cannot hold NUL; a log line should not hold controls).
func sanitizePath(path []byte) string {
	if len(path) > 512 {
		path = path[:512]
	}
	clean := true
	for _, c := range path {
		if c < 0x20 || c == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return string(path)
	}
	b := make([]byte, 0, len(path)+8)
	for _, c := range path {
		if c < 0x20 || c == 0x7f {
			b = append(b, "\uFFFD"...)
			continue
		}
		b = append(b, c)
	}
	return string(b)
}
