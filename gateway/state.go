package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/catalog"
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
	set       *policy.Set
	tiers     [3]*policy.Effective
	overrides map[string]*override // by principal ("key:…", "wallet:0x…")
	routes    []*route             // by tool index
	loaded    time.Time            // when this configuration was compiled
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
	client          *upstreamClient
	uri             string // full upstream URL without query
}

func (st *state) route(path []byte) *route {
	if t := st.cat.Route(path); t != nil {
		return st.routes[t.Index]
	}
	return nil
}

// effective returns the policy for a principal of the given tier.
func (st *state) effective(tier policy.Tier, principal string) *policy.Effective {
	if o, ok := st.overrides[principal]; ok {
		return o.eff
	}
	return st.tiers[tier]
}

// tierOf returns the tier of a principal.
func tierOf(principal string, st *state) policy.Tier {
	if strings.HasPrefix(principal, "wallet:") {
		if _, ok := st.overrides[principal]; ok {
			return policy.TierWallet
		}
		return policy.TierUnknownWallet
	}
	return policy.TierAPIKey
}

// build compiles a new state. Overrides that no longer compile against the
// new configuration keep their raw form and fall back to the tier policy;
// the error is reported.
func (g *Gateway) build(cat *catalog.Catalog, doc *policy.Document, raws map[string]*policy.Policy) (*state, error) {
	set, err := policy.Compile(doc, cat)
	if err != nil {
		return nil, fmt.Errorf("compile policies: %w", err)
	}
	st := &state{cat: cat, doc: doc, set: set, overrides: make(map[string]*override, len(raws)), loaded: g.now()}
	for _, t := range []policy.Tier{policy.TierAPIKey, policy.TierWallet, policy.TierUnknownWallet} {
		st.tiers[t] = set.Tier(t)
	}
	for principal, raw := range raws {
		eff, err := set.Effective(tierForOverride(principal), raw)
		if err != nil {
			return nil, fmt.Errorf("compile override for %s: %w", principal, err)
		}
		st.overrides[principal] = &override{raw: raw, eff: eff}
	}
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

func tierForOverride(principal string) policy.Tier {
	if strings.HasPrefix(principal, "wallet:") {
		return policy.TierWallet
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
	u, err := url.Parse(up)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("tool %s: bad upstream %q", t.ID, up)
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
	key := u.Scheme + "://" + addr + "|" + t.IdleTimeout.String()
	g.clientsMu.Lock()
	uc := g.clients[key]
	if uc == nil {
		uc = &upstreamClient{
			pooled: newHostClient(addr, tls, t.IdleTimeout, g.opts.UpstreamDial),
			fresh:  newHostClient(addr, tls, t.IdleTimeout, g.opts.UpstreamDial),
		}
		g.clients[key] = uc
	}
	g.clientsMu.Unlock()
	uri := u.Scheme + "://" + u.Host + u.EscapedPath()
	return &route{tool: t, client: uc, uri: uri, allow: strings.Join(t.Methods, ", "),
		upstreamSeconds: g.metrics.upstream.WithLabelValues(t.ID)}, nil
}

// swapOverride installs (raw != nil) or removes (raw == nil) the override of
// principal, compiled against the current state, and returns the new state.
// The caller holds writeMu and has persisted the change.
func (g *Gateway) withOverride(principal string, raw *policy.Policy) (*state, error) {
	cur := g.state.Load()
	next := *cur
	next.overrides = make(map[string]*override, len(cur.overrides)+1)
	for k, v := range cur.overrides {
		next.overrides[k] = v
	}
	if raw == nil {
		delete(next.overrides, principal)
	} else {
		eff, err := cur.set.Effective(tierForOverride(principal), raw)
		if err != nil {
			return nil, err
		}
		next.overrides[principal] = &override{raw: raw, eff: eff}
	}
	return &next, nil
}

// Reload compiles a new catalog and policy document and swaps them in.
// Calls in flight finish under the state they started with. On error the
// old state keeps serving.
func (g *Gateway) Reload(cat *catalog.Catalog, doc *policy.Document) error {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	cur := g.state.Load()
	raws := make(map[string]*policy.Policy, len(cur.overrides))
	for k, v := range cur.overrides {
		raws[k] = v.raw
	}
	st, err := g.build(cat, doc, raws)
	if err != nil {
		return err
	}
	g.state.Store(st)
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
		st, err := g.build(cur.cat, cur.doc, raws)
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
