package gateway

import "github.com/prometheus/client_golang/prometheus"

// ReadyCheck is one more component GET /readyz reports, for work that
// cmd wires beside the gateway (audit shipping). Status returns the
// text shown under checks[Name] — no secret and no internal error text:
// /readyz needs no credentials — and whether the gateway counts as
// ready as far as this component goes. Status is called from /readyz
// handlers concurrently and must be quick.
type ReadyCheck struct {
	Name   string
	Status func() (text string, ready bool)
}

// registerExtensions adds the checks' collectors to the gateway's
// registry; it panics, like MustRegister, on a duplicate series.
func (m *metrics) registerExtensions(cs []prometheus.Collector) {
	if len(cs) > 0 {
		m.reg.MustRegister(cs...)
	}
}
