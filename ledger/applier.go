package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// maxApply bounds the records merged into one badger transaction.
const maxApply = 8192

// The applier is not woken for every journaled group: a goroutine switch
// per call costs more than indexing the group. applyBatch queued groups,
// a reader waiting for them (waitFor), the writer held by the backlog
// (waitRoom) or a checkpoint request wake it at once; a group queued on
// an empty queue arms a timer of applyDelay, which applies what a slow
// trickle of calls journaled. The timer is long so that under load the
// batch wakes the applier, not the timer: arming a timer wakes an idle P
// to watch it and its firing readies the applier on another thread, and
// at one connection (a group per call, ~6 per millisecond) a 1 ms timer
// cost ~0.35 context switches and 0.7 futex calls per call
// (BENCHMARKS.md, issue 18 tails). Nothing waits for the applier but
// readers, which wake it.
const (
	applyDelay = 50 * time.Millisecond
	applyBatch = 64
)

// errHalted is the applier's result while hooks halt it (a simulated
// crash): nothing more is applied and Close keeps the journal.
var errHalted = errors.New("ledger: halted")

// applier indexes journaled groups in the record store (the segments,
// segment.go) in seq order, writes their few badger entries (admin and
// balance index) and the due checkpoints, several groups per
// transaction and only when there is something to write, seals finished
// segments, and tells readers and the writer how far it got. It owns the
// apply queue, the applied head and the checkpoint requests.
//
// One goroutine, run, applies; it starts after Open's replay (which calls
// applyPending directly) and ends when quit is closed, after a final
// drain. enqueue, requestCheckpoint, waitRoom, refuse, waitFor, head and
// lag are safe from any goroutine. It is built by newApplier; the zero
// value is not usable.
type applier struct {
	db    *badger.DB
	cp    *checkpointer
	pool  *groupPool // where applied groups' buffers go
	st    *recordStore
	hooks *hooks
	// indexed is the last record added to st (run's, or Open's, only):
	// a retried batch does not index a group twice.
	indexed uint64
	// maxBacklog bounds the acknowledged records that wait while badger
	// fails: beyond it the writer and Append fail fast.
	maxBacklog uint64

	mu       sync.Mutex // guards the fields below up to stopped
	cond     sync.Cond  // broadcast when seq, err or stopped change
	queue    []*group   // journaled, not yet applied, in seq order
	waiters  []chan error
	seq      uint64 // last record applied (indexed, and its entries in badger)
	hash     [32]byte
	err      error          // the last failure; nil once an attempt succeeds again
	stopped  bool           // run has exited
	applied  atomic.Uint64  // seq, for lock-free reads
	failing  atomic.Bool    // err != nil, for lock-free reads
	ents     []badger.Entry // write's buffer: run's (or Open's) only
	armed    bool           // timer runs for the queued groups (under mu)
	timer    *time.Timer    // fires applyDelay after a group is queued on an empty queue
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	drainErr error // the final drain and sync; read after done
}

