package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
)

// OAuth 2.1 / OIDC access tokens as principals (docs/oauth.md): the
// authenticator, the policy a token's claims select, the challenges of
// RFC 6750 and RFC 9728, and the protected-resource metadata.

// tokenAuth identifies holders of access tokens from the issuers of
// auth.json: "Authorization: Bearer <JWT>" (identity.Bearer tells the
// forms apart). Without auth.json no bearer is its kind.
type tokenAuth struct{ g *Gateway }

func (a tokenAuth) authenticate(c *call) (callerIdentity, bool, *Decision, error) {
	v := c.st.auth
	if v == nil || c.req.tok == nil && len(c.req.token) == 0 {
		return callerIdentity{}, false, nil, nil
	}
	t := c.req.tok
	if t == nil {
		var err error
		if t, err = v.Verify(c.req.token, c.start); err != nil {
			id, d, err := a.g.tokenRefused(c, err)
			return id, true, d, err
		}
	}
	c.token, c.tokJTI, c.tokClient = t, t.JTI, t.ClientID
	eff, tier, d, err := c.st.tokenPolicy(t, c.start, a.g.keys)
	if d != nil || err != nil {
		if d != nil {
			d = c.tokenDecision(d, false)
		}
		return callerIdentity{who: t.Who, tier: c.st.tierOf(t.Who)}, true, d, err
	}
	return callerIdentity{who: t.Who, tier: tier, eff: eff}, true, nil, nil
}

var issuerUnavailable = fixed(503, outUnauthenticated, "token_issuer_unavailable", "Token issuer unavailable; nothing was charged").flag("retry", true)

// tokenRefused turns a verification failure into the call's decision: a
// 401 invalid_token naming why, or (the issuer's keys cannot be had) a
// 503 and the error to log.
func (g *Gateway) tokenRefused(c *call, err error) (callerIdentity, *Decision, error) {
	var te *oauth.TokenError
	if !errors.As(err, &te) {
		return callerIdentity{}, nil, &storeError{op: "token issuer", err: err, d: issuerUnavailable}
	}
	c.tokJTI, c.tokClient = te.JTI, te.ClientID
	var id callerIdentity
	if !te.Who.IsZero() {
		id = callerIdentity{who: te.Who, tier: c.st.tierOf(te.Who)}
	}
	d := c.decide(401, outUnauthenticated, te.Reason, "Invalid access token").
		str("reason", te.Reason).str("error_description", te.Description)
	return id, c.tokenDecision(d, true), nil
}

// tokenDecision sets the WWW-Authenticate challenge of a refused token.
func (c *call) tokenDecision(d *Decision, invalid bool) *Decision {
	if d.Status == 401 || invalid {
		desc := d.Message
		if f, ok := d.Field("error_description"); ok {
			desc = f.Str
		}
		d.Challenge = bearerChallenge("error", "invalid_token", "error_description", desc)
	}
	return d
}

var errKeyInvalid = &oauth.TokenError{Reason: oauth.ReasonKeyInvalid}

// tokenPolicy returns the effective policy and tier of a verified token:
//
//   - it names an API key (the issuer's key_id_claim): that key's, when
//     the key is active; a 401 invalid_token otherwise;
//   - else defaults ← its tier ← the policies its claims map to
//     (oauth.Issuer.Mapped) ← the principal's override, if one is stored.
//
// Compiled policies are kept in the state per (issuer, claims matched,
// override), so that a repeat costs two map lookups and no allocation.
func (st *state) tokenPolicy(t *oauth.Token, now time.Time, keys KeyStore) (*policy.Effective, policy.Tier, *Decision, error) {
	if t.KeyID != "" {
		k, ok := keys.Lookup(t.KeyID)
		if !ok || k.ID != t.KeyID || !k.Active(now) {
			d := &Decision{Status: 401, Outcome: outUnauthenticated, Reason: oauth.ReasonKeyInvalid, Message: "Invalid access token"}
			d.str("reason", oauth.ReasonKeyInvalid).str("error_description", "the API key the token names ("+t.Issuer.Cfg.KeyIDClaim+") is unknown, revoked or expired")
			return nil, "", d, nil
		}
		who := k.Who()
		tier := st.tierOf(who)
		return st.effective(tier, who.String()), tier, nil, nil
	}
	if m := t.Memo.Load(); m != nil {
		if tm := (*m).(*tokenMemo); tm.st == st {
			return tm.eff, tm.tier, nil, nil
		}
	}
	principal := t.Who.String()
	o := st.overrides[principal]
	key := tokenPolicyKey{iss: t.Issuer.Index, mask: t.Mask}
	if o != nil {
		key.principal = principal
	}
	if p, ok := st.tokEff.get(key); ok {
		t.Memo.Store(tokenMemoOf(st, p))
		return p.eff, p.tier, nil, nil
	}
	var raw *policy.Policy
	if o != nil {
		raw = o.raw
	}
	eff, tier, err := st.compileTokenPolicy(t.Issuer, t.Mask, raw)
	if err != nil {
		return nil, "", nil, &storeError{op: "token policy", err: err,
			d: fixed(503, outUnauthenticated, "token_policy_unavailable", "Token policy could not be compiled; nothing was charged")}
	}
	p := tokenPolicyVal{eff: eff, tier: tier}
	st.tokEff.put(key, p)
	t.Memo.Store(tokenMemoOf(st, p))
	return eff, tier, nil, nil
}

