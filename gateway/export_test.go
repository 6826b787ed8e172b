package gateway

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
