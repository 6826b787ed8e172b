package cluster

import (
	"encoding/hex"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// Nonces is gateway.NonceStore on Redis: the x402 nonce lock shared by
// every node, so that one authorization sent to several nodes is used by
// one call.
//
// An authorization is the key prefix{wallet:<from>}:n:<chain>:<asset>:<nonce>
// holding "<state>:<expiry ms>:<tx>" (state 1 locked, 2 settled; expiry
// validBefore + x402.NonceGrace on the store's clock, 0 never). Lock is
// one script: free when absent or past its expiry by the store's clock,
// then set as locked (SET with an expiry for Redis to drop it by the wall
// clock). MarkSettled rewrites the state keeping the expiry; Release
// deletes a locked entry and leaves a settled one. Safe for concurrent
// use.
type Nonces struct {
	c *Client
	// Now is the clock every expiry is measured on; nil means time.Now.
	// Set it before use.
	Now func() time.Time
}

var _ gateway.NonceStore = (*Nonces)(nil)

// NewNonces returns the shared nonce lock on c.
func NewNonces(c *Client) *Nonces { return &Nonces{c: c} }

func (n *Nonces) now() time.Time {
	if n.Now != nil {
		return n.Now()
	}
	return time.Now()
}

func (n *Nonces) key(k x402.NonceKey) string {
	return n.c.key("wallet:"+k.From.Hex(), "n:"+strconv.FormatUint(k.ChainID, 10)+":"+k.Asset.Hex()+":"+hex.EncodeToString(k.Nonce[:]))
}

// lockScript: KEYS the entry; ARGV now ms, expiry ms (0 never), Redis ttl
// ms (0 none). Returns 1 when locked.
var lockScript = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local e = tonumber(string.match(v, '^%d+:(%d+):'))
  if e == nil or e == 0 or tonumber(ARGV[1]) < e then return 0 end
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], '1:' .. ARGV[2] .. ':')
else
  redis.call('SET', KEYS[1], '1:' .. ARGV[2] .. ':', 'PX', ARGV[3])
end
return 1
`)

// settleScript: KEYS the entry; ARGV tx, fallback ttl ms.
var settleScript = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local e = string.match(v, '^%d+:(%d+):')
  redis.call('SET', KEYS[1], '2:' .. (e or '0') .. ':' .. ARGV[1], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], '2:0:' .. ARGV[1], 'PX', ARGV[2])
end
return 1
`)

// releaseNonceScript: KEYS the entry. Deletes it when locked.
var releaseNonceScript = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 2) == '1:' then redis.call('DEL', KEYS[1]) end
return 1
`)

// Lock marks k in flight cluster-wide if it is free; of concurrent calls
// on any nodes exactly one returns true. expires is the authorization's
// validBefore (zero: kept until released or, once settled, forever).
func (n *Nonces) Lock(k x402.NonceKey, expires time.Time) (bool, error) {
	now := n.now()
	var exp, ttl int64
	if !expires.IsZero() {
		e := expires.Add(x402.NonceGrace)
		exp = e.UnixMilli()
		ttl = max(e.Sub(now).Milliseconds(), 1000)
	}
	ctx, cancel := n.c.ctx()
	defer cancel()
	v, err := lockScript.Exec(ctx, n.c.rdb, []string{n.key(k)},
		[]string{strconv.FormatInt(now.UnixMilli(), 10), strconv.FormatInt(exp, 10), strconv.FormatInt(ttl, 10)}).AsInt64()
	if err != nil {
		return false, redisErr("lock nonce", err)
	}
	return v == 1, nil
}

// Release frees a locked, unspent k; a no-op for a settled or unknown one.
func (n *Nonces) Release(k x402.NonceKey) error {
	ctx, cancel := n.c.ctx()
	defer cancel()
	if err := releaseNonceScript.Exec(ctx, n.c.rdb, []string{n.key(k)}, nil).Error(); err != nil {
		return redisErr("release nonce", err)
	}
	return nil
}

// MarkSettled records that k was used on chain; the entry keeps its
// expiry (an entry Redis lost is written back for twice x402.NonceGrace).
func (n *Nonces) MarkSettled(k x402.NonceKey, txHex string) error {
	ctx, cancel := n.c.ctx()
	defer cancel()
	err := settleScript.Exec(ctx, n.c.rdb, []string{n.key(k)},
		[]string{txHex, strconv.FormatInt((2 * x402.NonceGrace).Milliseconds(), 10)}).Error()
	if err != nil {
		return redisErr("mark nonce settled", err)
	}
	return nil
}
