package gateway

import "github.com/valyala/fasthttp"

// ResponseBufferInUse returns the bytes of g's response budget held now
// by calls reading or writing out an upstream response.
func ResponseBufferInUse(g *Gateway) int64 { return g.budget.held.Load() }

// SettlerProbeWaiters returns how many /readyz calls wait for the
// settlement backend probe in flight.
func SettlerProbeWaiters(g *Gateway) int {
	p := g.settlerHealth
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiters
}

// Options returns the options g was built with.
func (g *Gateway) Options() Options { return g.opts }

// StatsOf answers GET /stats?query on g without a listener.
func StatsOf(g *Gateway, query string) ([]byte, int) {
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/stats?" + query)
	ctx.Request.Header.Set("Authorization", "Bearer "+g.opts.AdminToken)
	g.Handler(&ctx)
	return ctx.Response.Body(), ctx.Response.StatusCode()
}
