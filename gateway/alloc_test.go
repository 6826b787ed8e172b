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
