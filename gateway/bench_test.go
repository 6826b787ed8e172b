package gateway

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
)

const benchPolicies = `{"version":1,"fail_mode":"open",
 "defaults":{"rate_class_quota":{"medium":30,"heavy":10}},
 "tiers":{"api_key":{"daily_spend_cap_usd":null},"wallet":{},"unknown_wallet":{}},
 "enforced":{"deny_tools":[]}}`

const benchUpstreamBody = `{"id":"r-1","result":{"words":6,"chars":32,"language":"en","entities":[{"type":"org","text":"ACME"},{"type":"amount","text":"$120"}]},"model":"demo","latency_ms":3}`

// benchEnv is a gateway over a real badger store whose upstream is a
// fasthttp server on an in-memory listener.
type benchEnv struct {
	g        *Gateway
	secret   string
	upLn     *fasthttputil.InmemoryListener
	close    func()
	upstream *fasthttp.Server
}

func newBenchEnv(b testing.TB, sync ledger.SyncMode) *benchEnv {
	b.Helper()
	dir := b.TempDir()
	db, err := badger.Open(benchStoreOptions(dir + "/store"))
	if err != nil {
		b.Fatal(err)
	}
	led, err := ledger.Open(db, dir, ledger.Options{Sync: sync})
	if err != nil {
		b.Fatal(err)
	}
	keys, _ := identity.Open(db)
	cat, err := catalog.Decode([]byte(`{"tools":[{"id":"extract/structured","rate_class":"light","price_usd":"0.000001","upstream":"http://upstream/extract"}]}`))
	if err != nil {
		b.Fatal(err)
	}
	doc, err := policy.DecodeDocument([]byte(benchPolicies))
	if err != nil {
		b.Fatal(err)
	}
	upLn := fasthttputil.NewInmemoryListener()
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(benchUpstreamBody)
	}}
	go up.Serve(upLn)
	g, err := New(Options{DB: db, Keys: keys, Ledger: led, Catalog: cat, Policies: doc, AdminToken: "x",
		UpstreamDial: func(string) (net.Conn, error) { return upLn.Dial() }})
	if err != nil {
		b.Fatal(err)
	}
	secret, _, err := keys.Create("bench", time.Time{}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{g: g, secret: secret, upLn: upLn, upstream: up, close: func() {
		up.Shutdown()
		g.Close()
		led.Close()
		db.Close()
	}}
}

// benchStoreOptions are cmd/toolgate's store options (storeOptions), so
// that the ledger's badger work is measured as the gateway runs it.
func benchStoreOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).WithLogger(nil).WithNumVersionsToKeep(1).
		WithMemTableSize(32 << 20).WithBlockCacheSize(16 << 20)
}

// BenchmarkDecision measures identify → policy → quota → spend for an
// API-key call, the in-memory decision path, with no HTTP or ledger.
func BenchmarkDecision(b *testing.B) {
	env := newBenchEnv(b, ledger.SyncInterval)
	defer env.close()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("X-Api-Key", env.secret)
	st := env.g.state.Load()
	rt := st.routes[0]
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := acquireCall()
		c.start = env.g.now()
		c.st, c.rt = st, rt
		env.g.restRequest(&ctx, &c.req)
		if d := env.g.identify(c); d != nil {
			b.Fatal(string(d.AppendJSON(nil)))
		}
		if d := env.g.decide(c); d != nil {
			b.Fatal(string(d.AppendJSON(nil)))
		}
		env.g.spend.Commit(c.res, nil)
		releaseCall(c)
	}
}

// bareProxy is the baseline: a fasthttp pass-through proxy doing only what
// any fasthttp gateway must (copy request, call upstream, copy response).
func bareProxy(upLn *fasthttputil.InmemoryListener) fasthttp.RequestHandler {
	hc := &fasthttp.HostClient{Addr: "upstream", Dial: func(string) (net.Conn, error) { return upLn.Dial() }, MaxConns: 4096}
	return func(ctx *fasthttp.RequestCtx) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		ctx.Request.Header.CopyTo(&req.Header)
		req.SetRequestURI("http://upstream/extract")
		req.SetBodyRaw(ctx.Request.Body())
		if err := hc.DoTimeout(req, resp, 30*time.Second); err != nil {
			ctx.SetStatusCode(502)
		} else {
			resp.Header.CopyTo(&ctx.Response.Header)
			ctx.Response.SetBody(resp.Body())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

// runHandler serves h on an in-memory listener and drives it with
// b.RunParallel clients (or one client, serially, with parallel false).
func runHandler(b *testing.B, h fasthttp.RequestHandler, key string, parallel ...bool) {
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: h, ReadBufferSize: 16 << 10}
	go srv.Serve(ln)
	defer srv.Shutdown()
	client := &fasthttp.HostClient{Addr: "gw", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: 4096}
	b.ReportAllocs()
	if len(parallel) > 0 && !parallel[0] {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		b.ResetTimer()
		for b.Loop() {
			req.SetRequestURI("http://gw/tools/extract/structured")
			req.Header.SetMethod("POST")
			req.Header.Set("X-Api-Key", key)
			req.SetBodyString(`{"text":"Invoice 42 from ACME, total $120"}`)
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Fatalf("%v %d", err, resp.StatusCode())
			}
		}
		return
	}
	b.SetParallelism(16) // 32 concurrent clients on 2 cores, as under real load
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		for pb.Next() {
			req.SetRequestURI("http://gw/tools/extract/structured")
			req.Header.SetMethod("POST")
			req.Header.Set("X-Api-Key", key)
			req.SetBodyString(`{"text":"Invoice 42 from ACME, total $120"}`)
			if err := client.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
			}
		}
	})
}

