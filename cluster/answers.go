package cluster

import (
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
)

// Answers is gateway.AnswerStore on Redis: the recorded answers of
// idempotent calls shared by every node, so that a retry sent to another
// node gets the answer of the first attempt (docs/x402.md, "Idempotent
// retries"). Each answer is one string key prefix{<answer key>}:a with
// Redis's own expiry (PX); the answer key is its own hash tag, so that
// answers spread over a Redis Cluster's slots. Safe for concurrent use.
type Answers struct{ c *Client }

var _ gateway.AnswerStore = (*Answers)(nil)

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
