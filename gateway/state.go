package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/valyala/fasthttp"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// state is one immutable, compiled configuration: catalog, policies, the
// per-principal overrides compiled against them, and each tool's upstream.
// Requests load it once and use it to the end, so a reload or override
// write never shows a half-applied state; writers build a new one and swap.
type state struct {
	cat       *catalog.Catalog
	doc       *policy.Document
	set       *policy.Set               // also every tier's policy, by name (set.Tier)
	overrides map[string]*override      // by principal ("key:…", "wallet:0x…")
	groups    map[string]*policy.Policy // stored group policies by group id (groups.go)
	routes    []*route                  // by tool index
	// walletAllows counts, by tool index, the wallet overrides that let
	// their wallet call the tool (walletgate.go).
	walletAllows []int32
	loaded       time.Time // when this configuration was compiled

	// hash identifies the configuration (configHash of its catalog and
	// policy document); reloads counts the Reloads applied since New.
	// Override writes keep both.
	hash    string
	reloads uint64

	// auth verifies OAuth access tokens (nil: auth.json not configured);
	// tokEff holds the effective policies of tokens compiled so far
	// (oauth.go). Both are replaced with the state.
	auth   *oauth.Verifier
	tokEff *tokenPolicies
	// missingCredential answers a free tool's call without credentials
	// when access tokens are accepted: the 401 names both kinds and the
	// protected-resource metadata.
	missingCredential *Decision
}

// override is a per-principal policy as written and as compiled.
type override struct {
	raw *policy.Policy
	eff *policy.Effective
}

// route is what the proxy needs for a tool, precomputed.
type route struct {
	tool  *catalog.Tool
	offer *x402.Offer // x402 requirements; nil for free tools or without x402
	allow string      // the tool's methods, "GET, POST", for Allow and CORS

	upstreamSeconds prometheus.Observer // the tool's upstream latency histogram
	counters        *toolCounters       // the tool's calls and billed counters
	client          *upstreamClient
	uri             string        // full upstream URL without query
	upURI           *fasthttp.URI // uri parsed once; only read (CopyTo) by calls
	// upHost and upPath are upURI's Host header and request path, for
	// the REST request head written directly (appendUpstreamHead); rawUp
	// says it may be (not when the URL carries userinfo, which fasthttp
	// turns into an Authorization header).
	upHost, upPath []byte
	rawUp          bool
}

func (st *state) route(path []byte) *route {
	if t := st.cat.Route(path); t != nil {
		return st.routes[t.Index]
	}
	return nil
}

// effective returns the policy for a principal of the given tier: its
// override's, or the tier's. tier must be a tier of st.set (the default
// tiers always are; tierOf returns only those and tiers of compiled
// overrides); otherwise it returns nil.
func (st *state) effective(tier policy.Tier, principal string) *policy.Effective {
	if o, ok := st.overrides[principal]; ok {
		return o.eff
	}
	return st.set.Tier(tier)
}

// tierOf returns the tier of a principal: the one its override selects,
// else the one identity assigns (api_key for a key, wallet for a wallet
// with an override, unknown_wallet for any other wallet).
func (st *state) tierOf(p identity.Principal) policy.Tier {
	o, ok := st.overrides[p.String()]
	if ok && o.raw.Tier != "" {
		return o.raw.Tier
	}
	switch p.Kind {
	case identity.KindWallet:
		if ok {
			return policy.TierWallet
		}
		return policy.TierUnknownWallet
	case identity.KindOIDC:
		return st.issuerTier(p)
	}
	return policy.TierAPIKey
}

// tierOfName is tierOf for a printed principal.
func (st *state) tierOfName(principal string) policy.Tier {
	p, _ := identity.ParsePrincipal(principal)
	return st.tierOf(p)
}

