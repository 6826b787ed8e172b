package main

import (
	"log/slog"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/gateway"
)

// joinCluster connects to the cluster's Redis and puts the shared quota,
// spend and nonce stores in opts (keys and overrides stay local in this
// version). The URL's password is never logged.
func joinCluster(f serveFlags, opts *gateway.Options, sd *shutdown, log *slog.Logger) error {
	node := f.nodeID
	if node == "" {
		node = cluster.DefaultNodeID(f.data)
	}
	c, err := cluster.Dial(f.clusterRedis, cluster.Options{NodeID: node})
	if err != nil {
		return exitError{1, "toolgate serve: --cluster-redis: " + err.Error()}
	}
	sd.add("closing the cluster connection", func() error { c.Close(); return nil })
	opts.Quotas = cluster.NewQuotas(c, 0)
	opts.Spend = cluster.NewSpend(c)
	if opts.X402 != nil {
		opts.X402.Nonces = cluster.NewNonces(c)
	}
	log.Info("cluster mode", "redis", cluster.Redact(f.clusterRedis), "node_id", node,
		"shared", "quotas, spend, credits, x402 nonces", "local", "keys, overrides")
	return nil
}
