package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/x402"
)

// facilitatorPool is a settlement backend over several facilitators with
// failover (*x402.Facilitators): the gateway counts its requests and shows
// which facilitators are in use.
type facilitatorPool interface {
	Observe(fn func(name, op, result string))
	Health() map[string]bool
}

var _ facilitatorPool = (*x402.Facilitators)(nil)

// X402Settler returns the configured settlement backend, nil without x402.
func (o Options) X402Settler() x402.Settler {
	if o.X402 == nil {
		return nil
	}
	return o.X402.Settler
}

// watchFacilitators counts fp's requests per facilitator
// (toolgate_x402_facilitator_requests_total) and exports
// toolgate_x402_facilitator_up{facilitator} (1: in use, 0: backing off).
func (g *Gateway) watchFacilitators(fp facilitatorPool) {
	fp.Observe(func(name, op, result string) {
		g.metrics.facRequests.WithLabelValues(name, op, result).Inc()
	})
	for name := range fp.Health() {
		g.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "toolgate_x402_facilitator_up", Help: "1 while an x402 facilitator is in use, 0 while it is skipped after failures.",
			ConstLabels: prometheus.Labels{"facilitator": name},
		}, func() float64 {
			if fp.Health()[name] {
				return 1
			}
			return 0
		}))
	}
}
