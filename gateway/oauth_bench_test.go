package gateway

import (
	"slices"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/oauth/oauthtest"
	"github.com/toolgate/toolgate/policy"
)

// tokenBenchEnv is newBenchEnv trusting a real in-process OIDC provider,
// with the oauth tier and a scope mapping, and a token from it.
func tokenBenchEnv(tb testing.TB) (*benchEnv, string) {
	tb.Helper()
	env := newBenchEnv(tb, ledger.SyncInterval)
	p := oauthtest.Start(tb)
	st := env.g.state.Load()
	doc, err := policy.DecodeDocument([]byte(`{"version":1,"fail_mode":"open",
 "defaults":{"rate_class_quota":{"medium":30,"heavy":10}},
 "tiers":{"api_key":{"daily_spend_cap_usd":null},"oauth":{"daily_spend_cap_usd":null}}}`))
	if err != nil {
		tb.Fatal(err)
	}
	if err := env.g.Reload(st.cat, doc); err != nil {
		tb.Fatal(err)
	}
	cfg, err := oauth.Decode([]byte(`{"version":1,"resource":"https://gw.example","issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `",
		"claims":{"scope":{"tools:extract":{"allow_tools":["extract/*"]}}}}]}`))
	if err != nil {
		tb.Fatal(err)
	}
	if err := env.g.ReloadAuth(cfg); err != nil {
		tb.Fatal(err)
	}
	tok := p.Sign(tb, p.Claims("bench", "https://gw.example", "tools:extract", time.Now(), 24*time.Hour))
	return env, tok
}

// decideOnce runs identify → policy → quota → spend for one call whose
// credentials are in ctx.
func (env *benchEnv) decideOnce(tb testing.TB, ctx *fasthttp.RequestCtx, st *state) {
	c := acquireCall()
	c.start = env.g.now()
	c.st, c.rt = st, st.routes[0]
	env.g.restRequest(ctx, &c.req)
	if d := env.g.identify(c); d != nil {
		tb.Fatal(string(d.AppendJSON(nil)))
	}
	if d := env.g.decide(c); d != nil {
		tb.Fatal(string(d.AppendJSON(nil)))
	}
	env.g.spend.Commit(c.res, nil)
	releaseCall(c)
}

// BenchmarkDecisionToken pairs the decision for a cached access token
// (hash, cache lookup, mapped policy) with the API-key decision, in one
// run on one gateway.
func BenchmarkDecisionToken(b *testing.B) {
	env, tok := tokenBenchEnv(b)
	defer env.close()
	st := env.g.state.Load()
	var keyCtx, tokCtx fasthttp.RequestCtx
	keyCtx.Request.Header.Set("X-Api-Key", env.secret)
	tokCtx.Request.Header.Set("Authorization", "Bearer "+tok)
	env.decideOnce(b, &tokCtx, st) // first seen: verified and cached
	run := func(ctx *fasthttp.RequestCtx) func(b *testing.B) {
		return func(b *testing.B) {
			lat := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				env.decideOnce(b, ctx, st)
				lat[i] = time.Since(t0)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[b.N/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[min(b.N-1, b.N*99/100)].Nanoseconds()), "p99-ns")
		}
	}
	b.Run("APIKey", run(&keyCtx))
	b.Run("CachedToken", run(&tokCtx))
}
