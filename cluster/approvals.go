package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
)

// Approvals is gateway.ApprovalStore on Redis: the calls held for a human
// decision, shared by every node, so that a call held on one node can be
// listed, approved or denied on any, is run once (by the node whose
// decision won) and its answer is read on all.
//
// Every key carries the hash tag {approvals}, as the shared keys and
// overrides carry {state}: approvals are few (each waits for a person),
// and one slot makes every move and the listing one script.
//
//	prefix{approvals}:a:<id>    hash: call (the Approval's JSON as held),
//	                            status, by, at, reason, node, result
//	prefix{approvals}:all       sorted set of every id by creation (ms)
//	prefix{approvals}:pending   sorted set of the pending ids
//	prefix{approvals}:running   set of the approved ids without an answer
//
// Decide is one script that moves a pending approval and nothing else, so
// of concurrent Decides on any nodes one wins; an approved approval names
// the winner's node, which runs the call and stores its answer (Finish).
// Recover fails the approved approvals of this node only: another node's
// running call is not touched when this one restarts. Sweep deletes the
// approvals that ended before a cutoff. Safe for concurrent use.
type Approvals struct {
	c *Client
}

var _ gateway.ApprovalStore = (*Approvals)(nil)

// NewApprovals returns the shared approval store on c, acting for c's
// node.
func NewApprovals(c *Client) *Approvals { return &Approvals{c: c} }

func (s *Approvals) key(suffix string) string { return s.c.key("approvals", suffix) }

func (s *Approvals) rec(id string) string { return s.key("a:" + id) }

// createApprovalScript: KEYS rec, all, pending; ARGV id, call JSON, created ms.
// Returns 0 when the id exists.
var createApprovalScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'call', ARGV[2], 'status', 'pending')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
`)

// decideApprovalScript: KEYS rec, pending, running; ARGV id, status, by, at,
// reason, node. Returns {won (1, 0; -1 unknown), the record's fields}.
var decideApprovalScript = rueidis.NewLuaScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {-1, {}} end
local won = 0
if st == 'pending' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'by', ARGV[3], 'at', ARGV[4], 'reason', ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if ARGV[2] == 'approved' then
    redis.call('HSET', KEYS[1], 'node', ARGV[6])
    redis.call('SADD', KEYS[3], ARGV[1])
  end
  won = 1
end
return {won, redis.call('HGETALL', KEYS[1])}
`)

// finishApprovalScript: KEYS rec, running; ARGV id, result JSON. Returns 1 when
// the approval was approved (and is now done).
var finishApprovalScript = rueidis.NewLuaScript(`
if redis.call('HGET', KEYS[1], 'status') ~= 'approved' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'done', 'result', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
`)

// failApprovalScript: KEYS rec, running; ARGV id, node, reason. Fails an approved
// approval of node; drops an id no longer approved from running.
var failApprovalScript = rueidis.NewLuaScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'approved' then
  if redis.call('HGET', KEYS[1], 'node') ~= ARGV[2] then return 0 end
  redis.call('HSET', KEYS[1], 'status', 'failed', 'reason', ARGV[3])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('SREM', KEYS[2], ARGV[1])
