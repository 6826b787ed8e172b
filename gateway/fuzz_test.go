package gateway

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// FuzzHandler drives the whole handler — tool calls, x402 headers and the
// management API — with arbitrary methods, paths, credentials, payment
// headers and bodies: the answer is never a 500, never a panic.
func FuzzHandler(f *testing.F) {
	g, secret := newFuzzGateway(f)

	f.Add("POST", "/tools/paid", secret, "", "", []byte(`{}`))
	f.Add("POST", "/tools/paid", "", "eyJ4NDAyVmVyc2lvbiI6Mn0=", "", []byte(``))
	f.Add("GET", "/authorization/status?api_key="+secret, "", "", "", []byte(``))
	f.Add("PUT", "/credits/keys/k_X/policy", "", "", "Bearer admin", []byte(`{"deny_tools":["*"]}`))
	f.Add("POST", "/credits/keys", "", "", "Bearer admin", []byte(`{"name":"x","credits_usd":"1"}`))
	f.Add("GET", "/audit?since=24h&principal=key:x", "", "", "Bearer admin", []byte(``))
	f.Add("PUT", "/wallets/0x209693Bc6afc0C5328bA36FaF03C514EF312287C/policy", "", "", "Bearer admin", []byte(`{}`))
	f.Add("OPTIONS", "/tools/free", "", "", "", []byte(``))
	f.Fuzz(func(t *testing.T, method, uri, apiKey, payment, auth string, body []byte) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(method)
		ctx.Request.SetRequestURI(uri)
		if apiKey != "" {
			ctx.Request.Header.Set("X-API-Key", apiKey)
		}
		if payment != "" {
			ctx.Request.Header.Set("PAYMENT-SIGNATURE", payment)
			ctx.Request.Header.Set("X-PAYMENT", payment)
		}
		if auth != "" {
			ctx.Request.Header.Set("Authorization", auth)
		}
		ctx.Request.SetBody(body)
		g.Handler(&ctx)
		if code := ctx.Response.StatusCode(); code >= 500 && code != 502 && code != 503 && code != 504 {
			t.Fatalf("%s %q: status %d: %s", method, uri, code, ctx.Response.Body())
		}
	})
}

// FuzzMCP drives /mcp with arbitrary bodies and protocol headers: the
// answer is never a 5xx (an upstream failure is a JSON-RPC error), never a
// panic, and every body is one JSON value.
func FuzzMCP(f *testing.F) {
	g, secret := newFuzzGateway(f)
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{`+meta+`}}`), "2026-07-28", "tools/list", "", "")
	f.Add([]byte(`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"free","arguments":{},`+meta+`}}`), "2026-07-28", "tools/call", "free", "")
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`), "", "", "", "")
	f.Add([]byte(`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`), "2025-11-25", "", "", "s")
	f.Add([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), "2025-11-25", "", "", "s")
	f.Fuzz(func(t *testing.T, body []byte, version, method, name, session string) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/mcp")
		ctx.Request.Header.Set("X-API-Key", secret)
		for k, v := range map[string]string{"MCP-Protocol-Version": version, "Mcp-Method": method, "Mcp-Name": name, "Mcp-Session-Id": session} {
			if v != "" {
				ctx.Request.Header.Set(k, v)
			}
		}
		ctx.Request.SetBody(body)
		g.Handler(&ctx)
		code := ctx.Response.StatusCode()
		if code >= 500 {
			t.Fatalf("status %d: %s", code, ctx.Response.Body())
		}
		if b := ctx.Response.Body(); len(b) > 0 && !json.Valid(b) {
			t.Fatalf("status %d: body is not one JSON value: %q", code, b)
		}
	})
}

// newFuzzGateway is the gateway the fuzz targets drive: badger on disk, a
// paid and a free tool whose upstreams do not answer, x402 on with a
// facilitator that is not there, and one API key.
func newFuzzGateway(f *testing.F) (*Gateway, string) {
	dir := f.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir + "/store").WithLogger(nil))
	if err != nil {
		f.Fatal(err)
	}
	led, err := ledger.Open(db, dir, ledger.Options{Sync: ledger.SyncInterval})
	if err != nil {
		f.Fatal(err)
	}
	keys, _ := identity.Open(db)
	cat, err := catalog.Decode([]byte(`{"tools":[
 {"id":"paid","rate_class":"light","price_usd":"0.01","upstream":"http://127.0.0.1:1/p"},
 {"id":"free","rate_class":"heavy","upstream":"http://127.0.0.1:1/f","methods":["GET","POST"]}]}`))
	if err != nil {
		f.Fatal(err)
	}
	doc, err := policy.DecodeDocument([]byte(benchPolicies))
	if err != nil {
		f.Fatal(err)
	}
	cfg, err := x402.NewConfig("eip155:84532", "", "", "", "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "http://gw")
	if err != nil {
		f.Fatal(err)
	}
	g, err := New(Options{DB: db, Keys: keys, Ledger: led, Catalog: cat, Policies: doc, AdminToken: "admin",
		X402: &X402Options{Config: cfg, Nonces: x402.NewNonceLock(db),
			Settler:       &x402.Facilitator{URL: "http://127.0.0.1:1", HTTP: &http.Client{Timeout: time.Second}},
			VerifyTimeout: 200 * time.Millisecond, SettleTimeout: 200 * time.Millisecond}})
	if err != nil {
		f.Fatal(err)
	}
	secret, _, _ := keys.Create("fuzz", time.Time{}, time.Now())
	f.Cleanup(func() { g.Close(); led.Close(); db.Close() })
	return g, secret
}
