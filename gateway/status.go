package gateway

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

type quotaView struct {
	Used     int  `json:"used"`
	Limit    *int `json:"limit"` // null = unlimited
	ResetInS int  `json:"reset_in_s"`
}

// Denial is one refused call in a status's recent_denials. Node names
// the cluster node that refused it (cluster mode only).
type Denial struct {
	At     time.Time `json:"at"`
	Tool   string    `json:"tool"`
	Reason string    `json:"reason"`
	Status int       `json:"status"`
	Node   string    `json:"node,omitempty"`
}

// apiStatus serves GET /authorization/status for ?api_key=, ?key_id= or
// ?wallet=. A caller presenting an API key may read that key's status;
// anything else needs the admin token.
func (g *Gateway) apiStatus(ctx *fasthttp.RequestCtx, st *state) (any, *Decision) {
	if !ctx.IsGet() {
		return nil, errBadMethod
	}
	args := ctx.QueryArgs()
	now := g.now()
	out := map[string]any{}
	var principal string
	var eff *policy.Effective // set by a case that knows the policy (a token's claims)
	var tier policy.Tier
	switch {
	case args.Has("api_key"):
		secret := args.Peek("api_key")
		if !identity.LooksLikeSecret(secret) {
			return nil, badRequest("api_key is not an it-… key")
		}
		k, ok := g.keys.Authenticate(secret, now)
		if !ok {
			if !g.canRead(ctx) {
				return nil, apiErr(401, "Invalid API key")
			}
			if k, ok = g.keys.Lookup(string(secret)); !ok {
				return nil, errNoKey
			}
		}
		principal = k.Principal
		out["key"], out["key_id"], out["status"] = k.Hint, k.ID, k.Status(now)
	case args.Has("key_id"):
		k, ok := g.keys.Lookup(string(args.Peek("key_id")))
		if !g.canRead(ctx) && !g.presentsKey(ctx, k, now) {
			return nil, errAdminOnly
		}
		if !ok {
			return nil, errNoKey
		}
		principal = k.Principal
		out["key"], out["key_id"], out["status"] = k.Hint, k.ID, k.Status(now)
	case args.Has("group"):
		return g.groupStatus(ctx, st, string(args.Peek("group")))
	case args.Has("wallet"):
		if !g.canRead(ctx) {
			return nil, errAdminOnly
		}
		addr, ok := x402.ChecksumAddress(string(args.Peek("wallet")))
		if !ok {
			return nil, badRequest("wallet is not a 0x-prefixed 20-byte hex address")
		}
		principal = identity.WalletPrincipal(addr).String()
		out["wallet"] = addr
	case args.Has("principal"):
		if !g.canRead(ctx) {
			return nil, errAdminOnly
		}
		p, err := identity.ParsePrincipal(string(args.Peek("principal")))
		if err != nil {
			return nil, badRequest("principal: " + err.Error())
		}
		if p.Kind == identity.KindWallet {
			addr, ok := x402.ChecksumAddress(p.ID)
			if !ok {
				return nil, badRequest("principal: not a 0x-prefixed 20-byte hex address")
			}
			p = identity.WalletPrincipal(addr)
		}
		principal = p.String()
		if p.Kind == identity.KindOIDC {
			out["claims_known"] = false // the policy shown is the one of a token whose claims map to nothing
			if e, t, ok := g.oidcStatusPolicy(st, p); ok {
				eff, tier = e, t
			}
		}
	default:
		t, d := g.tokenHolder(ctx, st, now)
		if d != nil {
			return nil, d
		}
		if t == nil {
			return nil, badRequest("one of api_key, key_id, wallet or principal is required (or present your access token)")
		}
		principal = t.Who.String()
		var pd *Decision
		var perr error
		eff, tier, pd, perr = st.tokenPolicy(t, now, g.keys)
		if pd != nil {
			return nil, apiErr(401, "Invalid access token")
		}
		if perr != nil {
			g.log.Error("status: token policy", "principal", principal, "err", perr)
			return nil, apiErr(503, "Token policy unavailable")
		}
		out["token"] = map[string]any{"issuer": t.Issuer.Cfg.Issuer, "jti": t.JTI, "client_id": t.ClientID,
			"expires_at": t.Expires.UTC().Format(time.RFC3339), "inherits_key_id": t.KeyID}
	}
	if eff == nil {
		tier = st.tierOfName(principal)
		eff = st.effective(tier, principal)
	}
	out["principal"], out["tier"] = principal, tier.String()
	if grp := eff.Group(); grp != "" {
		out["group"] = grp
	}
	out["policy"] = eff.View()
	out["provenance"] = st.provenance(tier, principal)

	windows := make(map[string]quotaView, catalog.NumRateClasses)
	for c := catalog.RateClass(0); c < catalog.NumRateClasses; c++ {
		limit := eff.Quota(c)
		used, resetIn := g.quotas.Peek(principal, int(c), limit, now)
		qv := quotaView{Used: used, ResetInS: ceilSeconds(int64(resetIn))}
		if limit >= 0 {
			qv.Limit = &limit
		}
		windows[c.String()] = qv
	}
	out["quota_window"] = windows
	g.governanceStatus(out, principal, eff, now)

	day, resetAt := meter.DayOf(now, eff.Location())
	spend := g.spend.Status(principal, day)
	out["spend_today_usd"] = spend.Today()
	out["spend_reserved_usd"] = spend.Reserved // held by calls in flight (included in spend_today_usd)
	if capUSD, ok := eff.SpendCap(); ok {
		out["spend_limit_usd"] = capUSD
	} else {
		out["spend_limit_usd"] = nil
	}
	out["spend_reset_at"] = resetAt.UTC().Format(time.RFC3339)
	if spend.HasBalance {
		out["balance_usd"] = spend.Balance
	}
	if isOwedPrincipal(principal) {
		out["owed_usd"] = g.owed.get(principal)
	}
	if g.opts.Denials != nil {
		if ds, err := g.opts.Denials.Recent(principal, 10); err == nil {
			out["recent_denials"], out["recent_denials_scope"] = ds, "cluster"
			return out, nil
		}
		out["recent_denials_scope"] = "node (shared state unavailable)"
	}
	denials := []Denial{}
	err := g.led.Query(ledger.Query{Principal: principal, Type: "call", Desc: true, Limit: 10, ExcludeOutcome: outAllowed},
		func(r *ledger.Record) error {
			denials = append(denials, Denial{At: r.At.UTC(), Tool: r.Tool, Reason: r.Reason, Status: r.Status})
			return nil
		})
	if err != nil {
		g.log.Error("query recent denials", "principal", principal, "err", err)
	}
	out["recent_denials"] = denials
	return out, nil
}