// build compiles a new state. An override that no longer compiles against
// the new configuration (e.g. one whose "tier" the new policies.json no
// longer declares) fails the build with an error naming its principal and
// the problem's path; Reload then keeps the old state.
func (g *Gateway) build(cat *catalog.Catalog, doc *policy.Document, raws map[string]*policy.Policy, auth *oauth.Verifier) (*state, error) {
	raws, groups := splitGroups(raws)
	set, err := policy.Compile(withGroups(doc, groups), cat)
	if err != nil {
		return nil, fmt.Errorf("compile policies: %w", err)
	}
	hash, err := configHash(cat, doc)
	if err != nil {
		return nil, err
	}
	st := &state{cat: cat, doc: doc, set: set, overrides: make(map[string]*override, len(raws)), groups: groups, loaded: g.now(), hash: hash,
		auth: auth, tokEff: newTokenPolicies()}
	if err := st.checkAuth(); err != nil {
		return nil, err
	}
	if auth != nil {
		st.missingCredential = fixed(401, outUnauthenticated, "missing_api_key", "API key or access token required").
			str("hint", "send X-API-Key: it-…, or Authorization: Bearer <access token> from an issuer in the resource metadata")
		if r := auth.Config.Resource; r != "" {
			st.missingCredential.Challenge = bearerChallenge("resource_metadata", r+wellKnownResource)
		}
	}
	for principal, raw := range raws {
		eff, err := set.Effective(st.overrideTier(principal, raw), raw)
		if err != nil {
			return nil, fmt.Errorf("compile override for %s: %w", principal, err)
		}
		st.overrides[principal] = &override{raw: raw, eff: eff}
	}
	st.walletAllows = countWalletAllows(cat.Tools, st.overrides)
	st.routes = make([]*route, len(cat.Tools))
	for i, t := range cat.Tools {
		rt, err := g.newRoute(t)
		if err != nil {
			return nil, err
		}
		if g.opts.X402 != nil && t.Price > 0 {
			if rt.offer, err = g.newOffer(t); err != nil {
				return nil, fmt.Errorf("tool %s: x402: %w", t.ID, err)
			}
		}
		st.routes[i] = rt
	}
	return st, nil
}

// configHash is the hex SHA-256 of a configuration as decoded: the
// catalog's tools and the normalized policy document, in JSON. Files that
// differ only in layout hash alike.
func configHash(cat *catalog.Catalog, doc *policy.Document) (string, error) {
	tools, err := json.Marshal(cat.Tools)
	if err != nil {
		return "", fmt.Errorf("config hash: %w", err)
	}
	pol, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("config hash: %w", err)
	}
	h := sha256.New()
	h.Write(tools)
	h.Write([]byte{'\n'})
	h.Write(pol)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// overrideTier returns the tier under the override raw of principal:
// the one raw selects, else the one identity assigns to a principal with an
// override (an oidc principal: its issuer's tier). A tier the set lacks
// makes Set.Effective fail at "$.tier".
func (st *state) overrideTier(principal string, raw *policy.Policy) policy.Tier {
	if raw != nil && raw.Tier != "" {
		return raw.Tier
	}
	p, _ := identity.ParsePrincipal(principal)
	switch p.Kind {
	case identity.KindWallet:
		return policy.TierWallet
	case identity.KindOIDC:
		return st.issuerTier(p)
	}
	return policy.TierAPIKey
}

func (g *Gateway) newRoute(t *catalog.Tool) (*route, error) {
	up := t.Upstream
	if name, ok := strings.CutPrefix(up, "demo:"); ok {
		if g.opts.DemoUpstreams == "" {
			return nil, fmt.Errorf("tool %s: demo upstream %q but no demo server is running", t.ID, up)
		}
		up = g.opts.DemoUpstreams + "/" + name
	}
	uc, uri, err := g.clientFor(up, t.IdleTimeout)
	if err != nil {
		return nil, fmt.Errorf("tool %s: %w", t.ID, err)
	}
	upURI := &fasthttp.URI{}
	upURI.Update(uri)
	return &route{tool: t, client: uc, uri: uri, upURI: upURI, allow: strings.Join(t.Methods, ", "),
		upHost: append([]byte(nil), upURI.Host()...), upPath: append([]byte(nil), upURI.RequestURI()...),
		rawUp:           len(upURI.Username()) == 0 && len(upURI.Password()) == 0 && len(upURI.QueryString()) == 0,
		upstreamSeconds: g.metrics.upstream.WithLabelValues(t.ID), counters: newToolCounters(g.metrics, t.ID)}, nil
}

