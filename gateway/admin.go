package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// maxAdminBody bounds management request bodies.
const maxAdminBody = 1 << 20

// apiErr is a management API refusal: a Decision with its status and
// message (management decisions are not ledger outcomes).
func apiErr(status int, msg string) *Decision { return &Decision{Status: status, Message: msg} }

func badRequest(msg string) *Decision { return apiErr(400, msg) }

// invalidBody answers a request body that did not validate: every problem
// with its JSON path. Other decode failures get a fixed message; the
// error's own text is not shown.
func invalidBody(err error) *Decision {
	var ve *catalog.ValidationError
	if errors.As(err, &ve) {
		d := apiErr(400, "Invalid request body")
		d.Problems = ve.Problems
		return d
	}
	return badRequest("Invalid request body: not a valid JSON object of the documented fields")
}

var (
	errNotFound   = apiErr(404, "Not found")
	errNoKey      = apiErr(404, "Unknown API key")
	errAdminOnly  = apiErr(401, "Admin token required")
	errBadMethod  = apiErr(405, "Method not allowed")
	errBodyTooBig = apiErr(413, "Request body too large")
	errLowSpace   = apiErr(503, "Gateway storage is full; nothing was changed")
)

// guard is what a management route requires of its caller.
type guard uint8

const (
	open       guard = iota // anyone
	admin                   // the admin token
	adminWrite              // the admin token, and room in the store for a write (not for GET)
)

// allowed checks g's guard for a request: the one guard of the
// management API. The admin token (or an admin session) passes; a viewer
// (token or session) passes for reads only (403 for changes); a session
// changing anything must carry its CSRF token (session.go).
func (g *Gateway) allowed(ctx *fasthttp.RequestCtx, need guard) *Decision {
	if need == open {
		return nil
	}
	r, d := g.roleOf(ctx)
	switch {
	case d != nil:
		return d
	case r == roleNone:
		return errAdminOnly
	case r == roleViewer && !safeMethod(ctx):
		return errViewerReadOnly
	}
	if need == adminWrite && g.space.low.Load() && !ctx.IsGet() {
		return errLowSpace
	}
	return nil
}

// serveManagement handles the management API and health. It reports
// false if path is not one of its routes.
func (g *Gateway) serveManagement(ctx *fasthttp.RequestCtx, st *state, path []byte) bool {
	p := string(path)
	var (
		v   any
		err *Decision
		ok  = true
	)
	switch {
	case p == "/healthz":
		v = map[string]string{"status": "ok"}
	case p == "/readyz":
		g.readyz(ctx)
		return true
	case p == "/metrics":
		if err = g.allowed(ctx, admin); err == nil {
			g.metrics.handler(ctx)
			return true
		}
	case p == "/discovery/resources":
		g.discovery(ctx, st)
		return true
	case p == "/authorization/status":
		v, err = g.apiStatus(ctx, st)
	case p == "/credits/keys" || strings.HasPrefix(p, "/credits/keys/"):
		if err = g.allowed(ctx, adminWrite); err == nil {
			g.marker.Change(func() { v, err = g.apiKeys(ctx, strings.TrimPrefix(strings.TrimPrefix(p, "/credits/keys"), "/")) })
		}
	case p == "/ui/session":
		v, err = g.apiSession(ctx)
	case p == "/stats":
		if err = g.allowed(ctx, admin); err == nil {
			v, err = g.apiStats(ctx)
		}
	case p == "/catalog":
		if err = g.allowed(ctx, admin); err == nil {
			v, err = g.apiCatalog(ctx, st)
		}
	case p == "/ui" || strings.HasPrefix(p, "/ui/"):
		g.serveUI(ctx, p)
		return true
	case p == "/audit/pubkey":
		v = map[string]string{"algorithm": "ed25519", "public_key": fmt.Sprintf("%x", []byte(g.led.PublicKey()))}
	case p == "/audit" || strings.HasPrefix(p, "/audit/"):
		if err = g.allowed(ctx, admin); err == nil {
			if g.apiAudit(ctx, p) {
				return true
			}
			err = errNotFound
		}
	case p == "/approvals" || strings.HasPrefix(p, "/approvals/"):
		v, err = g.apiApprovals(ctx, strings.TrimPrefix(strings.TrimPrefix(p, "/approvals"), "/"))
	case p == "/policies/simulate":
		if err = g.allowed(ctx, admin); err == nil {
			v, err = g.apiSimulate(ctx)
		}
	case p == "/groups" || strings.HasPrefix(p, "/groups/"):
		if err = g.allowed(ctx, adminWrite); err == nil {
			g.marker.Change(func() { v, err = g.apiGroups(ctx, strings.TrimPrefix(strings.TrimPrefix(p, "/groups"), "/")) })
		}
	case strings.HasPrefix(p, "/principals/"):
		if err = g.allowed(ctx, adminWrite); err == nil {
			g.marker.Change(func() { v, err = g.apiPrincipal(ctx, strings.TrimPrefix(p, "/principals/")) })
		}
	case strings.HasPrefix(p, "/wallets/"):
		if err = g.allowed(ctx, adminWrite); err == nil {
			g.marker.Change(func() { v, err = g.apiWallet(ctx, strings.TrimPrefix(p, "/wallets/")) })
		}
	default:
		ok = false
	}
	if !ok {
		return false
	}
	ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
	if err != nil {
		writeAPIError(ctx, err)
		return true
	}
	status := fasthttp.StatusOK
	if c, isCreated := v.(created); isCreated {
		status, v = fasthttp.StatusCreated, c.v
	}
	body, merr := json.Marshal(v)
	if merr != nil {
		g.log.Error("encode response", "path", p, "err", merr)
		writeAPIError(ctx, apiErr(500, "Internal error"))
		return true
	}
	writeJSON(ctx, status, body)
	return true
}

