package gateway

import (
	"embed"
	"encoding/json"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/policy"
)

// The operator dashboard: static files embedded in the binary, served at
// /ui/, working offline (no CDN, no build step). The page reads and
// writes only through the management API, signed in with a session
// (session.go); its data endpoints (/stats, /catalog, /ui/session) are
// documented in docs/dashboard.md and usable without it.

//go:embed ui
var uiFiles embed.FS

// uiFS is the ui folder itself.
var uiFS, _ = fs.Sub(uiFiles, "ui")

// uiCSP keeps the page to its own files: no inline script, nothing from
// another origin, not framed.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// serveUI serves GET /ui/ (index.html) and the dashboard's files.
func (g *Gateway) serveUI(ctx *fasthttp.RequestCtx, p string) {
	if !safeMethod(ctx) {
		writeAPIError(ctx, errBadMethod)
		return
	}
	if p == "/ui" {
		ctx.Redirect("/ui/", fasthttp.StatusMovedPermanently)
		return
	}
	name := strings.TrimPrefix(p, "/ui/")
	if name == "" {
		name = "index.html"
	}
	if strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
		writeAPIError(ctx, errNotFound)
		return
	}
	b, err := fs.ReadFile(uiFS, name)
	if err != nil {
		writeAPIError(ctx, errNotFound)
		return
	}
	h := &ctx.Response.Header
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.SetContentType(ct)
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(b)
}

// toolView is a catalog entry as GET /catalog shows it.
type toolView struct {
	ID          string          `json:"id"`
	Path        string          `json:"path"`
	Methods     []string        `json:"methods"`
	RateClass   string          `json:"rate_class"`
	PriceUSD    string          `json:"price_usd"`
	Packs       []string        `json:"packs"`
	Settle      string          `json:"settle"`
	TimeoutMS   int64           `json:"timeout_ms"`
	Description string          `json:"description,omitempty"`
	Discovery   json.RawMessage `json:"discovery,omitempty"`
	MCPServer   string          `json:"mcp_server,omitempty"`
	X402        bool            `json:"x402"` // offered for pay-per-call
}

// apiCatalog serves GET /catalog: the tools served now (upstream URLs,
// which may hold credentials, are not shown), the policy document and
// whether x402 is on.
func (g *Gateway) apiCatalog(ctx *fasthttp.RequestCtx, st *state) (any, *Decision) {
	if !ctx.IsGet() {
		return nil, errBadMethod
	}
	tools := make([]toolView, len(st.cat.Tools))
	for i, t := range st.cat.Tools {
		settle := "after_upstream"
		if t.Settle == catalog.BeforeUpstream {
			settle = "before_upstream"
		}
		packs := t.Packs
		if packs == nil {
			packs = []string{}
		}
		tools[i] = toolView{ID: t.ID, Path: t.Path, Methods: t.Methods, RateClass: t.RateClass.String(),
			PriceUSD: string(t.Price.AppendDecimal(nil, 2)), Packs: packs, Settle: settle,
			TimeoutMS: t.Timeout.Milliseconds(), Description: t.Description, MCPServer: t.MCPServer,
			X402: st.routes[i] != nil && st.routes[i].offer != nil}
		if len(t.Discovery) > 0 && json.Valid(t.Discovery) {
			tools[i].Discovery = t.Discovery
		}
	}
	return map[string]any{"tools": tools, "policies": st.set.Document(), "x402": g.opts.X402 != nil,
		"config_hash": st.hash, "loaded_at": st.loaded.UTC()}, nil
}

// provenance says, for each field of an effective policy, which layer
// set it: "defaults", "tier:<name>", "override", "enforced", or
// "built-in" when no layer did. It reads the layers' JSON, so that every
// policy field is covered as the policy package adds them.
func (st *state) provenance(tier policy.Tier, principal string) map[string]string {
	doc := st.set.Document()
	out := map[string]string{}
	mark := func(layer string, p *policy.Policy) {
		if p == nil {
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			return
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(b, &fields) != nil {
			return
		}
		for f := range fields {
			out[f] = layer
		}
	}
	mark("defaults", &doc.Defaults)
	if tp, ok := doc.Tiers[tier]; ok {
		mark("tier:"+tier.String(), &tp)
	}
	if o, ok := st.overrides[principal]; ok {
		mark("override", o.raw)
	}
	eff, _ := json.Marshal(st.effective(tier, principal).View())
	var fields map[string]json.RawMessage
	if json.Unmarshal(eff, &fields) == nil {
		for f := range fields {
			if _, ok := out[f]; !ok {
				out[f] = "built-in"
			}
		}
	}
	if len(doc.EnforcedDenyTools) > 0 {
		out["enforced_deny_tools"] = "enforced"
	} else if _, ok := out["enforced_deny_tools"]; ok {
		out["enforced_deny_tools"] = "built-in"
	}
	if _, ok := out["fail_mode"]; ok {
		out["fail_mode"] = "policies.json"
	}
	return out
}
