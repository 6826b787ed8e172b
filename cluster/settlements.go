package cluster

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// Settlements is gateway.SettlementClaims on Redis: the settlements left
// pending by any node, each with a claim naming the node that follows it,
// so that an unknown settlement outcome is reconciled and recorded by
// exactly one node, also when the node that left it pending dies.
//
// Keys (one slot, {settle}): prefix{settle}:pending, a hash payment →
// the pending settlement (JSON), and prefix{settle}:claims, a hash
// payment → "<node>:<expiry ms on Redis's clock>". Add, Hold, Adopt and
// Finish are each one script: Hold renews only the node's own claim,
// Adopt takes only lapsed ones (atomically: of concurrent adopters one
// gets each), Finish deletes the entry only for the claim's holder.
// Safe for concurrent use.
type Settlements struct {
	c *Client
	// ClaimTTL is how long a claim lasts unless renewed (0: one minute);
	// the follower renews it every reconciliation attempt, so it must be
	// longer than the pause between attempts. Set before use.
	ClaimTTL time.Duration
}

var _ gateway.SettlementClaims = (*Settlements)(nil)

// NewSettlements returns the shared pending settlements on c.
func NewSettlements(c *Client) *Settlements { return &Settlements{c: c} }

func (s *Settlements) keys() []string {
	return []string{s.c.key("settle", "pending"), s.c.key("settle", "claims")}
}

func (s *Settlements) ttl() string {
	d := s.ClaimTTL
	if d <= 0 {
		d = time.Minute
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

func paymentField(k x402.NonceKey) string {
	return strconv.FormatUint(k.ChainID, 10) + ":" + k.Asset.Hex() + ":" + k.From.Hex() + ":" + hex.EncodeToString(k.Nonce[:])
}

// claimLua defines nowms and owner(field) → node, expiry (nil when none).
const claimLua = `
local tm = redis.call('TIME')
local nowms = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local function owner(f)
  local v = redis.call('HGET', KEYS[2], f)
  if not v then return nil, 0 end
  local n, e = string.match(v, '^(.*):(%d+)$')
  return n, tonumber(e)
end
`

// addScript: ARGV field, JSON, node, ttl ms.
var addScript = rueidis.NewLuaScript(claimLua + `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. ':' .. (nowms + tonumber(ARGV[4])))
return 1
`)

// holdScript: ARGV field, node, ttl ms. 1 when renewed.
var holdScript = rueidis.NewLuaScript(claimLua + `
local n = owner(ARGV[1])
if n ~= ARGV[2] or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. (nowms + tonumber(ARGV[3])))
return 1
`)

// adoptScript: ARGV node, ttl ms. Returns the JSON of each adopted entry.
var adoptScript = rueidis.NewLuaScript(claimLua + `
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, e = owner(all[i])
  if n == nil or e < nowms then
    redis.call('HSET', KEYS[2], all[i], ARGV[1] .. ':' .. (nowms + tonumber(ARGV[2])))
    out[#out + 1] = all[i + 1]
  end
end
return out
`)

// finishScript: ARGV field, node. 1 when this node held the claim.
var finishScript = rueidis.NewLuaScript(claimLua + `
local n = owner(ARGV[1])
if n ~= ARGV[2] or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`)

// pendingWire is a pending settlement as stored: the amount in integer
// micro-USD.
type pendingWire struct {
	gateway.PendingSettlement
	Amount int64 `json:"amount_micros"`
}

// Add records p as pending, claimed by this node.
func (s *Settlements) Add(p gateway.PendingSettlement) error {
	b, err := json.Marshal(pendingWire{p, int64(p.Amount)})
	if err != nil {
		return err
	}
	_, err = s.one(addScript, paymentField(p.Key), string(b), s.c.node, s.ttl())
	return err
}

// Hold renews this node's claim on k; false when another node holds it
// or it is finished.
func (s *Settlements) Hold(k x402.NonceKey) (bool, error) {
	return s.one(holdScript, paymentField(k), s.c.node, s.ttl())
}

// Finish ends k's reconciliation when this node holds its claim: true
// then, once.
func (s *Settlements) Finish(k x402.NonceKey) (bool, error) {
	return s.one(finishScript, paymentField(k), s.c.node)
}

func (s *Settlements) one(sc *rueidis.Lua, args ...string) (bool, error) {
	ctx, cancel := s.c.ctx()
	defer cancel()
	v, err := sc.Exec(ctx, s.c.rdb, s.keys(), args).AsInt64()
	if err != nil {
		return false, redisErr("settlement claim", err)
	}
	return v == 1, nil
}

// Adopt claims the pending settlements whose claim lapsed, for this node.
func (s *Settlements) Adopt() ([]gateway.PendingSettlement, error) {
	arr, err := s.c.run(adoptScript, s.keys(), []string{s.c.node, s.ttl()})
	if err != nil {
		return nil, err
	}
	out := make([]gateway.PendingSettlement, 0, len(arr))
	for _, m := range arr {
		b, err := m.ToString()
		if err != nil {
			return out, redisErr("adopt settlement", err)
		}
		var p pendingWire
		if err := json.Unmarshal([]byte(b), &p); err != nil {
			return out, fmt.Errorf("%w: adopt settlement: %v", ErrRedis, err)
		}
		p.PendingSettlement.Amount = money.Micros(p.Amount)
		out = append(out, p.PendingSettlement)
	}
	return out, nil
}
