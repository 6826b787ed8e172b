package main

import (
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
)

// overrideSync is how often a cluster node's gateway follows the override
// changes its node copy applied (a local read; the copy follows Redis).
const overrideSync = 100 * time.Millisecond

// joinCluster connects to the cluster's Redis and puts the shared quota,
// spend, nonce, key, override and approval stores in opts. The node's own keys and
// overrides (made before it joined) are merged into the cluster's. The
// URL's password is never logged.
// The returned node's start must be called once the gateway exists.
func joinCluster(f serveFlags, db *badger.DB, own *identity.Store, ownOverrides *policy.Overrides, opts *gateway.Options, sd *shutdown, log *slog.Logger) (*clusterNode, error) {
	node := clusterNodeID(f)
	c, err := cluster.Dial(f.clusterRedis, cluster.Options{NodeID: node})
	if err != nil {
		return nil, exitError{1, "toolgate serve: --cluster-redis: " + err.Error()}
	}
	sd.add("closing the cluster connection", func() error { c.Close(); return nil })
	imported, _, err := ownOverrides.Load()
	if err != nil {
		return nil, err
	}
	st, err := cluster.OpenState(c, db, cluster.StateOptions{
		ImportKeys: own.List(), ImportOverrides: imported,
		Report: func(event string, err error) {
			if err != nil {
				log.Warn(event, "err", err)
			} else {
				log.Info(event)
			}
		}})
	if err != nil {
		return nil, exitError{1, "toolgate serve: --cluster-redis: shared keys and overrides: " + err.Error()}
	}
	sd.add("stopping the cluster feed", func() error { st.Close(); return nil })
	opts.Keys = st.Keys()
	opts.Overrides = st.Overrides()
	opts.OverrideSync = overrideSync
	reg := cluster.NewRegistry(c, cluster.Peer{URL: advertiseURL(f), PublicKey: hex.EncodeToString(opts.Ledger.PublicKey())}, 0)
	reg.ChainHead = opts.Ledger.Head
	opts.Cluster = reg
	opts.FallbackQuotas = cluster.NewShareQuotas(reg)
	q, sp := cluster.NewQuotas(c, 0), cluster.NewSpend(c)
	q.Nodes = reg.Live  // a lease takes at most a share of the free slots
	sp.Nodes = reg.Live // and a budget slice a share of the remaining budget
	opts.Quotas, opts.Spend = q, sp
	sd.add("returning quota leases and sending queued spend commits", func() error { q.Close(); sp.Close(); return nil })
	opts.AdmitReserve = cluster.NewDecider(q, sp)
	opts.Answers = cluster.NewAnswers(c)
	opts.Sessions = opts.Answers // a dashboard session works on every node
	den := cluster.NewDenials(c)
	sd.add("stopping the shared denial log", func() error { den.Close(); return nil })
	opts.Denials = den
	opts.Approvals = cluster.NewApprovals(c)
	if opts.X402 != nil {
		opts.X402.Nonces = cluster.NewNonces(c)
		// A pending settlement is followed by one node; a dead node's is
		// adopted by another once its claim lapses (three attempts).
		st := cluster.NewSettlements(c)
		st.ClaimTTL = 3 * max(opts.X402.ReconcileEvery, 15*time.Second)
		opts.X402.Claims = st
	}
	log.Info("cluster mode", "redis", cluster.Redact(f.clusterRedis), "node_id", node,
		"shared", "keys, overrides, quotas, spend, credits, approvals, x402 nonces and pending settlements, idempotent answers", "local", "ledger, a copy of keys and overrides")
	return &clusterNode{reg: reg, spend: sp, sd: sd, log: log}, nil
}

// clusterNode is the part of joining that needs the gateway: the
// heartbeat announcing its configuration hash, and putting the node's
// spend back when Redis returns.
type clusterNode struct {
	reg   *cluster.Registry
	spend *cluster.Spend
	sd    *shutdown
	log   *slog.Logger
}

func (n *clusterNode) start(gw *gateway.Gateway) error {
	n.reg.ConfigHash = gw.ConfigHash
	n.reg.Report = func(mismatch []string) {
		if len(mismatch) == 0 {
			n.log.Info("cluster: every live node serves this configuration", "config_hash", gw.ConfigHash())
			return
		}
		n.log.Warn("cluster: nodes serve another configuration (policies.json, tools.json)",
			"config_hash", gw.ConfigHash(), "others", strings.Join(mismatch, ","))
	}
	n.reg.OnRejoin = func(lost bool) {
		// The node's spend contribution is set (never added) from its
		// ledger: after Redis lost its data, or after a failure that
		// may have left a commit out of it.
		err := gw.RestoreSpend()
		n.log.Warn("cluster: redis reachable again; spend contribution restored from the ledger",
			"redis_lost_data", lost, "err", err)
	}
	var restoring atomic.Bool
	n.spend.OnLost = func(err error) {
		// Commits sent after the calls were answered did not land: the
		// ledger bills them; the node's contribution is set from it (once
		// at a time: a restore covers every commit lost before it).
		if !restoring.CompareAndSwap(false, true) {
			return
		}
		defer restoring.Store(false)
		rerr := gw.RestoreSpend()
		n.log.Warn("cluster: queued spend commits not confirmed by redis; contribution restored from the ledger",
			"err", err, "restore_err", rerr)
	}
	if err := n.reg.Start(); err != nil {
		return exitError{1, "toolgate serve: --cluster-redis: " + err.Error()}
	}
	n.sd.add("leaving the cluster", func() error { n.reg.Close(); return nil })
	return nil
}

// clusterNodeID is the node's id in cluster mode (--node-id, or derived
// from the host name and data dir), "" in single-node mode.
func clusterNodeID(f serveFlags) string {
	switch {
	case f.clusterRedis == "":
		return ""
	case f.nodeID != "":
		return f.nodeID
	}
	return cluster.DefaultNodeID(f.data)
}

// advertiseURL is --cluster-advertise, or http:// and --listen (the host
// name when --listen names no host or every address).
func advertiseURL(f serveFlags) string {
	if f.clusterAdvertise != "" {
		return strings.TrimSuffix(f.clusterAdvertise, "/")
	}
	host, port, err := net.SplitHostPort(f.listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
