package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/oauth/oauthtest"
)

// oauthPolicies is the seed policies.json with the oauth tier.
const oauthPolicies = `{
  "version": 1,
  "defaults": { "rate_class_quota": { "light": 120, "medium": 30, "heavy": 10 } },
  "tiers": {
    "api_key":        { "daily_spend_cap_usd": 50 },
    "unknown_wallet": { "deny_tools": ["code_execute"], "daily_spend_cap_usd": 2 },
    "oauth":          { "deny_tools": ["code_execute"], "daily_spend_cap_usd": 0.05 },
    "partner":        { "daily_spend_cap_usd": 10 }
  }
}`

const gwResource = "https://gw.example"

func oauthConfig(t testing.TB, p *oauthtest.Provider, extra string) *oauth.Config {
	t.Helper()
	cfg, err := oauth.Decode([]byte(`{"version":1,"resource":"` + gwResource + `"` + extra + `,"issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `",
		"key_id_claim":"toolgate_key_id",
		"claims":{"scope":{"tools:research":{"allow_tools":["pack/research"],"rate_class_quota":{"light":3}},
		                   "tools:comms":{"allow_tools":["pack/comms"]}},
		          "groups":{"partners":{"tier":"partner"}}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newOAuthHarness runs a gateway trusting a real in-process OIDC provider.
func newOAuthHarness(t *testing.T, extra string) (*harness, *oauthtest.Provider) {
	t.Helper()
	p := oauthtest.Start(t)
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.Policies = mustPolicies(t, oauthPolicies)
		o.Auth = oauthConfig(t, p, extra)
	})
	return h, p
}

func (h *harness) tokenCall(tok, tool, body string) (*http.Response, []byte) {
	h.t.Helper()
	return h.do("POST", "/tools/"+tool, body, "Authorization", "Bearer "+tok, "Content-Type", "application/json")
}

// TestOAuth_SeedScenario: the seed scenario with access tokens instead of
// keys: allowed, denied, over quota, over the cap, the holder's status;
// claim-mapped policies, a per-subject override, a key's policy inherited.
func TestOAuth_SeedScenario(t *testing.T) {
	h, p := newOAuthHarness(t, "")
	now := time.Now()
	tok := func(sub, scope string, extra map[string]any) string {
		c := p.Claims(sub, gwResource, scope, now, time.Hour)
		for k, v := range extra {
			c[k] = v
		}
		return p.Sign(t, c)
	}
	alice := tok("alice", "openid", nil)

	t.Run("Allowed", func(t *testing.T) {
		resp, b := h.tokenCall(alice, "extract/structured", `{"text":"hi"}`)
		if resp.StatusCode != 200 || resp.Header.Get("X-Policy-Allowed") != "true" {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		r, _ := h.up.lastRequest()
		if r.Header.Get("Authorization") != "" {
			t.Fatal("the token reached the upstream")
		}
		recs := h.records("oidc:corp:alice")
		if len(recs) != 1 || recs[0].Tier != "oauth" || recs[0].Outcome != "allowed" || recs[0].TokenID == "" || recs[0].ClientID != "agent-client" || recs[0].Cost != 10_000 {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("Denied", func(t *testing.T) {
		hits := h.up.hits.Load()
		resp, b := h.tokenCall(alice, "code_execute", `{}`)
		if resp.StatusCode != 403 {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		wantJSON(t, b, `{"error":"Tool access denied by policy","tool":"code_execute","reason":"deny_tools"}`)
		if h.up.hits.Load() != hits {
			t.Fatal("a denied call reached the upstream")
		}
	})
	t.Run("ClaimMappedQuota", func(t *testing.T) {
		bob := tok("bob", "openid tools:research", nil)
		for i := range 3 {
			if resp, b := h.tokenCall(bob, "search/web", `{}`); resp.StatusCode != 200 {
				t.Fatalf("call %d: got %d %s", i, resp.StatusCode, b)
			}
		}
		resp, b := h.tokenCall(bob, "search/web", `{}`)
		if resp.StatusCode != 403 || decode(t, b)["limit"] != float64(3) || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("4th: got %d %s", resp.StatusCode, b)
		}
		resp, b = h.tokenCall(bob, "email/send", `{}`) // not in the research pack
		if resp.StatusCode != 403 || decode(t, b)["reason"] != "not_in_allow_tools" {
			t.Fatalf("email with research scope: got %d %s", resp.StatusCode, b)
		}
		both := tok("bob", "tools:research tools:comms", nil) // scopes add up
		if resp, b := h.tokenCall(both, "email/send", `{}`); resp.StatusCode != 200 {
			t.Fatalf("email with comms scope: got %d %s", resp.StatusCode, b)
		}
	})
	t.Run("ClaimMappedTier", func(t *testing.T) {
		pt := tok("pat", "", map[string]any{"groups": []string{"partners"}})
		resp, b := h.tokenCall(pt, "code_execute", `{}`)
		if resp.StatusCode != 200 {
			t.Fatalf("partner tier: got %d %s", resp.StatusCode, b)
		}
		if recs := h.records("oidc:corp:pat"); len(recs) != 1 || recs[0].Tier != "partner" {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("Cap", func(t *testing.T) {
		carol := tok("carol", "", nil)
		if resp, b := h.tokenCall(carol, "image/generate", `{}`); resp.StatusCode != 200 {
			t.Fatalf("first: got %d %s", resp.StatusCode, b)
		}
		hits := h.up.hits.Load()
		resp, b := h.tokenCall(carol, "image/generate", `{}`)
		if resp.StatusCode != 429 || decode(t, b)["spend_limit_usd"] != 0.05 {
			t.Fatalf("second: got %d %s", resp.StatusCode, b)
		}
		if h.up.hits.Load() != hits {
			t.Fatal("a capped call reached the upstream")
		}
	})
	t.Run("Status", func(t *testing.T) {
		resp, b := h.do("GET", "/authorization/status", "", "Authorization", "Bearer "+alice)
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		m := decode(t, b)
		if m["principal"] != "oidc:corp:alice" || m["tier"] != "oauth" || m["spend_today_usd"] != 0.01 || m["spend_limit_usd"] != 0.05 {
			t.Fatalf("status %s", b)
		}
		if d := m["recent_denials"].([]any); len(d) != 1 {
			t.Fatalf("recent denials %v", d)
		}
		resp, b = h.do("GET", "/authorization/status?principal=oidc:corp:alice", "", "Authorization", "Bearer "+alice)
		if resp.StatusCode != 401 {
			t.Fatalf("someone's status with a token: got %d %s, want 401", resp.StatusCode, b)
		}
		resp, b = h.admin("GET", "/authorization/status?principal=oidc:corp:alice", "")
		if resp.StatusCode != 200 || decode(t, b)["spend_today_usd"] != 0.01 {
			t.Fatalf("admin: got %d %s", resp.StatusCode, b)
		}
		expired := p.Sign(t, p.Claims("alice", gwResource, "", now.Add(-3*time.Hour), time.Hour))
		resp, _ = h.do("GET", "/authorization/status", "", "Authorization", "Bearer "+expired)
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("expired token status: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("PrincipalOverride", func(t *testing.T) {
		resp, b := h.admin("PUT", "/principals/oidc:corp:alice/policy", `{"deny_tools":["extract/structured"]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("put: got %d %s", resp.StatusCode, b)
		}
		resp, b = h.tokenCall(alice, "extract/structured", `{}`)
		if resp.StatusCode != 403 || decode(t, b)["reason"] != "deny_tools" {
			t.Fatalf("after override: got %d %s", resp.StatusCode, b)
		}
		if resp, b := h.admin("PUT", "/principals/oidc:corp:alice/policy", `{"tier":"nope"}`); resp.StatusCode != 400 {
			t.Fatalf("unknown tier: got %d %s", resp.StatusCode, b)
		}
		if resp, b := h.admin("DELETE", "/principals/oidc:corp:alice/policy", ""); resp.StatusCode != 200 {
			t.Fatalf("delete: got %d %s", resp.StatusCode, b)
		}
		if resp, b := h.tokenCall(alice, "extract/structured", `{}`); resp.StatusCode != 200 {
			t.Fatalf("after delete: got %d %s", resp.StatusCode, b)
		}
		if resp, _ := h.do("PUT", "/principals/oidc:corp:alice/policy", `{}`, "Authorization", "Bearer "+alice); resp.StatusCode != 401 {
			t.Fatalf("a token is not the admin: got %d", resp.StatusCode)
		}
		if resp, _ := h.admin("PUT", "/principals/key:k_nope/policy", `{}`); resp.StatusCode != 404 {
			t.Fatalf("unknown key: got %d", resp.StatusCode)
		}
		if resp, _ := h.admin("PUT", "/principals/bogus/policy", `{}`); resp.StatusCode != 400 {
			t.Fatalf("bad principal: got %d", resp.StatusCode)
		}
	})
	t.Run("InheritsKeyPolicy", func(t *testing.T) {
		k := h.createKey(`{"policy":{"allow_tools":["time/now"]}}`)
		dan := tok("dan", "tools:research", map[string]any{"toolgate_key_id": k.KeyID})
		if resp, b := h.tokenCall(dan, "time/now", `{}`); resp.StatusCode != 200 {
			t.Fatalf("time/now: got %d %s", resp.StatusCode, b)
		}
		resp, b := h.tokenCall(dan, "search/web", `{}`) // its scope would allow it; the key's policy does not
		if resp.StatusCode != 403 || decode(t, b)["reason"] != "not_in_allow_tools" {
			t.Fatalf("search/web: got %d %s", resp.StatusCode, b)
		}
		if resp, b := h.admin("DELETE", "/credits/keys/"+k.KeyID, ""); resp.StatusCode != 200 {
			t.Fatalf("revoke: %d %s", resp.StatusCode, b)
		}
		resp, b = h.tokenCall(dan, "time/now", `{}`)
		if resp.StatusCode != 401 || decode(t, b)["reason"] != oauth.ReasonKeyInvalid || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Fatalf("revoked key: got %d %s", resp.StatusCode, b)
		}
	})
	t.Run("KeyWins", func(t *testing.T) {
		k := h.createKey(`{}`)
		resp, b := h.do("POST", "/tools/code_execute", `{}`, "X-API-Key", k.Secret, "Authorization", "Bearer "+alice)
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s: the key identifies the caller", resp.StatusCode, b)
		}
	})
}

// TestOAuth_Refused: every way a token fails is a 401 with an
// invalid_token challenge, a ledger record with its reason (and the
// principal once the signature verified), nothing forwarded, and the
// token in no record.
func TestOAuth_Refused(t *testing.T) {
	h, p := newOAuthHarness(t, "")
	now := time.Now()
	good := func() map[string]any { return p.Claims("eve", gwResource, "", now, time.Hour) }
	with := func(k string, v any) map[string]any {
		c := good()
		c[k] = v
		return c
	}
	key := p.Current()
	der, _ := key.PublicKeyBytes()
	cases := []struct {
		name, token, reason string
		known               bool // the record names the principal
	}{
		{"Expired", p.Sign(t, p.Claims("eve", gwResource, "", now.Add(-2*time.Hour), time.Hour)), oauth.ReasonExpired, true},
		{"NotYetValid", p.Sign(t, with("nbf", now.Add(time.Hour).Unix())), oauth.ReasonNotYetValid, true},
		{"WrongAudience", p.Sign(t, with("aud", "https://other.example")), oauth.ReasonAudience, true},
		{"OtherResource", p.Sign(t, with("aud", "https://gw.example.evil")), oauth.ReasonAudience, true},
		{"WrongIssuer", p.Sign(t, with("iss", "https://evil.example")), oauth.ReasonUnknownIssuer, false},
		{"AlgNone", oauthtest.Forge(map[string]any{"alg": "none"}, good(), nil), oauth.ReasonAlgorithm, false},
		{"HS256PublicKey", oauthtest.Forge(map[string]any{"alg": "HS256", "kid": key.Kid}, good(), der), oauth.ReasonAlgorithm, false},
		{"UnknownKey", oauthtest.Forge(map[string]any{"alg": "RS256", "kid": "who"}, good(), []byte("x")), oauth.ReasonUnknownKey, false},
		{"BadSignature", oauthtest.Forge(map[string]any{"alg": "RS256", "kid": key.Kid}, good(), []byte("x")), oauth.ReasonSignature, false},
		{"Oversized", p.Sign(t, with("pad", strings.Repeat("x", 9000))), oauth.ReasonTooLarge, false},
		{"Garbage", "not-a-token", oauth.ReasonMalformed, false},
		{"GarbageJWTShape", "aaaa.bbbb.cccc", oauth.ReasonMalformed, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hits := h.up.hits.Load()
			resp, b := h.tokenCall(tc.token, "extract/structured", `{}`)
			if resp.StatusCode != 401 {
				t.Fatalf("got %d %s, want 401", resp.StatusCode, b)
			}
			ch := resp.Header.Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, `Bearer error="invalid_token", error_description="`) {
				t.Fatalf("WWW-Authenticate %q", ch)
			}
			m := decode(t, b)
			if m["error"] != "Invalid access token" || m["reason"] != tc.reason {
				t.Fatalf("body %s, want reason %s", b, tc.reason)
			}
			if h.up.hits.Load() != hits {
				t.Fatal("a refused token's call reached the upstream")
			}
			rid := resp.Header.Get("X-Request-Id")
			var rec *ledger.Record
			h.led.Query(ledger.Query{Type: "call"}, func(r *ledger.Record) error {
				if r.RequestID == rid {
					rec = r
				}
				return nil
			})
			if rec == nil {
				t.Fatalf("no record for request %s", rid)
			}
			if rec.Reason != tc.reason || rec.Outcome != "unauthenticated" || rec.Status != 401 {
				t.Fatalf("record %+v", rec)
			}
			if tc.known != (rec.Principal == "oidc:corp:eve") {
				t.Fatalf("record principal %q (known %v)", rec.Principal, tc.known)
			}
			if tc.name != "Garbage" && tc.name != "GarbageJWTShape" && tc.name != "Oversized" && rec.TokenID == "" { // an oversized token is not parsed at all
				t.Fatalf("record without the claimed jti: %+v", rec)
			}
			j, _ := rec.MarshalJSON()
			if strings.Contains(string(j), tc.token) {
				t.Fatal("the token is in the record")
			}
		})
	}
	t.Run("UnknownToolWithBadToken", func(t *testing.T) {
		resp, b := h.tokenCall("aaaa.bbbb.cccc", "no/such/tool", `{}`)
		if resp.StatusCode != 404 || decode(t, b)["error"] != "Unknown tool" {
			t.Fatalf("got %d %s, want the 404", resp.StatusCode, b)
		}
	})
	t.Run("UnknownToolWithToken", func(t *testing.T) {
		resp, _ := h.tokenCall(p.Sign(t, good()), "no/such/tool", `{}`)
		if resp.StatusCode != 404 {
			t.Fatalf("got %d", resp.StatusCode)
		}
		recs := h.records("oidc:corp:eve")
		if last := recs[len(recs)-1]; last.Outcome != "unknown_tool" || last.TokenID == "" {
			t.Fatalf("last record %+v: the 404 is the token holder's", last)
		}
	})
	t.Run("NoCredentials", func(t *testing.T) {
		resp, b := h.do("POST", "/tools/time/now", `{}`)
		if resp.StatusCode != 401 || decode(t, b)["error"] != "API key or access token required" ||
			resp.Header.Get("WWW-Authenticate") != `Bearer resource_metadata="`+gwResource+`/.well-known/oauth-protected-resource"` {
			t.Fatalf("got %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
		}
	})
	t.Run("NoAuthConfigured", func(t *testing.T) {
		plain := newHarness(t)
		resp, b := plain.tokenCall(p.Sign(t, good()), "time/now", `{}`)
		if resp.StatusCode != 401 || decode(t, b)["error"] != "API key required" {
			t.Fatalf("got %d %s: without auth.json a JWT is no credential", resp.StatusCode, b)
		}
	})
}

// TestOAuth_Config: auth.json naming a tier policies.json lacks fails the
// gateway's start and a reload, naming the auth.json path; a reload that
// works swaps the issuers.
func TestOAuth_Config(t *testing.T) {
	p := oauthtest.Start(t)
	up := newUpstream(t)
	cfg, err := oauth.Decode([]byte(`{"resource":"` + gwResource + `","issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `","claims":{"scope":{"s":{"tier":"nope"}}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { o.Policies = mustPolicies(t, oauthPolicies) })
	err = h.gw.ReloadAuth(cfg)
	if err == nil || !strings.Contains(err.Error(), `$.issuers[0].claims.scope."s"`) {
		t.Fatalf("reload with an unknown mapped tier: %v", err)
	}
	noTier, _ := oauth.Decode([]byte(`{"resource":"` + gwResource + `","issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `","tier":"missing"}]}`))
	if err := h.gw.ReloadAuth(noTier); err == nil || !strings.Contains(err.Error(), `$.issuers[0].tier: tier "missing" is not declared`) {
		t.Fatalf("reload with an unknown tier: %v", err)
	}
	tok := p.Sign(t, p.Claims("zed", gwResource, "", time.Now(), time.Hour))
	if resp, _ := h.tokenCall(tok, "time/now", `{}`); resp.StatusCode != 401 {
		t.Fatalf("before auth: %d", resp.StatusCode)
	}
	if err := h.gw.ReloadAuth(oauthConfig(t, p, "")); err != nil {
		t.Fatal(err)
	}
	if resp, b := h.tokenCall(tok, "time/now", `{}`); resp.StatusCode != 200 {
		t.Fatalf("after auth: %d %s", resp.StatusCode, b)
	}
	if err := h.gw.ReloadAuth(nil); err != nil {
		t.Fatal(err)
	}
	if resp, _ := h.tokenCall(tok, "time/now", `{}`); resp.StatusCode != 401 {
		t.Fatalf("auth removed: %d", resp.StatusCode)
	}
}

// TestOAuth_MCP: the MCP endpoint as an OAuth resource server: the 401
// challenge naming the metadata, the metadata (both forms), tokens over
// the Go SDK client, insufficient_scope with the scopes that would do.
func TestOAuth_MCP(t *testing.T) {
	h, p := newOAuthHarness(t, "")
	resp, b := h.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`,
		"Content-Type", "application/json", "Accept", "application/json, text/event-stream")
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer resource_metadata="`+gwResource+`/.well-known/oauth-protected-resource/mcp"` {
		t.Fatalf("no credentials: %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
	}
	for path, res := range map[string]string{"/.well-known/oauth-protected-resource/mcp": gwResource + "/mcp", "/.well-known/oauth-protected-resource": gwResource} {
		resp, b := h.do("GET", path, "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		var md struct {
			Resource string   `json:"resource"`
			Servers  []string `json:"authorization_servers"`
			Scopes   []string `json:"scopes_supported"`
		}
		json.Unmarshal(b, &md)
		if md.Resource != res || len(md.Servers) != 1 || md.Servers[0] != p.Issuer() || strings.Join(md.Scopes, " ") != "tools:research tools:comms" {
			t.Fatalf("%s: %s", path, b)
		}
	}
	if resp, _ := h.do("GET", "/.well-known/oauth-protected-resource/other", ""); resp.StatusCode != 404 {
		t.Fatalf("other resource metadata: %d", resp.StatusCode)
	}

	now := time.Now()
	expired := p.Sign(t, p.Claims("mia", gwResource+"/mcp", "", now.Add(-2*time.Hour), time.Hour))
	resp, _ = h.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "Authorization", "Bearer "+expired, "Content-Type", "application/json")
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.Contains(ch, `resource_metadata="`) || !strings.Contains(ch, `error="invalid_token"`) {
		t.Fatalf("expired over MCP: %d %q", resp.StatusCode, ch)
	}
	if recs := h.records("oidc:corp:mia"); len(recs) != 1 || recs[0].Reason != oauth.ReasonExpired || recs[0].Protocol != "mcp" {
		t.Fatalf("records %+v", recs)
	}

	tok := p.Sign(t, p.Claims("mia", gwResource+"/mcp", "tools:research", now, time.Hour))
	for _, version := range []string{"2025-06-18", "2026-07-28"} {
		client := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
		tr := &mcp.StreamableClientTransport{Endpoint: h.url + "/mcp", MaxRetries: -1,
			HTTPClient: &http.Client{Transport: bearerTransport{tok}, Timeout: 10 * time.Second}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cs, err := client.Connect(ctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: version})
		cancel()
		if err != nil {
			t.Fatalf("%s: connect: %v", version, err)
		}
		if names := strings.Join(toolNames(t, cs), " "); names != "extract/structured search/web" {
			t.Fatalf("%s: tools/list %q", version, names)
		}
		res, _ := callMCP(t, cs, "search/web", map[string]any{"q": "x"})
		if res.IsError {
			t.Fatalf("%s: search/web: %+v", version, res)
		}
		cs.Close()
	}
	if recs := h.records("oidc:corp:mia"); len(recs) != 3 || recs[2].Outcome != "allowed" || recs[2].TokenID == "" {
		t.Fatalf("records %+v", recs)
	}

	// A tool its scopes do not reach: 403 insufficient_scope naming the scope that would.
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"email/send","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	resp, b = h.do("POST", "/mcp", body, "Authorization", "Bearer "+tok, "Content-Type", "application/json",
		"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "email/send")
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != 403 || !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="tools:comms"`) || !strings.Contains(string(b), `"required_scopes":["tools:comms"]`) {
		t.Fatalf("insufficient scope: %d %q %s", resp.StatusCode, ch, b)
	}
	// A tool no scope reaches: the policy's denial, as a tool result.
	body = strings.ReplaceAll(body, "email/send", "code_execute")
	resp, b = h.do("POST", "/mcp", body, "Authorization", "Bearer "+tok, "Content-Type", "application/json",
		"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "code_execute")
	if resp.StatusCode != 200 || !strings.Contains(string(b), `Tool access denied by policy`) {
		t.Fatalf("denied: %d %s", resp.StatusCode, b)
	}
}

type bearerTransport struct{ tok string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}

// TestOAuth_Concurrent: tokens of one subject share its quota window
// exactly under concurrent first-seen and cached verifications, while
// auth.json is reloaded (key caches kept, token caches renewed).
func TestOAuth_Concurrent(t *testing.T) {
	h, p := newOAuthHarness(t, "")
	now := time.Now()
	var toks []string
	for range 5 {
		toks = append(toks, p.Sign(t, p.Claims("quinn", gwResource, "tools:research", now, time.Hour)))
	}
	var wg sync.WaitGroup
	var allowed, quota atomic.Int64
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", h.url+"/tools/search/web", strings.NewReader(`{}`))
			req.Header.Set("Authorization", "Bearer "+toks[i%len(toks)])
			resp, err := h.http.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case 200:
				allowed.Add(1)
			case 403:
				quota.Add(1)
			default:
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
		if i%6 == 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := h.gw.ReloadAuth(oauthConfig(t, p, "")); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	if allowed.Load() != 3 || quota.Load() != 21 {
		t.Fatalf("allowed %d, over quota %d: want exactly 3 of 24 at the research scope's light quota 3", allowed.Load(), quota.Load())
	}
}
