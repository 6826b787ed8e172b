package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// ClusterView is a cluster node's view of the cluster it is in, shown in
// /readyz ("cluster") and in the metrics toolgate_cluster_live_nodes and
// toolgate_cluster_config_mismatch. Safe for concurrent use.
type ClusterView interface {
	// View returns the cluster's state as this node sees it, given the
	// configuration hash this node serves.
	View(configHash string) ClusterStatus
}

// ClusterStatus is what ClusterView reports.
type ClusterStatus struct {
	Node      string `json:"node"`
	Redis     string `json:"redis"` // "ok" or "unreachable"
	LiveNodes int    `json:"live_nodes"`
	// ConfigMismatch names the live nodes serving another configuration
	// ("node=hash"); empty when every node serves this one.
	ConfigMismatch []string `json:"config_mismatch,omitempty"`
}

// DenialLog shares the recent denials of each principal across a
// cluster, for /authorization/status. Add is called for every refused
// call of an identified principal, after it is recorded, and must not
// block (a cluster queues and drops under pressure: the ledger is the
// record, this is a view). Recent returns the newest first; an error
// makes the status fall back to this node's ledger. Safe for concurrent
// use.
type DenialLog interface {
	Add(principal string, d Denial)
	Recent(principal string, n int) ([]Denial, error)
}

// ConfigHash returns the hash of the configuration serving now (the one
// /readyz reports as config_hash).
func (g *Gateway) ConfigHash() string {
	if st := g.state.Load(); st != nil {
		return st.hash
	}
	return ""
}

// RestoreSpend puts this node's spend of today and its credit balances,
// as its ledger says, back into the spend store (as at start): a cluster
// node calls it when the shared store lost its data. Restore sets the
// node's own contribution, so calling it again changes nothing.
func (g *Gateway) RestoreSpend() error { return g.restoreMeters() }

// readyCluster adds the cluster's view to /readyz. A configuration that
// differs between nodes, or Redis out of reach, is reported but does not
// make the node unready: the node still serves (a rolling deploy passes
// through mixed configurations; fail_mode decides what an outage means).
func (g *Gateway) readyCluster(checks map[string]string, detail map[string]any) {
	cv := g.opts.Cluster.View(g.ConfigHash())
	detail["cluster"] = cv
	switch {
	case cv.Redis != "ok":
		checks["cluster"] = "redis unreachable: deciding per fail_mode"
	case len(cv.ConfigMismatch) > 0:
		checks["cluster"] = "configuration differs from other nodes"
	default:
		checks["cluster"] = "ok"
	}
}

func (g *Gateway) registerClusterMetrics() {
	cv := g.opts.Cluster
	g.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "toolgate_cluster_live_nodes",
			Help: "Live nodes of the cluster as this node last saw them (heartbeats in Redis)."},
			func() float64 { return float64(cv.View(g.ConfigHash()).LiveNodes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "toolgate_cluster_config_mismatch",
			Help: "Live nodes serving a configuration (policies.json, tools.json) other than this node's."},
			func() float64 { return float64(len(cv.View(g.ConfigHash()).ConfigMismatch)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "toolgate_cluster_redis_up",
			Help: "1 when the last heartbeat reached the cluster's Redis, 0 otherwise."},
			func() float64 {
				if cv.View(g.ConfigHash()).Redis == "ok" {
					return 1
				}
				return 0
			}),
	)
}
