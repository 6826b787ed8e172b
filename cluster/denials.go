package cluster

import (
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/redis/rueidis"

	"github.com/toolgate/toolgate/gateway"
)

// Denials is gateway.DenialLog on Redis: the last KeepDenials refused
// calls of each principal, from every node, in a list
// prefix{principal}:d (newest first, expiring a day after the last). Add
// queues the write and returns at once; one goroutine writes the queue
// in pipelined batches, and drops entries when the queue is full (the
// ledger is the record; the list is a view for the status). Safe for
// concurrent use; Close stops the writer.
type Denials struct {
	c       *Client
	queue   chan denialEntry
	dropped atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

// KeepDenials is how many recent denials a principal's list keeps.
const KeepDenials = 20

type denialEntry struct {
	principal string
	d         gateway.Denial
}

var _ gateway.DenialLog = (*Denials)(nil)

// NewDenials starts the shared denial log on c.
func NewDenials(c *Client) *Denials {
	d := &Denials{c: c, queue: make(chan denialEntry, 4096), stop: make(chan struct{})}
	d.wg.Add(1)
	go d.write()
	return d
}

// Add queues d for principal, stamping this node; never blocks.
func (d *Denials) Add(principal string, den gateway.Denial) {
	den.Node = d.c.node
	select {
	case d.queue <- denialEntry{principal, den}:
	default:
		d.dropped.Add(1)
	}
}

// Dropped returns how many denials the full queue dropped.
func (d *Denials) Dropped() int64 { return d.dropped.Load() }

func (d *Denials) write() {
	defer d.wg.Done()
	batch := make(rueidis.Commands, 0, 3*64)
	for {
		var e denialEntry
		select {
		case <-d.stop:
			return
		case e = <-d.queue:
		}
		batch = batch[:0]
		for {
			batch = append(batch, d.cmds(e)...)
			if len(batch) >= 3*64 {
				break
			}
			select {
			case e = <-d.queue:
				continue
			default:
			}
			break
		}
		ctx, cancel := d.c.ctx()
		d.c.rdb.DoMulti(ctx, batch...) // failures drop the batch: a view, not the record
		cancel()
	}
}

func (d *Denials) cmds(e denialEntry) rueidis.Commands {
	b, _ := json.Marshal(e.d)
	k := d.c.key(e.principal, "d")
	bb := d.c.rdb.B()
	return rueidis.Commands{
		bb.Lpush().Key(k).Element(string(b)).Build(),
		bb.Ltrim().Key(k).Start(0).Stop(KeepDenials - 1).Build(),
		bb.Pexpire().Key(k).Milliseconds(int64(24 * 3600 * 1000)).Build(),
	}
}

// Recent returns up to n of principal's recent denials, newest first.
func (d *Denials) Recent(principal string, n int) ([]gateway.Denial, error) {
	ctx, cancel := d.c.ctx()
	defer cancel()
	vals, err := d.c.rdb.Do(ctx, d.c.rdb.B().Lrange().Key(d.c.key(principal, "d")).Start(0).Stop(int64(n-1)).Build()).AsStrSlice()
	if err != nil {
		return nil, redisErr("recent denials", err)
	}
	out := make([]gateway.Denial, 0, len(vals))
	for _, v := range vals {
		var den gateway.Denial
		if json.Unmarshal([]byte(v), &den) == nil {
			out = append(out, den)
		}
	}
	return out, nil
}

// Close stops the writer; queued entries not yet written are dropped.
func (d *Denials) Close() {
	select {
	case <-d.stop:
		return
	default:
		close(d.stop)
	}
	d.wg.Wait()
}
