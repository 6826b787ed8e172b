package toolgate_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/oauth/oauthtest"
)

// TestMCP_OAuthTS: the TypeScript SDK's MCP client with OAuth, against
// the toolgate binary trusting a real OIDC provider in this process. It
// holds no token and no key: toolgate's 401 names its protected-resource
// metadata; the SDK fetches it, discovers the provider, gets a
// client_credentials token for toolgate's resource and calls tools with
// it; the provider grants one scope per token, so the call needing the
// other scope gets 403 insufficient_scope naming it, and the SDK asks for
// that scope and retries. Calls are recorded under the token's principal
// with its jti and client_id.
func TestMCP_OAuthTS(t *testing.T) {
	t.Parallel()
	chain.RequireDeps(t)
	prov := oauthtest.Start(t)
	client := &oauthtest.Client{ID: "agent-7", Secret: "s3cret", Scopes: []string{"tools:research"}}
	prov.AddClient(client)
	both := &oauthtest.Client{ID: "agent-8", Secret: "s3cret8", Scopes: []string{"tools:research", "tools:comms"}}
	prov.AddClient(both)
	auth := filepath.Join(t.TempDir(), "auth.json")
	os.WriteFile(auth, []byte(`{"version":1,"issuers":[{"alias":"corp","issuer":"`+prov.Issuer()+`",
		"claims":{"scope":{"tools:research":{"allow_tools":["extract/structured"]},"tools:comms":{"allow_tools":["email/send"]}}}}]}`), 0o600)
	up := startUpstream(t)
	g := startGateway(t, up.url, "--auth", auth, "--x402-facilitator", "http://127.0.0.1:9")

	run := runMCPFlags(t, g, "mcp-oauth.mjs", []string{"--client-id", client.ID, "--client-secret", client.Secret, "--issuer", prov.Issuer()}, []mcpStep{
		{"op": "list"},
		{"op": "call", "name": "extract/structured", "arguments": map[string]any{"text": "Invoice 42"}},
		{"op": "call", "name": "email/send", "arguments": map[string]any{"to": "a@example.com"}},
		{"op": "call", "name": "image/generate", "arguments": map[string]any{"prompt": "cat"}},
	})
	if run.Connected.ServerInfo.Name != "toolgate" {
		t.Fatalf("connected: %+v", run.Connected)
	}

	t.Run("Discovery", func(t *testing.T) {
		var seq []string
		for _, f := range run.Fetches {
			u, _ := url.Parse(f.URL)
			seq = append(seq, f.Method+" "+u.Path+" "+strconv.Itoa(f.Status))
		}
		first := run.Fetches[0]
		if first.Status != 401 || first.WWWAuthenticate != `Bearer resource_metadata="`+g.url+`/.well-known/oauth-protected-resource/mcp"` {
			t.Fatalf("first request: %+v", first)
		}
		joined := strings.Join(seq, "\n")
		for _, want := range []string{"GET /.well-known/oauth-protected-resource/mcp 200", "GET /oidc/.well-known/openid-configuration 200", "POST /oidc/token 200"} {
			if !strings.Contains(joined, want) {
				t.Errorf("no %q among the client's requests:\n%s", want, joined)
			}
		}
		var stepUp bool
		for _, f := range run.Fetches {
			if f.Status == 403 && strings.Contains(f.WWWAuthenticate, `error="insufficient_scope"`) && strings.Contains(f.WWWAuthenticate, `scope="tools:comms"`) {
				stepUp = true
			}
		}
		if !stepUp {
			t.Errorf("no 403 insufficient_scope naming tools:comms:\n%s", joined)
		}
		if n := client.Tokens.Load(); n != 2 {
			t.Errorf("%d tokens issued, want 2 (the first, then the step-up attempt)", n)
		}
	})
	t.Run("Calls", func(t *testing.T) {
		if names := strings.Join(listedNames(run.one(t, 0)), ","); names != "extract/structured" {
			t.Errorf("tools/list with the research scope: %s", names)
		}
		if r := run.one(t, 1).Result; r.IsError || r.structured(t)["principal"] != "oidc:corp:agent-7" {
			t.Errorf("extract/structured: %+v", r)
		}
		if l := run.op(2); len(l) != 1 || !strings.Contains(l[0].Error, "403 after trying upscoping") {
			t.Errorf("email/send without the comms scope: %+v", l)
		}
		r := run.one(t, 3).Result
		if !r.IsError || r.structured(t)["error"] != "Tool access denied by policy" {
			t.Errorf("image/generate (no scope allows it): %+v", r)
		}
	})
	t.Run("BothScopes", func(t *testing.T) {
		run := runMCPFlags(t, g, "mcp-oauth.mjs", []string{"--client-id", both.ID, "--client-secret", both.Secret, "--issuer", prov.Issuer()}, []mcpStep{
			{"op": "call", "name": "email/send", "arguments": map[string]any{"to": "a@example.com"}},
			{"op": "call", "name": "extract/structured", "arguments": map[string]any{"text": "x"}},
		})
		for i := range 2 {
			if r := run.one(t, i).Result; r.IsError {
				t.Errorf("step %d: %+v", i, r)
			}
		}
	})
	t.Run("Ledger", func(t *testing.T) {
		got := g.mcpRecords(t, "oidc:corp:agent-7")
		if got["mcp:allowed"] != 1 || got["mcp:denied"] != 3 {
			t.Errorf("records by outcome: %v, want 1 allowed, 3 denied (email/send before and after the step-up attempt, image/generate)", got)
		}
		for _, r := range g.audit(t, "oidc:corp:agent-7") {
			if r.Type == "call" && (r.ClientID != "agent-7" || r.TokenID == "") {
				t.Errorf("record without the token's client_id or jti: %+v", r)
			}
		}
	})
}