// clientFor returns the clients of an upstream URL (shared by every tool
// on the same address and idle timeout) and the URL without its query.
func (g *Gateway) clientFor(up string, idle time.Duration) (*upstreamClient, string, error) {
	u, err := url.Parse(up)
	if err != nil || u.Host == "" {
		return nil, "", fmt.Errorf("bad upstream %q", up)
	}
	tls := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		if tls {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	key := u.Scheme + "://" + addr + "|" + idle.String()
	g.clientsMu.Lock()
	uc := g.clients[key]
	if uc == nil {
		uc = &upstreamClient{
			pooled: newHostClient(addr, tls, idle, g.opts.UpstreamDial),
			fresh:  newHostClient(addr, tls, idle, g.opts.UpstreamDial),
		}
		g.clients[key] = uc
	}
	g.clientsMu.Unlock()
	return uc, u.Scheme + "://" + u.Host + u.EscapedPath(), nil
}

// swapOverride installs (raw != nil) or removes (raw == nil) the override of
// principal, compiled against the current state, and returns the new state.
// The caller holds writeMu and has persisted the change.
func (g *Gateway) withOverride(principal string, raw *policy.Policy) (*state, error) {
	if strings.HasPrefix(principal, policy.GroupPrefix) {
		return g.rebuildWith(principal, raw)
	}
	cur := g.state.Load()
	next := *cur
	next.tokEff = newTokenPolicies()
	next.overrides = make(map[string]*override, len(cur.overrides)+1)
	for k, v := range cur.overrides {
		next.overrides[k] = v
	}
	var old *policy.Effective
	if o, ok := cur.overrides[principal]; ok {
		old = o.eff
	}
	var eff *policy.Effective
	if raw == nil {
		delete(next.overrides, principal)
	} else {
		var err error
		if eff, err = cur.set.Effective(cur.overrideTier(principal, raw), raw); err != nil {
			return nil, err
		}
		next.overrides[principal] = &override{raw: raw, eff: eff}
	}
	if isOwedPrincipal(principal) {
		next.walletAllows = append([]int32(nil), cur.walletAllows...)
		addWalletAllows(next.walletAllows, cur.cat.Tools, old, -1)
		addWalletAllows(next.walletAllows, cur.cat.Tools, eff, 1)
	}
	return &next, nil
}

// Reload compiles a new catalog and policy document and swaps them in.
// Calls in flight finish under the state they started with. On error the
// old state keeps serving. An applied reload, even of an unchanged
// configuration, counts in /readyz "reloads" and in
// toolgate_config_reloads_total; a refused one changes neither.
func (g *Gateway) Reload(cat *catalog.Catalog, doc *policy.Document) error {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	cur := g.state.Load()
	st, err := g.build(g.importMCP(cat), doc, cur.allRaws(), cur.auth)
	if err != nil {
		return err
	}
	st.reloads = cur.reloads + 1
	g.state.Store(st)
	g.metrics.configReloads.Inc()
	return nil
}

// syncOverrides brings the state's overrides up to date with the override
// store's change feed: the writes of other gateways sharing the store, and
// this gateway's own (already applied, so applying them again changes
// nothing). When the feed no longer holds the changes since the state's
// version it loads every override again. An override that does not
// compile against the current policies is skipped and logged; the
// principal keeps its tier policy.
func (g *Gateway) syncOverrides() error {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	changes, ver, err := g.overrides.Changes(g.overVer)
	if errors.Is(err, policy.ErrChangesCompacted) {
		raws, ver, err := g.overrides.Load()
		if err != nil {
			return fmt.Errorf("load overrides: %w", err)
		}
		cur := g.state.Load()
		st, err := g.build(cur.cat, cur.doc, raws, cur.auth)
		if err != nil {
			return err
		}
		g.state.Store(st)
		g.overVer = ver
		return nil
	}
	if err != nil {
		return fmt.Errorf("override changes: %w", err)
	}
	for _, c := range changes {
		next, err := g.withOverride(c.Principal, c.Policy)
		if err != nil {
			g.log.Error("override from the store does not compile", "principal", c.Principal, "version", c.Version, "err", err)
			continue
		}
		g.state.Store(next)
	}
	g.overVer = ver
	return nil
}