// BenchmarkHandler compares the whole gateway (key lookup, policy, quota,
// spend, proxy, ledger commit before the answer) with the bare proxy, in
// the same run, over in-memory listeners.
func BenchmarkHandler(b *testing.B) {
	b.Run("BareProxy", func(b *testing.B) {
		env := newBenchEnv(b, ledger.SyncInterval)
		defer env.close()
		runHandler(b, bareProxy(env.upLn), env.secret)
	})
	b.Run("Gateway", func(b *testing.B) {
		env := newBenchEnv(b, ledger.SyncInterval)
		defer env.close()
		runHandler(b, env.g.Handler, env.secret)
	})
	// One client, one call at a time: the latency each adds.
	b.Run("BareProxySerial", func(b *testing.B) {
		env := newBenchEnv(b, ledger.SyncInterval)
		defer env.close()
		runHandler(b, bareProxy(env.upLn), env.secret, false)
	})
	b.Run("GatewaySerial", func(b *testing.B) {
		env := newBenchEnv(b, ledger.SyncInterval)
		defer env.close()
		runHandler(b, env.g.Handler, env.secret, false)
	})
}

// BenchmarkMCP compares, one call at a time over in-memory listeners, the
// same tool called straight on its upstream, through the gateway over REST,
// and through the gateway over MCP (tools/call, stateless revision): the
// gateway's added latency over MCP is MCP − Direct, over REST REST − Direct.
func BenchmarkMCP(b *testing.B) {
	serial := func(b *testing.B, h fasthttp.RequestHandler, prepare func(req *fasthttp.Request)) {
		ln := fasthttputil.NewInmemoryListener()
		srv := &fasthttp.Server{Handler: h, ReadBufferSize: 16 << 10}
		go srv.Serve(ln)
		defer srv.Shutdown()
		client := &fasthttp.HostClient{Addr: "gw", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		b.ReportAllocs()
		lat := make([]time.Duration, 0, 1<<16)
		b.ResetTimer()
		for b.Loop() {
			prepare(req)
			t0 := time.Now()
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
			}
			if len(lat) < cap(lat) {
				lat = append(lat, time.Since(t0))
			}
		}
		b.StopTimer()
		slices.Sort(lat)
		if n := len(lat); n > 0 {
			b.ReportMetric(float64(lat[n/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[min(n-1, n*99/100)].Nanoseconds()), "p99-ns")
		}
	}
	args := `{"text":"Invoice 42 from ACME, total $120"}`
	b.Run("Direct", func(b *testing.B) {
		env := newBenchEnv(b, ledger.SyncInterval)
		defer env.close()
		serial(b, env.upstream.Handler, func(req *fasthttp.Request) {
			req.SetRequestURI("http://gw/extract")
			req.Header.SetMethod("POST")
			req.SetBodyString(args)
		})
	})
	b.Run("REST", func(b *testing.B) {
		env := newBenchEnv(b, ledger.SyncInterval)
		defer env.close()
		serial(b, env.g.Handler, func(req *fasthttp.Request) {
			req.SetRequestURI("http://gw/tools/extract/structured")
			req.Header.SetMethod("POST")
			req.Header.Set("X-Api-Key", env.secret)
			req.SetBodyString(args)
		})
	})
	b.Run("MCP", func(b *testing.B) {
		env := newBenchEnv(b, ledger.SyncInterval)
		defer env.close()
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"extract/structured","arguments":` + args +
			`,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
		serial(b, env.g.Handler, func(req *fasthttp.Request) {
			req.SetRequestURI("http://gw/mcp")
			req.Header.SetMethod("POST")
			req.Header.Set("X-Api-Key", env.secret)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2026-07-28")
			req.Header.Set("Mcp-Method", "tools/call")
			req.Header.Set("Mcp-Name", "extract/structured")
			req.SetBodyString(body)
		})
	})
}
