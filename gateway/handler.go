package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
)

// Handler is the gateway's fasthttp request handler.
func (g *Gateway) Handler(ctx *fasthttp.RequestCtx) {
	if g.draining.Load() {
		defer ctx.SetConnectionClose() // after the answer's headers are final
	}
	st := g.state.Load()
	path := ctx.Path()
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

// unknownTool answers 404 for a path that is neither a tool nor part of
// the management API, and records it.
func (g *Gateway) unknownTool(ctx *fasthttp.RequestCtx, path []byte) {
	c := callPool.Get().(*call)
	defer func() { c.reset(); callPool.Put(c) }()
	c.start = g.now()
	c.reqID = g.appendRequestID(c.reqID)
	ctx.Response.Header.SetBytesKV(hdrRequestID, c.reqID)
	ctx.Response.Header.SetBytesKV(hdrPolicyAllowed, strFalse)
	p := sanitizePath(path)
	c.unrecorded = g.space.low.Load()
	b := append([]byte(`{"error":"Unknown tool","path":`), appendJSONString(nil, p)...)
	b = append(b, '}')
	// A caller with a valid key is identified: its 404s are its own
	// records, one per call, like all its calls.
	rh := &ctx.Request.Header
	if secret, ok := identity.Credential(rh.Peek("X-Api-Key"), rh.Peek("Authorization")); ok {
		if k, ok := g.keys.Authenticate(secret, c.start); ok {
			c.principal, c.tier = k.Principal, policy.TierAPIKey
		}
	}
	if c.principal == "" && !c.unrecorded && g.anon.absorb(remoteAddr(ctx), outUnknownTool, "no_route", "", 404, c.start) {
		// Past this source's burst: counted in aggregate, path not kept.
		g.metrics.calls.WithLabelValues("", outUnknownTool, "no_route").Inc()
		writeJSON(ctx, fasthttp.StatusNotFound, b)
		return
	}
	rec := g.callRecord(c, outUnknownTool, "no_route", 404)
	rec.Tool = p // the path asked for
	if err := g.wait(g.append(c, rec)); err != nil {
		g.ledgerFailed(ctx, c, err)
		return
	}
	g.observe(rec)
	writeJSON(ctx, fasthttp.StatusNotFound, b)
}

// isAdmin reports whether the request carries the admin token, compared
// in constant time over SHA-256 digests (so length is not leaked either).
func (g *Gateway) isAdmin(ctx *fasthttp.RequestCtx) bool {
	auth := ctx.Request.Header.Peek("Authorization")
	tok, ok := bytes.CutPrefix(auth, []byte("Bearer "))
	if !ok {
		return false
	}
	h := sha256.Sum256(bytes.TrimSpace(tok))
	return subtle.ConstantTimeCompare(h[:], g.adminHash[:]) == 1
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
