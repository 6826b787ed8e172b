package gateway

import (
	"errors"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
)

// MCP authorization (2025-06-18 and later; docs/oauth.md): the MCP
// endpoint is an OAuth 2.1 resource server. A request without
// credentials, when auth.json is configured, is answered 401 with
// WWW-Authenticate: Bearer resource_metadata="…/.well-known/
// oauth-protected-resource/mcp", where clients discover the issuers; a
// token that does not verify gets the same challenge with
// error="invalid_token"; a call the token's scopes do not reach gets 403
// error="insufficient_scope" with the scopes that would.

// mcpToken verifies the access token of an MCP request, when auth.json is
// configured and the request presents one. It answers the request (and
// records the refusal) and returns false when the token is refused; a
// request without a token gets a nil token and true.
func (g *Gateway) mcpToken(ctx *fasthttp.RequestCtx, st *state, id []byte) (*oauth.Token, bool) {
	form, tok := identity.Bearer(ctx.Request.Header.Peek("Authorization"))
	if st.auth == nil || form != identity.BearerJWT && form != identity.BearerOpaque {
		return nil, true
	}
	c := acquireCall()
	defer releaseCall(c)
	c.start = g.now()
	c.st = st
	c.reqID = g.appendRequestID(c.reqID)
	c.req.protocol = "mcp"
	c.req.source = g.clientAddr(ctx)
	c.req.token = tok
	c.unrecorded = g.space.low.Load()
	idn, _, d, err := tokenAuth{g}.authenticate(c)
	if d == nil && err == nil {
		return c.token, true
	}
	c.who, c.tier = idn.who, idn.tier
	var se *storeError
	if errors.As(err, &se) {
		g.log.Error("mcp: identify", "request_id", string(c.reqID), "err", err)
		d = se.d
	}
	d = g.recordRefused(c, d, "", "")
	challenge := d.Challenge
	if d.Status == 401 {
		desc := d.Message
		if f, ok := d.Field("error_description"); ok {
			desc = f.Str
		}
		challenge = bearerChallenge("resource_metadata", g.resourceMetadataURL(ctx, st), "error", "invalid_token", "error_description", desc)
	}
	if challenge != "" {
		ctx.Response.Header.Set("WWW-Authenticate", challenge)
	}
	writeRPCError(ctx, d.Status, id, rpcInvalidRequest, d.Message+": "+d.Reason)
	return nil, false
}

// mcpChallenge answers an MCP request without credentials when auth.json
// asks for them (the 401 that starts a client's OAuth discovery).
func (g *Gateway) mcpChallenge(ctx *fasthttp.RequestCtx, st *state, id []byte) {
	ctx.Response.Header.Set("WWW-Authenticate", bearerChallenge("resource_metadata", g.resourceMetadataURL(ctx, st)))
	writeRPCError(ctx, fasthttp.StatusUnauthorized, id, rpcInvalidRequest, "Unauthorized: present an access token (see the resource metadata) or an API key")
}

// mcpInsufficientScope answers a tools/call the token's policy denied
// (not in its allow list) with 403 insufficient_scope when some scope of
// the token's issuer would allow the tool, naming those scopes. It
// reports false (nothing answered) otherwise.
func (g *Gateway) mcpInsufficientScope(x *mcpExchange, st *state, c *call, d *Decision) bool {
	if d == nil || c.token == nil || d.Outcome != outDenied || d.Reason != policy.ReasonNotInAllowTools.String() {
		return false
	}
	t := c.rt.tool
	is := c.token.Issuer
	scopes := is.ScopesFor(func(p *policy.Policy) bool {
		eff, err := st.set.Effective(is.Cfg.Tier, p)
		if err != nil {
			return false
		}
		ok, _ := eff.Decide(t)
		return ok
	})
	if len(scopes) == 0 {
		return false
	}
	x.ctx.Response.Header.Set("WWW-Authenticate", bearerChallenge("error", "insufficient_scope",
		"scope", strings.Join(scopes, " "), "resource_metadata", g.resourceMetadataURL(x.ctx, st),
		"error_description", "tool "+t.ID+" needs one of the scopes: "+strings.Join(scopes, " ")))
	writeRPC(x.ctx, fasthttp.StatusForbidden, rpcErrorBody(x.msg.ID, rpcInvalidRequest,
		"Forbidden: insufficient_scope for tool "+t.ID, map[string]any{"required_scopes": scopes}), x.sse)
	return true
}
