//go:build !race

package gateway

import (
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
)

// TestDecision_ZeroAlloc: the API-key decision path allocates nothing.
func TestDecision_ZeroAlloc(t *testing.T) {
	env := newBenchEnv(t, ledger.SyncInterval)
	defer env.close()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("X-Api-Key", env.secret)
	st := env.g.state.Load()
	rt := st.routes[0]
	run := func() {
		c := acquireCall()
		c.start = env.g.now()
		c.st, c.rt = st, rt
		env.g.restRequest(&ctx, &c.req)
		if env.g.identify(c) != nil || env.g.decide(c) != nil {
			t.Fatal("denied")
		}
		env.g.spend.Commit(c.res, nil)
		releaseCall(c)
	}
	run()
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("decision path allocates %v times per call, want 0", n)
	}
}

// TestDecisionGoverned_ZeroAlloc: with every governance feature on, the
// decision path (and giving its holds back) allocates nothing.
func TestDecisionGoverned_ZeroAlloc(t *testing.T) {
	env := governedEnv(t)
	defer env.close()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("X-Api-Key", env.secret)
	ctx.Request.SetBodyString(`{"text":"Invoice 42"}`)
	st := env.g.state.Load()
	run := func() { governedDecision(t, env, &ctx, st) }
	run()
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("governed decision path allocates %v times per call, want 0", n)
	}
}

// TestDecision_TokenZeroAlloc: the decision for a cached access token
// allocates nothing either.
func TestDecision_TokenZeroAlloc(t *testing.T) {
	env, tok := tokenBenchEnv(t)
	defer env.close()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("Authorization", "Bearer "+tok)
	st := env.g.state.Load()
	run := func() { env.decideOnce(t, &ctx, st) }
	run()
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("cached-token decision allocates %v times per call, want 0", n)
	}
}

// TestPrepareUpstreamRequest_Allocs: building the upstream request (one
// pass over the caller's headers, the gateway's own headers, the tool's
// URL) allocates once, for fasthttp's header iterator (RequestHeader.All
// returns a closure); it allocated 4 times before the pass's state was
// pooled and the tool's URL parsed once per route.
func TestPrepareUpstreamRequest_Allocs(t *testing.T) {
	env := newBenchEnv(t, ledger.SyncInterval)
	defer env.close()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/tools/extract/structured?lang=en")
	ctx.Request.Header.Set("X-Api-Key", env.secret)
	ctx.Request.Header.Set("Content-Type", "application/json")
	ctx.Request.Header.Set("User-Agent", "agent/1.0")
	ctx.Request.Header.Set("Accept", "application/json")
	ctx.Request.Header.Set("X-Trace", "abc")
	ctx.Request.Header.Set("Connection", "keep-alive, X-Trace")
	ctx.Request.SetBodyString(`{"text":"Invoice 42"}`)
	st := env.g.state.Load()
	rt := st.routes[0]
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	c := acquireCall()
	defer releaseCall(c)
	c.start = env.g.now()
	c.st, c.rt = st, rt
	env.g.restRequest(&ctx, &c.req)
	if env.g.identify(c) != nil {
		t.Fatal("not identified")
	}
	run := func() {
		req.Reset()
		env.g.prepareUpstreamRequest(c, req)
	}
	run()
	if got := req.Header.Peek("X-Trace"); got != nil {
		t.Fatalf("X-Trace named by Connection forwarded: %q", got)
	}
	if got := string(req.Header.Peek("Accept")); got != "application/json" {
		t.Fatalf("Accept: got %q", got)
	}
	if n := testing.AllocsPerRun(1000, run); n > 1 {
		t.Fatalf("prepareUpstreamRequest allocates %v times per call, want at most 1", n)
	}
}
