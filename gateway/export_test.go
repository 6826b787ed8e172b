package gateway

// ResponseBufferInUse returns the bytes of g's response budget held now
// by calls reading or writing out an upstream response.
func ResponseBufferInUse(g *Gateway) int64 { return g.budget.held.Load() }