return 0
`)

// Create stores a as a new pending approval.
func (s *Approvals) Create(a *gateway.Approval) error {
	b := *a
	b.Status = gateway.ApprovalPending
	call, err := json.Marshal(&b)
	if err != nil {
		return err
	}
	n, err := s.c.run1(createApprovalScript, []string{s.rec(a.ID), s.key("all"), s.key("pending")},
		[]string{a.ID, string(call), strconv.FormatInt(a.CreatedAt.UnixMilli(), 10)})
	if err != nil {
		return err
	}
	if n == 0 {
		return errApprovalExists
	}
	return nil
}

var errApprovalExists = errors.New("cluster: approval id already stored")

// Get returns the approval id, nil when there is none.
func (s *Approvals) Get(id string) (*gateway.Approval, error) {
	ctx, cancel := s.c.ctx()
	defer cancel()
	f, err := s.c.rdb.Do(ctx, s.c.rdb.B().Hgetall().Key(s.rec(id)).Build()).AsStrMap()
	if err != nil {
		return nil, redisErr("get approval", err)
	}
	return approvalOf(f)
}

// List returns the approvals in status ("": every one), oldest first.
func (s *Approvals) List(status string) ([]*gateway.Approval, error) {
	index := "all"
	if status == gateway.ApprovalPending {
		index = "pending"
	}
	ctx, cancel := s.c.ctx()
	defer cancel()
	b := s.c.rdb.B()
	ids, err := s.c.rdb.Do(ctx, b.Zrange().Key(s.key(index)).Min("0").Max("-1").Build()).AsStrSlice()
	if err != nil {
		return nil, redisErr("list approvals", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		cmds[i] = b.Hgetall().Key(s.rec(id)).Build()
	}
	out := make([]*gateway.Approval, 0, len(ids))
	for _, r := range s.c.rdb.DoMulti(ctx, cmds...) {
		f, err := r.AsStrMap()
		if err != nil {
			return nil, redisErr("list approvals", err)
		}
		a, err := approvalOf(f)
		if err != nil {
			return nil, err
		}
		if a != nil && (status == "" || a.Status == status) {
			out = append(out, a)
		}
	}
	return out, nil
}

// Decide moves the pending approval id to d.Status, once among every
// node's Decides.
func (s *Approvals) Decide(id string, d gateway.ApprovalDecision) (*gateway.Approval, bool, error) {
	if err := gateway.CheckApprovalDecision(d); err != nil {
		return nil, false, err
	}
	arr, err := s.c.run(decideApprovalScript, []string{s.rec(id), s.key("pending"), s.key("running")},
		[]string{id, d.Status, d.By, d.At.UTC().Format(time.RFC3339Nano), d.Reason, s.c.node})
	if err != nil {
		return nil, false, err
	}
	if len(arr) != 2 {
		return nil, false, fmt.Errorf("%w: decide approval: reply of %d values", ErrRedis, len(arr))
	}
	won, err := arr[0].AsInt64()
	if err != nil {
		return nil, false, redisErr("decide approval", err)
	}
	if won < 0 {
		return nil, false, nil
	}
	f, err := arr[1].AsStrMap()
	if err != nil {
		return nil, false, redisErr("decide approval", err)
	}
	a, err := approvalOf(f)
	return a, won == 1 && a != nil, err
}

// Finish records the answer of an approved call.
func (s *Approvals) Finish(id string, res *gateway.ApprovalResult) (bool, error) {
	v, err := json.Marshal(res)
	if err != nil {
		return false, err
	}
	n, err := s.c.run1(finishApprovalScript, []string{s.rec(id), s.key("running")}, []string{id, string(v)})
	return n == 1, err
}

// Recover fails the approvals this node approved and did not finish.
func (s *Approvals) Recover(reason string) (int, error) {
	ctx, cancel := s.c.ctx()
	ids, err := s.c.rdb.Do(ctx, s.c.rdb.B().Smembers().Key(s.key("running")).Build()).AsStrSlice()
	cancel()
	if err != nil {
		return 0, redisErr("recover approvals", err)
	}
	n := 0
	for _, id := range ids {
		k, err := s.c.run1(failApprovalScript, []string{s.rec(id), s.key("running")}, []string{id, s.c.node, reason})
		if err != nil {
			return n, err
		}
		n += int(k)
	}
	return n, nil
}

// Sweep deletes the approvals that reached an end decided before cutoff
// (gateway.Swept). An approval decided before cutoff was created before
// it: only those ids are read. A final state never changes, so deleting
// a record read as final needs no script.
func (s *Approvals) Sweep(cutoff time.Time) (int, error) {
	ctx, cancel := s.c.ctx()
	defer cancel()
	b := s.c.rdb.B()
	ids, err := s.c.rdb.Do(ctx, b.Zrangebyscore().Key(s.key("all")).Min("-inf").
		Max(strconv.FormatInt(cutoff.UnixMilli(), 10)).Build()).AsStrSlice()
	if err != nil {
		return 0, redisErr("sweep approvals", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	reads := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		reads[i] = b.Hgetall().Key(s.rec(id)).Build()
	}
	var dels rueidis.Commands
	for i, r := range s.c.rdb.DoMulti(ctx, reads...) {
		f, err := r.AsStrMap()
		if err != nil {
			return 0, redisErr("sweep approvals", err)
		}
		a, err := approvalOf(f)
		if err != nil {
			return 0, err
		}
		if a == nil || gateway.Swept(a, cutoff) {
			dels = append(dels, b.Del().Key(s.rec(ids[i])).Build(), b.Zrem().Key(s.key("all")).Member(ids[i]).Build())
		}
	}
	n := 0
	for i, r := range s.c.rdb.DoMulti(ctx, dels...) {
		if err := r.Error(); err != nil {
			return n, redisErr("sweep approvals", err)
		}
		if i%2 == 0 {
			n++
		}
	}
	return n, nil
}

// approvalOf reads a record's fields; nil for none (an unknown id).
func approvalOf(f map[string]string) (*gateway.Approval, error) {
	call, ok := f["call"]
	if !ok {
		return nil, nil
	}
	a := &gateway.Approval{}
	if err := json.Unmarshal([]byte(call), a); err != nil {
		return nil, fmt.Errorf("%w: approval record: %v", ErrRedis, err)
	}
	a.Status, a.DecidedBy, a.Reason, a.Node = f["status"], f["by"], f["reason"], f["node"]
	if at := f["at"]; at != "" {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return nil, fmt.Errorf("%w: approval record: decided at %q", ErrRedis, at)
		}
		a.DecidedAt = t
	}
	if r := f["result"]; r != "" {
		a.Result = &gateway.ApprovalResult{}
		if err := json.Unmarshal([]byte(r), a.Result); err != nil {
			return nil, fmt.Errorf("%w: approval result: %v", ErrRedis, err)
		}
	}
	return a, nil
}