// newApplier returns a stopped applier whose store holds the records up
// to seq (with hash). h may be nil.
func newApplier(db *badger.DB, st *recordStore, cp *checkpointer, pool *groupPool, h *hooks, seq uint64, hash [32]byte) *applier {
	a := &applier{
		db: db, st: st, cp: cp, pool: pool, hooks: h, maxBacklog: h.backlog(),
		seq: seq, hash: hash, indexed: seq,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	a.cond.L = &a.mu
	a.applied.Store(seq)
	a.timer = time.NewTimer(time.Hour)
	a.timer.Stop()
	return a
}

// enqueue hands a journaled group to the applier, which applies it within
// applyDelay (see applyBatch).
func (a *applier) enqueue(g *group) {
	a.mu.Lock()
	a.queue = append(a.queue, g)
	n, arm := len(a.queue), !a.armed
	a.armed = true
	a.mu.Unlock()
	if n >= applyBatch {
		a.wakeUp()
	} else if arm {
		a.timer.Reset(applyDelay)
	}
}

// requestCheckpoint asks for everything queued so far to be applied and
// covered by a checkpoint; reply receives the result (nil, or the apply
// failure). Queue the groups first: a request covers what was queued
// before it.
func (a *applier) requestCheckpoint(reply chan error) {
	a.mu.Lock()
	a.waiters = append(a.waiters, reply)
	a.mu.Unlock()
	a.wakeUp()
}

func (a *applier) wakeUp() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// waitRoom holds the writer while the applier is maxBacklog records or
// more behind the group starting at first (backpressure: callers wait
// longer), and fails instead when the applier is failing (its error) or
// has stopped (ErrClosed).
func (a *applier) waitRoom(first uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if first-1-a.seq >= a.maxBacklog {
		a.wakeUp()
	}
	for first-1-a.seq >= a.maxBacklog {
		if a.err != nil {
			return fmt.Errorf("%d records wait to be applied to the store: %v", first-1-a.seq, a.err)
		}
		if a.stopped {
			return ErrClosed
		}
		a.cond.Wait()
	}
	return nil
}

// refuse returns an error wrapping ErrWriteFailed when badger fails and
// maxBacklog records or more up to seq wait for it, so that Append fails
// fast; nil otherwise. It takes no lock.
func (a *applier) refuse(seq uint64) error {
	if a.failing.Load() {
		if n := seq - a.applied.Load(); n >= a.maxBacklog {
			return fmt.Errorf("%w: %d records wait to be applied to the store, which fails", ErrWriteFailed, n)
		}
	}
	return nil
}

// waitFor returns once badger holds every record up to target. While
// the applier fails it returns that failure rather than wait for a
// retry; once it stopped it returns nil at once.
func (a *applier) waitFor(target uint64) error {
	if a.applied.Load() >= target {
		return nil
	}
	a.wakeUp()
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.seq < target {
		if a.err != nil {
			return fmt.Errorf("read: the store lags the journal: %w", a.err)
		}
		if a.stopped {
			return nil
		}
		a.cond.Wait()
	}
	return nil
}

// head returns the last record applied to badger.
func (a *applier) head() (uint64, [32]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seq, a.hash
}

// lag returns nil while the last apply succeeded, or its failure
// (wrapping ErrWriteFailed) with how many of the records up to acked
// wait in the journal.
func (a *applier) lag(acked uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return fmt.Errorf("%w (%d acknowledged records wait in the journal)", a.err, acked-a.seq)
	}
	return nil
}

// start runs the applier goroutine.
func (a *applier) start() { go a.run() }

// stop makes run drain the queue and exit, waits for it, and returns the
// final drain's error (errHalted when hooks halted it).
func (a *applier) stop() error {
	close(a.quit)
	<-a.done
	return a.drainErr
}

// run is the applier goroutine: it copies journaled groups into badger,
// retrying with backoff while badger fails, and writes the checkpoints.
func (a *applier) run() {
	defer func() {
		a.mu.Lock()
		a.stopped = true
		a.cond.Broadcast()
		a.mu.Unlock()
		close(a.done)
	}()
	var cpTick <-chan time.Time
	if a.cp.interval > 0 {
		t := time.NewTicker(a.cp.interval)
		defer t.Stop()
		cpTick = t.C
	}
	var retry <-chan time.Time
	var backoff time.Duration
	forceCP := false
	for {
		if retry != nil {
			select {
			case <-retry:
				retry = nil
			case <-cpTick:
				forceCP = true
				continue
			case <-a.quit:
				a.drain()
				return
			}
		} else {
			select {
			case <-a.wake:
			case <-a.timer.C:
			case <-cpTick:
				forceCP = true
			case <-a.quit:
				a.drain()
				return
			}
		}
		a.mu.Lock()
		a.armed = false // groups queued from now on arm the timer again
		a.mu.Unlock()
		if a.hooks.halt() {
			continue
		}
		if err := a.applyPending(forceCP); err != nil {
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			retry = time.After(backoff)
			continue
		}
		backoff, forceCP = 0, false
	}
}

// drain applies everything journaled, with a final checkpoint, and syncs
// badger (Close).
func (a *applier) drain() {
	if a.hooks.halt() {
		a.drainErr = errHalted
		return
	}
	err := a.applyPending(true)
	if err == nil {
		err = a.db.Sync()
	}
	a.drainErr = err
}