// tokenMemo is a token's policy under one state, kept in the token
// (oauth.Token.Memo): while the state is current, a cached token's policy
// costs one pointer comparison. A new state (reload, override write)
// makes every memo stale.
type tokenMemo struct {
	st   *state
	eff  *policy.Effective
	tier policy.Tier
}

func tokenMemoOf(st *state, p tokenPolicyVal) *any {
	var m any = &tokenMemo{st: st, eff: p.eff, tier: p.tier}
	return &m
}

// compileTokenPolicy layers the mapped policies of mask and an override.
func (st *state) compileTokenPolicy(is *oauth.Issuer, mask uint64, over *policy.Policy) (*policy.Effective, policy.Tier, error) {
	layer, tier, mapped := is.Mapped(mask)
	if over != nil {
		layer = policy.Merge(layer, *over)
		if over.Tier != "" {
			tier = over.Tier
		}
		mapped = true
	}
	if !mapped {
		eff := st.set.Tier(tier)
		if eff == nil {
			return nil, "", fmt.Errorf("tier %q is not declared in policies.json", tier)
		}
		return eff, tier, nil
	}
	layer.Tier = ""
	eff, err := st.set.Effective(tier, &layer)
	return eff, tier, err
}

type tokenPolicyKey struct {
	iss       int
	mask      uint64
	principal string // "" without an override
}

type tokenPolicyVal struct {
	eff  *policy.Effective
	tier policy.Tier
}

// tokenPolicies caches compiled token policies for one state, bounded
// (past the bound, policies are compiled per call: correct, slower).
type tokenPolicies struct {
	mu sync.RWMutex
	m  map[tokenPolicyKey]tokenPolicyVal
}

const maxTokenPolicies = 10_000

func newTokenPolicies() *tokenPolicies {
	return &tokenPolicies{m: make(map[tokenPolicyKey]tokenPolicyVal)}
}

func (c *tokenPolicies) get(k tokenPolicyKey) (tokenPolicyVal, bool) {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	return v, ok
}

func (c *tokenPolicies) put(k tokenPolicyKey, v tokenPolicyVal) {
	c.mu.Lock()
	if len(c.m) < maxTokenPolicies {
		c.m[k] = v
	}
	c.mu.Unlock()
}

// issuerTier is the tier of an oidc principal without an override that
// selects one: its issuer's, when policies.json declares it (checkAuth
// makes sure for configured issuers), else api_key (the principal of an
// issuer no longer configured: it cannot call, its status still reads).
func (st *state) issuerTier(p identity.Principal) policy.Tier {
	tier := oauth.DefaultTier
	if alias, _, ok := p.OIDC(); ok && st.auth != nil {
		if is := st.auth.IssuerByAlias(alias); is != nil {
			tier = is.Cfg.Tier
		}
	}
	if st.set.Tier(tier) == nil {
		return policy.TierAPIKey
	}
	return tier
}

// checkAuth cross-checks auth.json against policies.json
// (oauth.Config.Check): problems name auth.json paths.
func (st *state) checkAuth() error {
	if st.auth == nil {
		return nil
	}
	if err := st.auth.Config.Check(st.set); err != nil {
		return fmt.Errorf("auth.json: %w", err)
	}
	return nil
}

// ReloadAuth replaces auth.json (nil: access tokens are no longer
// accepted). Issuers whose URLs are unchanged keep their cached keys;
// verified tokens are verified again under the new settings. On error
// (a tier policies.json lacks, a mapping that does not compile) the old
// configuration keeps serving.
func (g *Gateway) ReloadAuth(cfg *oauth.Config) error {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	cur := g.state.Load()
	return g.reloadLocked(cur.cat, cur.doc, cfg, false)
}

