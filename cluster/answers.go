package cluster

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
)

// Answers is gateway.AnswerStore on Redis: the recorded answers of
// idempotent calls shared by every node, so that a retry sent to another
// node gets the answer of the first attempt (docs/x402.md, "Idempotent
// retries"). Each answer is one string key prefix{<answer key>}:a with
// Redis's own expiry (PX); the answer key is its own hash tag, so that
// answers spread over a Redis Cluster's slots. The claim of the attempt
// in flight is prefix{<answer key>}:c holding "<fp hex>:<node>" with an
// expiry, so that a duplicate on another node waits for the answer.
// Safe for concurrent use.
type Answers struct{ c *Client }

var (
	_ gateway.AnswerStore    = (*Answers)(nil)
	_ gateway.AnswerClaimer  = (*Answers)(nil)
	_ gateway.FailureCounter = (*Answers)(nil)
)

// NewAnswers returns the shared answer store on c.
func NewAnswers(c *Client) *Answers { return &Answers{c: c} }

func (a *Answers) key(k string) string { return a.c.prefix + "{" + k + "}:a" }

// GetAnswer reads k's answer.
func (a *Answers) GetAnswer(k string) ([]byte, bool, error) {
	ctx, cancel := a.c.ctx()
	defer cancel()
	v, err := a.c.rdb.Do(ctx, a.c.rdb.B().Get().Key(a.key(k)).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, redisErr("get answer", err)
	}
	return v, true, nil
}

// PutAnswer sets k's answer for ttl (at least a millisecond).
func (a *Answers) PutAnswer(k string, value []byte, ttl time.Duration) error {
	ctx, cancel := a.c.ctx()
	defer cancel()
	ms := max(ttl.Milliseconds(), 1)
	if err := a.c.rdb.Do(ctx, a.c.rdb.B().Set().Key(a.key(k)).Value(rueidis.BinaryString(value)).PxMilliseconds(ms).Build()).Error(); err != nil {
		return redisErr("put answer", err)
	}
	return nil
}

// claimScript: KEYS the claim; ARGV "<fp hex>:<node>", ttl ms. Returns
// {1, ""} when claimed, {0, holder} when held.
var claimScript = rueidis.NewLuaScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ''} end
return {0, redis.call('GET', KEYS[1]) or ''}
`)

// releaseClaimScript: KEYS the claim; ARGV the holder's value. Deletes the
// claim only when it is still that holder's.
var releaseClaimScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return {1}
`)

var errBadReply = errors.New("unexpected reply")

func (a *Answers) claimValue(fp []byte) string { return hex.EncodeToString(fp) + ":" + a.c.node }

// ClaimAnswer takes k's claim for fp for ttl (at least a millisecond).
func (a *Answers) ClaimAnswer(k string, fp []byte, ttl time.Duration) (bool, []byte, error) {
	arr, err := a.c.run(claimScript, []string{a.c.prefix + "{" + k + "}:c"},
		[]string{a.claimValue(fp), strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)})
	if err != nil {
		return false, nil, err
	}
	if len(arr) != 2 {
		return false, nil, redisErr("claim answer", errBadReply)
	}
	won, err := arr[0].AsInt64()
	if err != nil {
		return false, nil, redisErr("claim answer", err)
	}
	if won == 1 {
		return true, nil, nil
	}
	v, _ := arr[1].ToString()
	fpHex, _, _ := strings.Cut(v, ":")
	holder, err := hex.DecodeString(fpHex)
	if err != nil {
		return false, nil, redisErr("claim answer", errBadReply)
	}
	return false, holder, nil
}

// ReleaseAnswer drops this node's claim of k for fp.
func (a *Answers) ReleaseAnswer(k string, fp []byte) error {
	_, err := a.c.run(releaseClaimScript, []string{a.c.prefix + "{" + k + "}:c"}, []string{a.claimValue(fp)})
	return err
}

func (a *Answers) countKey(k string) string { return a.c.prefix + "{" + k + "}:n" }

// countScript: KEYS the count; ARGV its ttl ms. Adds one, starting the
// count's expiry with its first failure; returns the count.
var countScript = rueidis.NewLuaScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n}
`)

// CountFailure adds one to k's count, which lapses ttl after its first
// failure (at least a millisecond).
func (a *Answers) CountFailure(k string, ttl time.Duration) (int64, error) {
	arr, err := a.c.run(countScript, []string{a.countKey(k)}, []string{strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)})
	if err != nil {
		return 0, err
	}
	if len(arr) != 1 {
		return 0, redisErr("count failure", errBadReply)
	}
	n, err := arr[0].AsInt64()
	if err != nil {
		return 0, redisErr("count failure", err)
	}
	return n, nil
}

// Failures reads k's count.
func (a *Answers) Failures(k string) (int64, error) {
	ctx, cancel := a.c.ctx()
	defer cancel()
	n, err := a.c.rdb.Do(ctx, a.c.rdb.B().Get().Key(a.countKey(k)).Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, redisErr("read failures", err)
	}
	return n, nil
}