// applyPending applies the queued groups in order, several per badger
// transaction, with a checkpoint in the transaction where one is due (or
// forced, or asked for by requestCheckpoint, and anything is uncovered).
// On failure the groups stay queued (applying them again is idempotent),
// the waiting checkpoint requests get the error, and the failure shows in
// lag until a later attempt succeeds.
func (a *applier) applyPending(forceCP bool) error {
	for !a.hooks.halt() {
		a.mu.Lock()
		groups, waiters := a.queue, a.waiters
		newSeq, newHash := a.seq, a.hash
		a.mu.Unlock()
		n, recs, cpDue, ents := 0, uint64(0), false, 0
		for n < len(groups) && recs < maxApply {
			g := groups[n]
			n++
			recs += g.lastSeq - g.firstSeq + 1
			ents += len(g.entries)
			newSeq, newHash = g.lastSeq, g.lastHash
			if a.cp.due(newSeq) {
				cpDue = true
				break
			}
		}
		all := n == len(groups)
		var cp []byte
		if newSeq > a.cp.last() && (cpDue || all && (forceCP || len(waiters) > 0)) {
			c := a.cp.sign(newSeq, newHash)
			cp = c.appendJSON(nil)
		}
		var err error
		if ents > 0 || cp != nil {
			err = a.write(groups[:n], newSeq, cp)
		}
		for _, g := range groups[:n] {
			if err != nil {
				break
			}
			if g.lastSeq > a.indexed {
				if !g.indexed {
					err = a.st.add(g)
				}
				if err == nil {
					a.indexed = g.lastSeq
				}
			}
		}
		if err != nil {
			err = fmt.Errorf("%w: apply: %v", ErrWriteFailed, err)
			a.mu.Lock()
			a.waiters = a.waiters[len(waiters):]
			a.err = err
			a.failing.Store(true)
			a.cond.Broadcast()
			a.mu.Unlock()
			for _, w := range waiters {
				w <- err
			}
			return err
		}
		if cp != nil {
			a.cp.signed(newSeq)
		}
		a.mu.Lock()
		a.queue = a.queue[n:]
		if len(a.queue) == 0 {
			a.queue = nil // let the backing array go
		}
		a.seq, a.hash = newSeq, newHash
		a.applied.Store(newSeq)
		a.err = nil
		a.failing.Store(false)
		if all {
			a.waiters = a.waiters[len(waiters):]
		}
		a.cond.Broadcast()
		a.mu.Unlock()
		a.pool.put(groups[:n])
		if all {
			for _, w := range waiters {
				w <- nil
			}
			return nil
		}
	}
	return errHalted
}

// write commits the groups' entries, l/applied and the checkpoint in one
// badger transaction; when that is too large it is split into
// consecutive transactions in seq order, l/applied in the last, so a
// crash leaves a prefix and Open replays the rest from the segments
// (writing the same keys again is harmless).
func (a *applier) write(gs []*group, seq uint64, cp []byte) error {
	txn := a.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	set := func(e *badger.Entry) error {
		err := txn.SetEntry(e)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return err
			}
			a.hooks.committed()
			txn = a.db.NewTransaction(true)
			err = txn.SetEntry(e)
		}
		return err
	}
	n := 1
	for _, g := range gs {
		n += len(g.entries)
	}
	if cp != nil {
		n++
	}
	// badger keeps the pointers until Commit returns; the slice is reused
	// by the next write (this goroutine's only).
	if cap(a.ents) < n {
		a.ents = make([]badger.Entry, n)
	}
	ents := a.ents[:n]
	defer clear(ents) // drop the references to the groups' buffers
	i := 0
	for _, g := range gs {
		for _, sp := range g.entries {
			ents[i] = badger.Entry{Key: g.buf[sp.k:sp.v], Value: g.buf[sp.v:sp.end]}
			if err := set(&ents[i]); err != nil {
				return err
			}
			i++
		}
	}
	ents[i] = badger.Entry{Key: keyApplied, Value: binary.BigEndian.AppendUint64(nil, seq)}
	if err := set(&ents[i]); err != nil {
		return err
	}
	if cp != nil {
		ents[i+1] = badger.Entry{Key: seqKey(prefixCheckpoint, seq), Value: cp}
		if err := set(&ents[i+1]); err != nil {
			return err
		}
	}
	if err := a.hooks.commitFault(); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	a.hooks.committed()
	return nil
}
