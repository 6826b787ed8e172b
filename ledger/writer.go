package ledger

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// writer is the group commit: append chains records onto the pending
// group, and one goroutine, run, journals each group with one write(2)
// (fdatasynced under SyncAlways), releases its Tickets and hands it to
// the applier. It owns the appended head (what the next record links
// to), the journaled head (what Head reports) and the journal's write
// side.
//
// run starts after Open's replay and ends when quit is closed, after a
// final flush and sync; append, head, state, markClosed and checkpoint
// are safe from any goroutine. On a read-only ledger run never starts
// and j is nil. It is built by newWriter; the zero value is not usable.
type writer struct {
	j     *journal // nil when read-only
	a     *applier
	pool  *groupPool
	now   func() time.Time
	mode  SyncMode
	every time.Duration // background sync period under SyncInterval
	hooks *hooks

	mu      sync.Mutex // guards the appended head, pending, closed, err
	seq     uint64
	hash    [32]byte
	hashHex string // hex of hash: the next record's Prev
	scratch []byte
	enc     []byte // a record's stored form, scratch
	pending *group
	closed  bool
	err     error // sticky write failure

	// fmu is held while a group is journaled (flush, a background sync's
	// start): the journal's write side belongs to whoever holds it, a
	// caller in Ticket.Wait or the writer goroutine.
	fmu sync.Mutex

	hmu   sync.Mutex // guards the journaled head; written under fmu only
	cSeq  uint64     // last journaled (acknowledged) record
	cHash [32]byte
	acked atomic.Uint64 // cSeq, for lock-free reads

	wake     chan struct{}
	cpReq    chan chan error
	quit     chan struct{}
	done     chan struct{}
	finalErr error // the final flush and sync; read after done

	// Background journal syncs under SyncInterval: at most one at a time,
	// off the writer goroutine so that a slow fsync never delays a group.
	bgSyncing  atomic.Bool
	bgSyncFail atomic.Bool // a background sync failed: stop syncs again
	bgSyncDone sync.WaitGroup
}

// newWriter returns a stopped writer that journals to j (nil on a
// read-only ledger, which never starts it) and whose chain (appended and
// journaled) ends at seq with hash. h may be nil.
func newWriter(j *journal, a *applier, pool *groupPool, opts *Options, h *hooks, seq uint64, hash [32]byte) *writer {
	w := &writer{
		j: j, a: a, pool: pool, now: opts.Now, mode: opts.Sync, every: opts.SyncEvery, hooks: h,
		seq: seq, hash: hash, hashHex: hex.EncodeToString(hash[:]),
		cSeq: seq, cHash: hash,
		wake: make(chan struct{}, 1), cpReq: make(chan chan error),
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	w.acked.Store(seq)
	return w
}

// append assigns each record, in order, its Seq, At (when zero), Prev and
// Hash, and adds it to the pending group; see Ledger.Append for the
// contract.
func (w *writer) append(recs []*Record) Ticket {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return Ticket{err: ErrClosed}
	}
	if w.err != nil {
		return Ticket{err: w.err}
	}
	if len(recs) == 0 {
		return Ticket{}
	}
	if err := w.a.refuse(w.seq); err != nil {
		return Ticket{err: err}
	}
	var now time.Time
	for _, r := range recs {
		if r.At.IsZero() {
			if now.IsZero() {
				now = w.now()
			}
			r.At = now
		}
		if err := r.normalize(); err != nil {
			return Ticket{err: fmt.Errorf("append: %w", err)}
		}
	}
	g := w.pending
	if g == nil {
		g = w.pool.get()
		g.done = make(chan struct{})
		g.firstSeq = w.seq + 1
		g.jbuf = append(g.jbuf[:0], make([]byte, frameHeader)...)
		w.pending = g
	}
	for _, r := range recs {
		prev := w.hash
		w.seq++
		r.Seq = w.seq
		r.Prev = w.hashHex
		w.scratch, w.hash = hashRecord(w.scratch, &prev, r)
		var hx [64]byte
		hex.Encode(hx[:], w.hash[:])
		w.hashHex = string(hx[:])
		r.Hash = w.hashHex
		w.enc = g.addRecord(r, &prev, &w.hash, w.enc)
	}
	g.lastSeq, g.lastHash = w.seq, w.hash
	return Ticket{g: g, w: w}
}

// journaled returns the seq of the last journaled (acknowledged) record
// without a lock.
func (w *writer) journaled() uint64 { return w.acked.Load() }

// head returns the last journaled (acknowledged) record.
func (w *writer) head() (uint64, [32]byte) {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	return w.cSeq, w.cHash
}

// state returns ErrClosed after markClosed, else the sticky journal
// failure, else nil.
func (w *writer) state() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.err
}

// markClosed makes append refuse records with ErrClosed.
func (w *writer) markClosed() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// checkpoint journals what is pending and asks the applier for a
// checkpoint over it, and returns the result; nil once run has exited.
func (w *writer) checkpoint() error {
	reply := make(chan error, 1)
	select {
	case w.cpReq <- reply:
		return <-reply
	case <-w.done:
		return nil // closed: Close wrote the final checkpoint
	}
}