// created marks a response value answered with 201.
type created struct{ v any }

// writeAPIError renders a management refusal as REST JSON.
func writeAPIError(ctx *fasthttp.RequestCtx, d *Decision) {
	if d.Status == 405 {
		ctx.Response.Header.Set("Allow", "GET, POST, PUT, DELETE")
	}
	if d.Challenge != "" {
		ctx.Response.Header.Set("WWW-Authenticate", d.Challenge)
	} else if d.Status == 401 {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="toolgate"`)
	}
	writeJSON(ctx, d.Status, d.AppendJSON(nil))
}

// readObject decodes a JSON object body into raw fields, rejecting
// anything else. An empty body is an empty object when allowEmpty.
func readObject(ctx *fasthttp.RequestCtx, allowEmpty bool) (map[string]json.RawMessage, *Decision) {
	body := ctx.PostBody()
	if len(body) > maxAdminBody {
		return nil, errBodyTooBig
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return map[string]json.RawMessage{}, nil
		}
		return nil, badRequest("Request body required: a JSON object")
	}
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil || m == nil || dec.More() {
		return nil, badRequest("Request body must be one JSON object")
	}
	return m, nil
}

// keyView is a key as shown by the API: never its secret, except once in
// the 201 of its creation.
type keyView struct {
	KeyID      string         `json:"key_id"`
	Name       string         `json:"name,omitempty"`
	Key        string         `json:"key"` // masked
	CreatedAt  time.Time      `json:"created_at"`
	ExpiresAt  time.Time      `json:"expires_at,omitzero"`
	RevokedAt  time.Time      `json:"revoked_at,omitzero"`
	Status     string         `json:"status"`
	Policy     *policy.Policy `json:"policy,omitempty"`
	Group      string         `json:"group,omitempty"`
	BalanceUSD *money.Micros  `json:"balance_usd,omitempty"`
	Secret     string         `json:"secret,omitempty"`
}

func (g *Gateway) viewKey(k *identity.Key) keyView {
	v := keyView{KeyID: k.ID, Name: k.Name, Key: k.Hint, CreatedAt: k.CreatedAt(), ExpiresAt: k.ExpiresAt(),
		RevokedAt: k.RevokedAt(), Status: k.Status(g.now())}
	if o, ok := g.state.Load().overrides[k.Principal]; ok {
		v.Policy, v.Group = o.raw, o.raw.Group
	}
	if b, ok := g.spend.Balance(k.Principal); ok {
		v.BalanceUSD = &b
	}
	return v
}

func (g *Gateway) apiKeys(ctx *fasthttp.RequestCtx, rest string) (any, *Decision) {
	m := string(ctx.Method())
	if rest == "" {
		switch m {
		case "GET":
			return g.listKeys(ctx)
		case "POST":
			return g.createKey(ctx)
		}
		return nil, errBadMethod
	}
	ref, sub, _ := strings.Cut(rest, "/")
	k, ok := g.keys.Lookup(ref)
	if !ok {
		return nil, errNoKey
	}
	switch sub {
	case "":
		switch m {
		case "GET":
			return g.viewKey(k), nil
		case "DELETE":
			rk, err := g.keys.Revoke(k.ID, g.now())
			if errors.Is(err, identity.ErrRevoked) {
				return g.viewKey(rk), nil
			}
			if err != nil {
				g.log.Error("revoke key", "key_id", k.ID, "err", err)
				return nil, apiErr(503, "Store unavailable")
			}
			if err := g.recordKey(g.actorOf(ctx), ledger.KindKeyRevoked, rk); err != nil {
				// Revoked all the same; the next start records it.
				return nil, apiErr(503, "Key revoked, but the ledger could not record it yet")
			}
			return g.viewKey(rk), nil
		}
		return nil, errBadMethod
	case "policy":
		return g.apiPolicy(ctx, k.Principal)
	case "credits":
		if m != "POST" {
			return nil, errBadMethod
		}
		return g.topUp(ctx, k)
	}
	return nil, errNotFound
}

// listKeys serves GET /credits/keys: every key, oldest first (newest
// first with ?order=desc), or with ?q= those whose key_id or name contains
// q (case-insensitive), at most ?limit= of them; "total" counts the
// matches.
func (g *Gateway) listKeys(ctx *fasthttp.RequestCtx) (any, *Decision) {
	args := ctx.QueryArgs()
	q := strings.ToLower(string(args.Peek("q")))
	limit := -1
	if args.Has("limit") {
		n, err := args.GetUint("limit")
		if err != nil || n < 1 {
			return nil, badRequest("Invalid query: limit: want a positive integer")
		}
		limit = n
	}
	keys := g.keys.List()
	switch string(args.Peek("order")) {
	case "", "asc":
	case "desc":
		slices.Reverse(keys)
	default:
		return nil, badRequest("Invalid query: order: want asc or desc")
	}
	out := []keyView{}
	total := 0
	for _, k := range keys {
		if q != "" && !strings.Contains(strings.ToLower(k.ID), q) && !strings.Contains(strings.ToLower(k.Name), q) {
			continue
		}
		total++
		if limit < 0 || len(out) < limit {
			out = append(out, g.viewKey(k))
		}
	}
	return map[string]any{"keys": out, "total": total}, nil
}

func (g *Gateway) createKey(ctx *fasthttp.RequestCtx) (any, *Decision) {
	f, aerr := readObject(ctx, true)
	if aerr != nil {
		return nil, aerr
	}
	var ps catalog.Problems
	var name string
	var expires time.Time
	var pol *policy.Policy
	var credits money.Micros
	var group string
	for k, raw := range f {
		switch k {
		case "name":
			if err := json.Unmarshal(raw, &name); err != nil || len(name) > 200 {
				ps.Add("name", "must be a string of at most 200 characters")
			}
		case "expires_at":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				ps.Add("expires_at", "must be an RFC 3339 time string")
				continue
			}
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				ps.Add("expires_at", fmt.Sprintf("%q is not an RFC 3339 time", s))
			} else if !t.After(g.now()) {
				ps.Add("expires_at", "must be in the future")
			}
			expires = t
		case "policy":
			p, err := policy.DecodePolicy(raw)
			if err != nil {
				var ve *catalog.ValidationError
				if errors.As(err, &ve) {
					for _, pr := range ve.Problems {
						ps.Add(joinPath("policy", pr.Path), pr.Message)
					}
				} else {
					ps.Add("policy", err.Error())
				}
			}
			pol = p
		case "group":
			if err := json.Unmarshal(raw, &group); err != nil {
				ps.Add("group", "must be a string: the name of a group")
			} else if msg := policy.CheckGroupName(group); msg != "" {
				ps.Add("group", msg)
			}
		case "credits_usd":
			c, err := money.ParseAmount(raw) // at most money.MaxAmount
			if err != nil {
				ps.Add("credits_usd", err.Error())
			}
			credits = c
		default:
			ps.Add(k, "unknown field")
		}
	}
	if err := ps.Err(); err != nil {
		return nil, invalidBody(err)
	}
	if group != "" {
		// "group" on the key is its override's group.
		if pol == nil {
			pol = &policy.Policy{}
		}
		if pol.Group != "" && pol.Group != group {
			return nil, badRequest(`group and policy.group name different groups`)
		}
		pol.Group = group
	}
	if pol != nil {
		if _, err := g.state.Load().set.Effective(policy.TierAPIKey, pol); err != nil {
			var ve *catalog.ValidationError
			if group != "" && errors.As(err, &ve) && len(ve.Problems) == 1 && ve.Problems[0].Path == "$.group" {
				ve.Problems[0].Path = "group" // the body's own "group" field
				return nil, invalidBody(err)
			}
			return nil, invalidBody(prefixProblems("policy", err))
		}
	}
	if string(ctx.QueryArgs().Peek("dry_run")) == "true" {
		return map[string]any{"dry_run": true, "valid": true}, nil // validated; nothing created
	}
	secret, k, err := g.keys.Create(name, expires, g.now())
	if err != nil {
		g.log.Error("create key", "err", err)
		return nil, apiErr(503, "Store unavailable")
	}
	actor := g.actorOf(ctx)
	if err := g.recordKey(actor, ledger.KindKeyCreated, k); err != nil {
		// Its secret is never shown, so it can never be used; revoked,
		// the next start records it.
		g.keys.Revoke(k.ID, g.now())
		return nil, apiErr(503, "Ledger unavailable; no key was created")
	}
	if pol != nil {
		if aerr := g.putOverride(actor, k.Principal, pol); aerr != nil {
			return nil, aerr
		}
	}
	if credits > 0 {
		if err := g.credit(actor, k.Principal, credits); err != nil {
			return nil, apiErr(503, "Ledger unavailable")
		}
	}
	v := g.viewKey(k)
	v.Secret = secret
	return created{v}, nil
}

// prefixProblems puts a validation error's paths under prefix (an error
// of another kind is returned as is).
func prefixProblems(prefix string, err error) error {
	var ve *catalog.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var ps catalog.Problems
	for _, pr := range ve.Problems {
		ps.Add(joinPath(prefix, pr.Path), pr.Message)
	}
	return ps.Err()
}

func joinPath(prefix, p string) string {
	p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
	if p == "" {
		return prefix
	}
	if strings.HasPrefix(p, "[") {
		return prefix + p
	}
	return prefix + "." + p
}

// apiPolicy serves PUT/GET/DELETE of a principal's override.
func (g *Gateway) apiPolicy(ctx *fasthttp.RequestCtx, principal string) (any, *Decision) {
	switch string(ctx.Method()) {
	case "GET":
		st := g.state.Load()
		o, ok := st.overrides[principal]
		resp := map[string]any{"principal": principal, "override": nil,
			"effective": st.effective(st.tierOfName(principal), principal).View()}
		if ok {
			resp["override"] = o.raw
		}
		return resp, nil
	case "PUT":
		body := ctx.PostBody()
		if len(body) > maxAdminBody {
			return nil, errBodyTooBig
		}
		pol, err := policy.DecodePolicy(body)
		if err != nil {
			return nil, invalidBody(err)
		}
		if string(ctx.QueryArgs().Peek("dry_run")) == "true" {
			// Validate only: the problems, or the effective policy it would give.
			next, err := g.withOverride(principal, pol)
			if err != nil {
				return nil, invalidBody(err)
			}
			return map[string]any{"principal": principal, "override": pol, "dry_run": true,
				"effective": next.effective(next.tierOfName(principal), principal).View()}, nil
		}
		if aerr := g.putOverride(g.actorOf(ctx), principal, pol); aerr != nil {
			return nil, aerr
		}
		st := g.state.Load()
		return map[string]any{"principal": principal, "override": pol,
			"effective": st.effective(st.tierOfName(principal), principal).View()}, nil
	case "DELETE":
		g.writeMu.Lock()
		defer g.writeMu.Unlock()
		prev, had := g.state.Load().overrides[principal]
		if err := g.overrides.Delete(principal); err != nil {
			g.log.Error("delete override", "principal", principal, "err", err)
			return nil, apiErr(503, "Store unavailable")
		}
		if had {
			if err := g.recordPolicy(g.actorOf(ctx), principal, nil); err != nil {
				if err := g.overrides.Put(principal, prev.raw); err != nil {
					g.log.Error("roll back override", "principal", principal, "err", err)
				}
				return nil, apiErr(503, "Ledger unavailable; nothing was changed")
			}
		}
		next, err := g.withOverride(principal, nil)
		if err != nil {
			return nil, invalidBody(err)
		}
		g.state.Store(next)
		return map[string]any{"principal": principal, "override": nil,
			"effective": next.effective(next.tierOfName(principal), principal).View()}, nil
	}
	return nil, errBadMethod
}

func (g *Gateway) putOverride(actor, principal string, pol *policy.Policy) *Decision {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	next, err := g.withOverride(principal, pol)
	if err != nil {
		return invalidBody(err)
	}
	if err := g.overrides.Put(principal, pol); err != nil {
		g.log.Error("save override", "principal", principal, "err", err)
		return apiErr(503, "Store unavailable")
	}
	if err := g.recordPolicy(actor, principal, pol); err != nil {
		var rerr error
		if prev, ok := g.state.Load().overrides[principal]; ok {
			rerr = g.overrides.Put(principal, prev.raw)
		} else {
			rerr = g.overrides.Delete(principal)
		}
		if rerr != nil {
			g.log.Error("roll back override", "principal", principal, "err", rerr)
		}
		return apiErr(503, "Ledger unavailable; nothing was changed")
	}
	g.state.Store(next)
	return nil
}

func (g *Gateway) topUp(ctx *fasthttp.RequestCtx, k *identity.Key) (any, *Decision) {
	f, aerr := readObject(ctx, false)
	if aerr != nil {
		return nil, aerr
	}
	var ps catalog.Problems
	var amount money.Micros
	if _, ok := f["amount_usd"]; !ok {
		ps.Add("amount_usd", "required")
	}
	for name, raw := range f {
		if name != "amount_usd" {
			ps.Add(name, "unknown field")
			continue
		}
		a, err := money.ParseJSON(raw)
		switch {
		case err != nil:
			ps.Add("amount_usd", err.Error())
		case a == 0:
			ps.Add("amount_usd", "must be greater than zero")
		case a > money.MaxAmount:
			ps.Add("amount_usd", "must be at most 1000000")
		}
		amount = a
	}
	if err := ps.Err(); err != nil {
		return nil, invalidBody(err)
	}
	if !k.Active(g.now()) {
		return nil, apiErr(409, "Key is "+k.Status(g.now()))
	}
	if err := g.credit(g.actorOf(ctx), k.Principal, amount); errors.Is(err, errBalanceOverflow) {
		return nil, badRequest("amount_usd: the balance would exceed the largest amount toolgate can hold")
	} else if err != nil {
		return nil, apiErr(503, "Ledger unavailable")
	}
	bal, _ := g.spend.Balance(k.Principal)
	return map[string]any{"key_id": k.ID, "amount_usd": amount, "balance_usd": bal}, nil
}

// errBalanceOverflow: a top-up would take a balance past money.Micros.
var errBalanceOverflow = errors.New("gateway: balance overflow")

// actorOf names the caller of a management request in its admin record
// (its address: behind trusted proxies, the client they name).
func (g *Gateway) actorOf(ctx *fasthttp.RequestCtx) string {
	return actorAdmin(g.clientAddr(ctx).String())
}

// credit tops up a principal's prepaid balance and records the txn
// (attributed to actor) before returning.
func (g *Gateway) credit(actor, principal string, amount money.Micros) error {
	var ticket ledger.Ticket
	_, ok := g.spend.TopUp(principal, amount, func(after money.Micros) {
		ticket = g.led.Append(&ledger.Record{Type: "txn", At: g.now(), Principal: principal,
			Kind: "topup", Amount: amount, BalanceAfter: &after, Actor: actor})
	})
	if !ok {
		return errBalanceOverflow
	}
	if err := ticket.Wait(); err != nil {
		g.log.Error("record top-up", "principal", principal, "err", err)
		return err
	}
	return nil
}

func (g *Gateway) apiWallet(ctx *fasthttp.RequestCtx, rest string) (any, *Decision) {
	addr, sub, _ := strings.Cut(rest, "/")
	if sub != "policy" {
		return nil, errNotFound
	}
	norm, ok := x402.ChecksumAddress(addr)
	if !ok {
		return nil, badRequest(fmt.Sprintf("%q is not a 0x-prefixed 20-byte hex address", addr))
	}
	return g.apiPolicy(ctx, identity.WalletPrincipal(norm).String())
}

// apiPrincipal serves /principals/{principal}/policy: the override of any
// principal kind (key:<key_id>, wallet:0x…, oidc:<alias>:<sub>), the
// same as the key and wallet endpoints. A key must exist; a wallet
// address is checksummed; an oidc subject is taken as written (it need
// not have called yet).
func (g *Gateway) apiPrincipal(ctx *fasthttp.RequestCtx, rest string) (any, *Decision) {
	name, ok := strings.CutSuffix(rest, "/policy")
	if !ok {
		return nil, errNotFound
	}
	p, err := identity.ParsePrincipal(name)
	if err != nil {
		return nil, badRequest(err.Error())
	}
	switch p.Kind {
	case identity.KindKey:
		if k, ok := g.keys.Lookup(p.ID); !ok || k.ID != p.ID {
			return nil, errNoKey
		}
	case identity.KindWallet:
		addr, ok := x402.ChecksumAddress(p.ID)
		if !ok {
			return nil, badRequest(fmt.Sprintf("%q is not a 0x-prefixed 20-byte hex address", p.ID))
		}
		p = identity.WalletPrincipal(addr)
	}
	return g.apiPolicy(ctx, p.String())
}

// discovery serves GET /discovery/resources: the x402 listing of the
// priced tools (public, like the 402s themselves).
func (g *Gateway) discovery(ctx *fasthttp.RequestCtx, st *state) {
	if !ctx.IsGet() {
		writeAPIError(ctx, errBadMethod)
		return
	}
	args := ctx.QueryArgs()
	ctx.Response.Header.SetBytesKV(hdrACAO, strStar)
	limit, offset := x402.DiscoveryLimitDefault, 0
	if args.Has("limit") {
		n, err := args.GetUint("limit")
		if err != nil || n < 1 || n > x402.DiscoveryLimitMax {
			writeAPIError(ctx, apiErr(400, "limit must be an integer from 1 to 100"))
			return
		}
		limit = n
	}
	if args.Has("offset") {
		n, err := args.GetUint("offset")
		if err != nil {
			writeAPIError(ctx, apiErr(400, "offset must be a non-negative integer"))
			return
		}
		offset = n
	}
	// Every priced tool is listed as an HTTP endpoint and, on the MCP
	// endpoint, as an MCP tool: type=http or type=mcp lists one kind, no
	// type both (HTTP first), any other type nothing.
	typ := string(args.Peek("type"))
	var items []x402.DiscoveryItem
	for _, kind := range []struct {
		typ string
		mcp bool
	}{{"http", false}, {"mcp", true}} {
		if typ != "" && typ != kind.typ {
			continue
		}
		for _, rt := range st.routes {
			if rt.offer != nil && (!kind.mcp || rt.offer.MCPResourceURL() != "") {
				items = append(items, x402.DiscoveryItem{Offer: rt.offer, MCP: kind.mcp})
			}
		}
	}
	writeJSON(ctx, 200, x402.DiscoveryResources(items, limit, offset, st.loaded))
}

// pinger is a settlement backend that can say whether it is reachable.
type pinger interface {
	Ping(ctx context.Context) error
}

// readyz serves GET /readyz: 200 when the store is open, the ledger
// commits, configuration is loaded and (with x402) the facilitator or RPC
// node answers; 503 naming what is not ready otherwise. The body also
// names the configuration serving (config_hash) and the reloads applied.
// The backend's answer is reused for settlerHealthTTL and shared by
// concurrent calls (probeCache): /readyz needs no credentials.
func (g *Gateway) readyz(ctx *fasthttp.RequestCtx) {
	checks := map[string]string{}
	ready := true
	fail := func(name, why string) { checks[name], ready = why, false }
	if g.draining.Load() {
		fail("shutdown", "draining")
	}
	if g.opts.DB.IsClosed() {
		fail("store", "closed")
	} else {
		checks["store"] = "ok"
	}
	if g.space.low.Load() {
		fail("disk", fmt.Sprintf("low on space: %d bytes free, need %d", g.space.free.Load(), g.opts.MinFreeBytes))
	} else if g.opts.MinFreeBytes > 0 {
		checks["disk"] = "ok"
	}
	if err := g.led.Healthy(); err != nil {
		g.logReadyProblem("ledger", err)
		fail("ledger", "unavailable (see the gateway's log)")
	} else {
		checks["ledger"] = "ok"
	}
	st := g.state.Load()
	if st != nil {
		checks["config"] = fmt.Sprintf("ok: %d tools", len(st.cat.Tools))
	} else {
		fail("config", "not loaded")
	}
	if g.settlerHealth != nil {
		if err := g.settlerHealth.check(); err != nil {
			fail("x402", "settlement backend unreachable")
		} else {
			checks["x402"] = "ok"
		}
	}
	if g.opts.TLS != nil {
		g.readyTLS(checks, fail)
	}
	for _, c := range g.opts.ReadyChecks {
		if text, ok := c.Status(); ok {
			checks[c.Name] = text
		} else {
			fail(c.Name, text)
		}
	}
	status := 200
	if !ready {
		status = 503
	}
	detail := map[string]any{"ready": ready, "checks": checks}
	if st != nil {
		detail["config_hash"], detail["reloads"] = st.hash, st.reloads
	}
	if g.opts.Cluster != nil {
		g.readyCluster(checks, detail)
	}
	body, _ := json.Marshal(detail)
	ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
	writeJSON(ctx, status, body)
}

// certMinDays is how close to expiry a certificate nothing renews may get
// before /readyz fails.
const certMinDays = 7

// readyTLS reports the served certificate's expiry: "ok: expires <time>
// (<n> days)", failing when it has expired, or has under certMinDays left
// and renews by no one the gateway knows of.
func (g *Gateway) readyTLS(checks map[string]string, fail func(name, why string)) {
	na, ok := g.opts.TLS.NotAfter()
	if !ok {
		fail("tls", "no certificate yet")
		return
	}
	left := na.Sub(g.now())
	days := int(left.Hours() / 24)
	at := na.UTC().Format(time.RFC3339)
	switch {
	case left <= 0:
		fail("tls", "certificate expired at "+at)
	case days < certMinDays && !g.opts.TLS.Renews():
		fail("tls", fmt.Sprintf("certificate expires at %s (%d days) and is not renewed automatically", at, days))
	default:
		checks["tls"] = fmt.Sprintf("ok: expires at %s (%d days)", at, days)
	}
}

// logReadyProblem logs a readiness problem once per change of its text:
// /readyz is polled often and anonymous, so it names the component and
// the log holds the detail.
func (g *Gateway) logReadyProblem(component string, err error) {
	msg := err.Error()
	if prev, _ := g.readyProblems.Swap(component, msg); prev != msg {
		g.log.Warn("not ready", "component", component, "err", err)
	}
}
