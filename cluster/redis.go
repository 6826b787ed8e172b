// Package cluster holds the shared implementations of the gateway's state
// interfaces (gateway.QuotaStore, SpendStore, NonceStore) on Redis, so that
// several toolgate nodes behind a load balancer decide as one gateway.
//
// It is an adapter, like cmd: it imports gateway for the interfaces and the
// domain packages for their value types, and nothing but cmd imports it.
// Every decision is one Lua script on the keys of one principal, all under
// the hash tag {principal}, so that a Redis Cluster shards by principal and
// each script touches one slot. Redis failures are reported in the
// results' Err fields (meter.QuotaResult, meter.SpendResult) or as errors
// (NonceStore); the gateway decides what a failure means for the call.
//
// The package must not log, read configuration files or know about HTTP.
package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// ErrRedis wraps every failure to reach or use Redis.
var ErrRedis = errors.New("cluster: redis")

// DefaultTimeout bounds one Redis round trip when Options.Timeout is 0.
const DefaultTimeout = 500 * time.Millisecond

// Options configures a Client.
type Options struct {
	// NodeID names this node in the shared state (its spend contribution,
	// its quota call ids). Required; stable across restarts (DefaultNodeID).
	NodeID string
	// Prefix starts every key (default "tg:"); tests give each store its
	// own so that they share one redis-server.
	Prefix string
	// Timeout bounds one round trip (default DefaultTimeout).
	Timeout time.Duration
}

// Client is a connection to the shared Redis (one rueidis client,
// auto-pipelined) with the node's identity. Safe for concurrent use; Close
// it when done. The stores built on it (NewQuotas, NewSpend, NewNonces)
// share its connection.
type Client struct {
	rdb     rueidis.Client
	node    string
	prefix  string
	timeout time.Duration
}

// Dial connects to the Redis at rawURL: redis://[:password@]host:port/db,
// rediss:// for TLS (rueidis.ParseURL). It fails when Redis does not answer.
// Errors never contain the password.
func Dial(rawURL string, o Options) (*Client, error) {
	if o.NodeID == "" {
		return nil, errors.New("cluster: node id is required")
	}
	opt, err := rueidis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: parse url %s: %v", ErrRedis, Redact(rawURL), redactErr(err, rawURL))
	}
	// DisableCache: no client-side caching (CLIENT TRACKING): every read
	// of shared state goes to Redis. Writes are never retried by rueidis
	// (it retries read-only commands only), so a script whose answer was
	// lost is not applied twice.
	opt.DisableCache = true
	rdb, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("%w: connect %s: %v", ErrRedis, Redact(rawURL), redactErr(err, rawURL))
	}
	return newClient(rdb, o), nil
}

func newClient(rdb rueidis.Client, o Options) *Client {
	c := &Client{rdb: rdb, node: o.NodeID, prefix: o.Prefix, timeout: o.Timeout}
	if c.prefix == "" {
		c.prefix = "tg:"
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	return c
}

// WithPrefix returns a Client on the same connection whose keys start
// with prefix instead (tests: one store per prefix on one server).
func (c *Client) WithPrefix(prefix string) *Client {
	d := *c
	d.prefix = prefix
	return &d
}

// WithNode returns a Client on the same connection acting as another node.
func (c *Client) WithNode(node string) *Client {
	d := *c
	d.node = node
	return &d
}

// NodeID returns the node's id.
func (c *Client) NodeID() string { return c.node }

// Ping checks that Redis answers.
func (c *Client) Ping(ctx context.Context) error {
	if err := c.rdb.Do(ctx, c.rdb.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("%w: ping: %v", ErrRedis, err)
	}
	return nil
}

// Close closes the connection. The stores built on c stop working.
func (c *Client) Close() { c.rdb.Close() }

// key returns prefix{principal}:suffix: every key of a principal carries
// the hash tag {principal}.
func (c *Client) key(principal, suffix string) string {
	return c.prefix + "{" + principal + "}:" + suffix
}

func (c *Client) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// run executes script on keys with args within the client's timeout.
func (c *Client) run(s *rueidis.Lua, keys, args []string) ([]rueidis.RedisMessage, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	arr, err := s.Exec(ctx, c.rdb, keys, args).ToArray()
	if err != nil {
		return nil, redisErr("script", err)
	}
	return arr, nil
}

// ints reads a script's array of integers.
func ints(arr []rueidis.RedisMessage, err error) ([]int64, error) {
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(arr))
	for i := range arr {
		v, err := arr[i].AsInt64()
		if err != nil {
			return nil, fmt.Errorf("%w: script reply: %v", ErrRedis, err)
		}
		out[i] = v
	}
	return out, nil
}

// Redact returns rawURL with its password replaced by "xxxxx", for logs.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable redis url)"
	}
	return u.Redacted()
}

// redactErr removes the URL's password from an error's text.
func redactErr(err error, rawURL string) string {
	s := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			s = strings.ReplaceAll(s, pw, "xxxxx")
		}
	}
	return s
}

// DefaultNodeID derives a node id from the host name and the absolute data
// dir ("host-1a2b3c4d"): stable across restarts, distinct for two nodes on
// one host with different data dirs.
func DefaultNodeID(dataDir string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return host + "-" + hex.EncodeToString(sum[:4])
}

// redisErr wraps a Redis failure of op.
func redisErr(op string, err error) error { return fmt.Errorf("%w: %s: %w", ErrRedis, op, err) }

// notSent reports whether err shows that a command never reached Redis
// (no connection could be made), so that nothing it asked for was done.
// Any other failure (a timeout, a connection lost after the send) leaves
// open whether Redis ran it: a paused or partitioned Redis runs what it
// had received once it answers again.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
