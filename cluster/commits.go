package cluster

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// committer sends Spend's queued commits: whoever enqueues while no
// batch is in flight starts a sender, which takes everything queued,
// commits it in one pipeline (one script per principal and day) and goes
// on until the queue is empty. Under load the batches grow by
// themselves; at one caller each commit goes out at once, off the
// caller's path.
type committer struct {
	mu        sync.Mutex
	idle      *sync.Cond // broadcast when a batch lands
	queue     []commitItem
	pendingOf map[string]int // principal → commits queued or in flight
	busy      bool
	enq, done uint64 // commits enqueued, and landed (or given up)
}

// commitGather is how long a sender waits for more commits before it
// sends a batch (a deliberate gathering window, as Nagle's).
const commitGather = 500 * time.Microsecond

// commitRetries is how often a batch is tried before its commits are
// given up to OnLost (they stay billed in the ledger).
const commitRetries = 3

// commitItem is one queued settlement of budget slice id: this node's
// totals committed and released from it (settleLua: absolute figures, so
// that a batch Redis ran although its answer timed out is not applied
// again by the retry); released < 0 gives back what is left of an
// orphan. res is the call's reservation id, forgotten once it lands (0
// for none).
type commitItem struct {
	principal string
	day       meter.Day
	id        uint64
	committed money.Micros
	released  money.Micros
	res       uint64
}

// appendTriple appends it as sliceSettleScript's triple (slice id,
// committed total, released total) to args.
func (it commitItem) appendTriple(args []string) []string {
	return append(args, strconv.FormatUint(it.id, 10), strconv.FormatInt(int64(it.committed), 10),
		strconv.FormatInt(int64(it.released), 10))
}

// settleCmd is sliceSettleScript's call for it alone (more triples of
// its principal and day may be appended).
func (s *Spend) settleCmd(it commitItem) rueidis.LuaExec {
	return rueidis.LuaExec{Keys: s.keys(it.principal, it.day),
		Args: it.appendTriple([]string{s.c.node, strconv.FormatInt(keepCommitted.Milliseconds(), 10)})}
}

func (c *committer) enqueue(s *Spend, r commitItem) {
	c.mu.Lock()
	c.queue = append(c.queue, r)
	c.pendingOf[r.principal]++
	c.enq++
	start := !c.busy
	c.busy = true
	c.mu.Unlock()
	if start {
		go c.send(s)
	}
}

// send commits batches until the queue is empty.
func (c *committer) send(s *Spend) {
	var batch []commitItem
	for {
		// Let the commits of the next moment join the batch: at one
		// caller this turns a round trip per call into one per few.
		time.Sleep(commitGather)
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.busy = false
			c.idle.Broadcast()
			c.mu.Unlock()
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()
		err := s.commitBatch(batch)
		for _, r := range batch {
			s.forget(r.res)
		}
		c.mu.Lock()
		for _, r := range batch {
			if c.pendingOf[r.principal]--; c.pendingOf[r.principal] <= 0 {
				delete(c.pendingOf, r.principal)
			}
		}
		c.done += uint64(len(batch))
		c.idle.Broadcast()
		c.mu.Unlock()
		if err != nil && s.OnLost != nil {
			go s.OnLost(err)
		}
	}
}

// wait returns once the commits of principal queued before the call have
// landed (at once when it has none).
func (c *committer) wait(principal string) {
	c.mu.Lock()
	if c.pendingOf[principal] > 0 {
		for target := c.enq; c.done < target; {
			c.idle.Wait()
		}
	}
	c.mu.Unlock()
}

// Flush returns once every commit queued before the call has landed or
// been given up.
func (s *Spend) Flush() {
	c := &s.cm
	c.mu.Lock()
	for target := c.enq; c.done < target; {
		c.idle.Wait()
	}
	c.mu.Unlock()
}

// Close sends the queued commits, waits for them and gives back the
// unused rest of every budget slice (at shutdown).
func (s *Spend) Close() {
	s.Flush()
	s.stopped.Do(func() { close(s.stop) })
	s.retireSlices(time.Now(), true)
}

// commitBatch commits rs, grouped by principal and day, in one pipeline,
// retrying what failed (idempotent: the figures are totals).
// It returns an error naming what could not be confirmed.
func (s *Spend) commitBatch(rs []commitItem) error {
	type group struct {
		principal string
		day       meter.Day
	}
	idx := map[group]int{}
	var cmds []rueidis.LuaExec
	for _, r := range rs {
		g := group{r.principal, r.day}
		i, ok := idx[g]
		if !ok {
			i = len(cmds)
			idx[g] = i
			cmds = append(cmds, s.settleCmd(r))
			continue
		}
		cmds[i].Args = r.appendTriple(cmds[i].Args)
	}
	var missing int64
	var lastErr error
	for try := 0; len(cmds) > 0; try++ {
		if try > 0 {
			time.Sleep(time.Duration(try) * 100 * time.Millisecond) // a backoff, not a wait for a condition
		}
		ctx, cancel := s.c.ctx()
		out := sliceSettleScript.ExecMulti(ctx, s.c.rdb, cmds...)
		cancel()
		failed := cmds[:0]
		for i, res := range out {
			v, err := ints(res.ToArray())
			if err == nil && len(v) != 1 {
				err = ErrRedis
			}
			if err != nil {
				lastErr = err
				failed = append(failed, cmds[i])
				continue
			}
			missing += v[0]
		}
		cmds = failed
		if try+1 >= commitRetries && len(cmds) > 0 {
			return fmt.Errorf("%w: %d commits not confirmed: %v", ErrRedis, len(cmds), lastErr)
		}
	}
	if missing > 0 {
		return fmt.Errorf("%w: %d commits found their reservation expired", ErrRedis, missing)
	}
	return nil
}