// ReloadWithAuth is Reload and ReloadAuth at once: the catalog, the
// policies and auth.json are checked together and swapped together (a
// tier removed from policies.json and from auth.json in one change).
func (g *Gateway) ReloadWithAuth(cat *catalog.Catalog, doc *policy.Document, cfg *oauth.Config) error {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	return g.reloadLocked(g.importMCP(cat), doc, cfg, true)
}

func (g *Gateway) reloadLocked(cat *catalog.Catalog, doc *policy.Document, cfg *oauth.Config, counted bool) error {
	cur := g.state.Load()
	var v *oauth.Verifier
	switch {
	case cfg == nil:
	case cur.auth != nil:
		v = cur.auth.WithConfig(cfg, oauth.Options{Logger: g.log})
	default:
		v = oauth.NewVerifier(cfg, oauth.Options{Logger: g.log})
	}
	raws := make(map[string]*policy.Policy, len(cur.overrides))
	for k, o := range cur.overrides {
		raws[k] = o.raw
	}
	st, err := g.build(cat, doc, raws, v)
	if err != nil {
		return err
	}
	st.reloads = cur.reloads
	if counted {
		st.reloads++
		g.metrics.configReloads.Inc()
	}
	g.state.Store(st)
	if v != nil {
		g.prefetchAuth(v)
	}
	return nil
}

// prefetchAuth fetches the issuers' keys in the background, so that the
// first token does not wait for them.
func (g *Gateway) prefetchAuth(v *oauth.Verifier) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		v.Prefetch(g.now())
	}()
}

// bearerChallenge builds a WWW-Authenticate value of the Bearer scheme
// from name/value pairs, values quoted (RFC 6750 section 3).
func bearerChallenge(kv ...string) string {
	var b strings.Builder
	b.WriteString("Bearer")
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte(' ')
		b.WriteString(kv[i])
		b.WriteString(`="`)
		for _, r := range kv[i+1] {
			switch {
			case r == '"' || r == '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case r < 0x20 || r > 0x7e:
				b.WriteByte('?') // RFC 6750: error_description is printable ASCII
			default:
				b.WriteRune(r)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}

// Protected-resource metadata (RFC 9728).
const (
	wellKnownResource = "/.well-known/oauth-protected-resource"
)

// resourceBase is toolgate's resource identifier: auth.json "resource",
// else the origin the request came to.
func (g *Gateway) resourceBase(ctx *fasthttp.RequestCtx, st *state) string {
	if st.auth != nil && st.auth.Config.Resource != "" {
		return st.auth.Config.Resource
	}
	scheme := "http"
	if g.viaTLS(ctx) {
		scheme = "https"
	}
	return scheme + "://" + string(ctx.Host())
}

// resourceMetadataURL is the metadata URL of the MCP endpoint's
// resource, for resource_metadata in challenges.
func (g *Gateway) resourceMetadataURL(ctx *fasthttp.RequestCtx, st *state) string {
	return g.resourceBase(ctx, st) + wellKnownResource + MCPPath
}

// serveResourceMetadata answers GET /.well-known/oauth-protected-resource
// (the gateway as a whole) and …/mcp (the MCP endpoint): the issuers and
// the scopes their mappings know. 404 without auth.json.
func (g *Gateway) serveResourceMetadata(ctx *fasthttp.RequestCtx, st *state, path string) {
	suffix := strings.TrimPrefix(path, wellKnownResource)
	if st.auth == nil || (suffix != "" && suffix != MCPPath) {
		writeJSON(ctx, fasthttp.StatusNotFound, errorBody("Not found"))
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, errorBody("Method not allowed"))
		return
	}
	servers := make([]string, 0, len(st.auth.Issuers))
	scopes := []string{}
	seen := map[string]bool{}
	for _, is := range st.auth.Issuers {
		servers = append(servers, is.Cfg.Issuer)
		for _, s := range is.Cfg.Scopes {
			if !seen[s] {
				seen[s] = true
				scopes = append(scopes, s)
			}
		}
	}
	body, _ := json.Marshal(map[string]any{
		"resource":                 g.resourceBase(ctx, st) + suffix,
		"authorization_servers":    servers,
		"scopes_supported":         scopes,
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "toolgate",
	})
	ctx.Response.Header.Set("Cache-Control", "public, max-age=300")
	ctx.Response.Header.Set("Access-Control-Allow-Origin", "*")
	writeJSON(ctx, fasthttp.StatusOK, body)
}