// start runs the writer goroutine.
func (w *writer) start() { go w.run() }

// stop makes run flush and sync what is pending and exit, waits for it,
// and returns that final flush's or sync's error.
func (w *writer) stop() error {
	close(w.quit)
	<-w.done
	return w.finalErr
}

// run is the writer goroutine: it journals pending groups and answers
// their Tickets.
func (w *writer) run() {
	defer close(w.done)
	// The tick journals groups whose Tickets nobody waits for (wait
	// journals the others) and, under SyncInterval, syncs.
	t := time.NewTicker(w.every)
	defer t.Stop()
	syncTick := t.C
	for {
		select {
		case <-w.wake:
			w.fmu.Lock()
			w.flush()
			w.fmu.Unlock()
		case <-syncTick:
			w.fmu.Lock()
			w.flush()
			if w.mode == SyncInterval {
				w.syncInBackground()
			}
			w.fmu.Unlock()
		case reply := <-w.cpReq:
			w.fmu.Lock()
			err := w.flush()
			w.fmu.Unlock()
			if err != nil {
				reply <- err
				continue
			}
			w.a.requestCheckpoint(reply)
		case <-w.quit:
			w.fmu.Lock()
			err := w.flush()
			w.fmu.Unlock()
			w.bgSyncDone.Wait()
			if w.bgSyncFail.Load() {
				w.j.dirty = true
			}
			if serr := w.j.sync(); err == nil {
				err = serr
			}
			w.finalErr = err
			return
		}
	}
}

// wait returns once g is journaled (or failed). When no other goroutine
// is journaling, the caller journals the pending group (g, and what
// others appended with it) itself: one call at a time costs no goroutine
// switch. Otherwise it asks the writer goroutine to journal what is
// pending once the current write is done, and waits.
//
// With yield, it first lets the goroutines ready to run go ahead (see
// Ticket.WaitYielding): those about to append join g.
func (w *writer) wait(g *group, yield bool) error {
	select {
	case <-g.done:
		return g.err
	default:
	}
	if yield {
		runtime.Gosched()
		select {
		case <-g.done:
			return g.err
		default:
		}
	}
	if w.fmu.TryLock() {
		select {
		case <-g.done:
		default:
			w.flush()
		}
		w.fmu.Unlock()
	} else {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	<-g.done
	return g.err
}

// flush journals the pending group with one write(2), fdatasyncs it under
// SyncAlways, hands it to the applier and releases its Tickets. The
// caller holds fmu.
func (w *writer) flush() error {
	w.mu.Lock()
	g, failed := w.pending, w.err
	w.pending = nil
	w.mu.Unlock()
	if failed != nil {
		if g != nil {
			g.err = failed
			close(g.done)
		}
		return failed
	}
	if g == nil {
		return nil
	}
	err := w.a.waitRoom(g.firstSeq)
	if err == nil {
		err = w.hooks.journalFault()
	}
	if err == nil {
		body := g.jbuf[frameHeader:]
		binary.LittleEndian.PutUint32(g.jbuf, uint32(len(body)))
		binary.LittleEndian.PutUint32(g.jbuf[4:], crc32Checksum(body))
		g.seg, g.off, err = w.j.append(g.jbuf, g.firstSeq, w.mode == SyncAlways)
	}
	if err != nil {
		sticky := errors.Is(err, errJournalCut)
		err = fmt.Errorf("%w: %v", ErrWriteFailed, err)
		w.rollback(err, sticky)
		g.err = err
		close(g.done)
		return err
	}
	w.hmu.Lock()
	w.cSeq, w.cHash = g.lastSeq, g.lastHash
	w.hmu.Unlock()
	w.acked.Store(g.lastSeq)
	w.a.enqueue(g)
	close(g.done)
	return nil
}

// rollback follows a failed journal write: every record appended since
// the last good write is failed, and the chain resumes from the journal's
// end, so that the next group links to it and the ledger recovers by
// itself once writes succeed again (a disk with space again). When the
// journal could not even be cut back (sticky), the failure stays until
// Close.
func (w *writer) rollback(cause error, sticky bool) {
	seq, h := w.head()
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.pending; p != nil {
		w.pending = nil
		p.err = cause
		close(p.done)
	}
	if sticky && w.err == nil {
		w.err = cause
	}
	w.seq, w.hash = seq, h
	w.hashHex = hex.EncodeToString(h[:])
}

// syncInBackground fsyncs the journal segment being written without
// blocking the writer: pwrite and fsync on one file may run concurrently,
// and what a later group writes is covered by the next tick. It runs under
// fmu, whose holder owns j.f and j.dirty.
func (w *writer) syncInBackground() {
	if w.j.f == nil || !w.j.dirty || !w.bgSyncing.CompareAndSwap(false, true) {
		return
	}
	f := w.j.f
	w.j.dirty = false
	w.bgSyncDone.Add(1)
	go func() {
		defer w.bgSyncDone.Done()
		defer w.bgSyncing.Store(false)
		// os.File.Sync holds a reference on the descriptor, so a
		// concurrent rotation's Close cannot make it sync another file;
		// the rotation syncs the finished segment itself.
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			w.bgSyncFail.Store(true)
		}
	}()
}