// tokenHolder returns the verified access token the request presents
// (nil without one), or the 401 of one that does not verify.
func (g *Gateway) tokenHolder(ctx *fasthttp.RequestCtx, st *state, now time.Time) (*oauth.Token, *Decision) {
	form, tok := identity.Bearer(ctx.Request.Header.Peek("Authorization"))
	if st.auth == nil || form != identity.BearerJWT {
		return nil, nil
	}
	t, err := st.auth.Verify(tok, now)
	if err != nil {
		var te *oauth.TokenError
		if errors.As(err, &te) {
			d := apiErr(401, "Invalid access token").str("reason", te.Reason).str("error_description", te.Description)
			d.Challenge = bearerChallenge("error", "invalid_token", "error_description", te.Description)
			return nil, d
		}
		g.log.Error("status: token issuer", "err", err)
		return nil, apiErr(503, "Token issuer unavailable")
	}
	return t, nil
}

// oidcStatusPolicy is the policy of an oidc principal as the admin sees
// it: its override (if any) over its issuer's tier, no claims matched.
func (g *Gateway) oidcStatusPolicy(st *state, p identity.Principal) (*policy.Effective, policy.Tier, bool) {
	alias, _, _ := p.OIDC()
	if st.auth == nil {
		return nil, "", false
	}
	is := st.auth.IssuerByAlias(alias)
	if is == nil {
		return nil, "", false
	}
	var raw *policy.Policy
	if o := st.overrides[p.String()]; o != nil {
		raw = o.raw
	}
	eff, tier, err := st.compileTokenPolicy(is, 0, raw)
	return eff, tier, err == nil
}

// presentsKey reports whether the request authenticates as k itself.
func (g *Gateway) presentsKey(ctx *fasthttp.RequestCtx, k *identity.Key, now time.Time) bool {
	if k == nil {
		return false
	}
	rh := &ctx.Request.Header
	secret, ok := identity.Credential(rh.Peek("X-Api-Key"), rh.Peek("Authorization"))
	if !ok {
		return false
	}
	got, ok := g.keys.Authenticate(secret, now)
	return ok && got.ID == k.ID
}

// restoreMeters rebuilds today's spend per principal and prepaid balances,
// and the /stats counters, from the ledger, the source of truth, so that
// they survive restarts and crashes exactly as recorded: from the meters
// snapshot and the records after its cut when there is a trusted one,
// else from every call and transaction of the last 50 hours
// (meterssnap.go). Balances come from the ledger's balance index.
func (g *Gateway) restoreMeters() error {
	st := g.state.Load()
	now := g.now()
	t0 := time.Now()
	b, from, hash, why, n, err := g.restoreMetersBook(now)
	if err != nil {
		return err
	}
	balances := map[string]money.Micros{}
	err = g.led.LatestBalances(func(principal string, balance money.Micros) error {
		balances[principal] = balance
		return nil
	})
	if err != nil {
		return err
	}
	g.applyMeters(b, st, now)
	for p, bal := range balances {
		if isOwedPrincipal(p) {
			g.owed.restore(p, bal)
			continue
		}
		g.spend.RestoreBalance(p, bal)
	}
	if g.opts.MetersSnapshot == "" {
		return nil
	}
	g.meters, g.metersFrom = b, from
	attrs := []any{"records_read", n, "ms", time.Since(t0).Milliseconds()}
	if from == "snapshot" {
		g.metersHash.Store(&hash)
		g.marker.MetersSnapshot(hash) // the first mark names it
		g.log.Info("meters: from the meters snapshot and the records after its cut", append(attrs, "snapshot", hash[:16], "snapshot_seq", b.seq)...)
	} else {
		g.log.Info("meters: every call and transaction of the last 50 h read", append(attrs, "meters_snapshot", why)...)
	}
	return nil
}
