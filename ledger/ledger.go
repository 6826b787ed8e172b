package ledger

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Errors returned by the ledger, compared with errors.Is.
var (
	ErrClosed      = errors.New("ledger: closed")
	ErrReadOnly    = errors.New("ledger: read-only")
	ErrWriteFailed = errors.New("ledger: write failed")
	ErrTampered    = errors.New("ledger: chain does not verify")
)

// SyncMode says when committed groups are forced to stable storage.
type SyncMode int

const (
	// SyncAlways fsyncs (badger DB.Sync) every group before its tickets are
	// released: an answered call survives a machine crash. The zero value.
	SyncAlways SyncMode = iota
	// SyncInterval commits every group to badger before releasing its
	// tickets (a process crash loses nothing) and fsyncs in the background
	// every Options.SyncEvery (a machine crash may lose that much).
	SyncInterval
)

// Defaults applied by Open.
const (
	DefaultSyncEvery          = time.Second
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 10 * time.Second // what cmd should pass; Options' zero means off
)

// Options configure a Ledger. The zero value is SyncAlways, a checkpoint
// every 1000 records, no time-based checkpoints, and time.Now.
type Options struct {
	Sync SyncMode
	// SyncEvery is the background fsync period in SyncInterval mode;
	// 0 means DefaultSyncEvery.
	SyncEvery time.Duration
	// CheckpointEvery writes a checkpoint once this many records were
	// committed since the last one; 0 means DefaultCheckpointEvery, a
	// negative value turns count-based checkpoints off.
	CheckpointEvery int
	// CheckpointInterval writes a checkpoint this often when records were
	// committed since the last one; 0 turns the timer off (tests). Servers
	// pass DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// Now is the clock for Record.At and Checkpoint.At; nil means time.Now.
	Now func() time.Time
}

// Ledger is the append-only, hash-chained log. All methods are safe for
// concurrent use. One writer goroutine commits appended records in groups;
// Close stops it. A Ledger opened on a read-only badger DB verifies, queries
// and exports but refuses Append.
type Ledger struct {
	db       *badger.DB
	opts     Options
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	readOnly bool

	mu      sync.Mutex // guards the appended head, pending, closed, err
	seq     uint64
	hash    [32]byte
	pending *group
	closed  bool
	err     error  // sticky write failure
	hashHex string // hex of hash: the next record's Prev
	scratch []byte
	spare   *group // a committed group's buffers, reused by the next group

	hmu   sync.Mutex // guards the committed head; written only by the writer
	cSeq  uint64
	cHash [32]byte
	cpSeq uint64 // last checkpointed seq

	wake  chan struct{}
	cpReq chan chan error
	quit  chan struct{}
	done  chan struct{}

	closeOnce sync.Once
	closeErr  error

	commits atomic.Int64 // badger commits by the writer (tests)
	// writeFault, when set (tests), runs before each group's final commit;
	// a non-nil result fails that commit as badger would.
	writeFault func() error
	scanned    atomic.Int64 // index keys visited by Query (tests)
}

// group is the set of records appended between two writer passes; they
// are committed together. Keys and values of all its entries are packed
// back to back in buf, so a group costs a few allocations however many
// records it holds.
type group struct {
	buf      []byte
	entries  []span
	lastSeq  uint64
	lastHash [32]byte
	done     chan struct{}
	err      error
}

// span locates one entry in group.buf: key buf[k:v], value buf[v:end].
type span struct{ k, v, end int }

func (g *group) add(k, v, end int) { g.entries = append(g.entries, span{k, v, end}) }

// Ticket is the receipt for an Append. The zero Ticket is already done.
type Ticket struct {
	g   *group
	err error
}

// Wait blocks until the records of the Append are committed to badger
// (and fsynced under SyncAlways). It returns ErrInvalidRecord, ErrClosed,
// ErrReadOnly or ErrWriteFailed (wrapping the badger error) when they were
// not. Wait may be called any number of times from any goroutine.
func (t Ticket) Wait() error {
	if t.err != nil {
		return t.err
	}
	if t.g == nil {
		return nil
	}
	<-t.g.done
	return t.g.err
}

// Open opens the ledger stored under the l/ prefix of db and starts its
// writer. dir is the data dir holding checkpoint.key, created (mode 0600)
// on first start and reused after; a key readable by group or others is
// refused (ErrKeyPermissions). On a DB opened with ReadOnly the key must
// exist and no goroutine is started. The caller keeps ownership of db and
// closes it after Close.
func Open(db *badger.DB, dir string, opts Options) (*Ledger, error) {
	if opts.SyncEvery <= 0 {
		opts.SyncEvery = DefaultSyncEvery
	}
	if opts.CheckpointEvery == 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ro := db.Opts().ReadOnly
	priv, err := loadOrCreateKey(dir, !ro)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l := &Ledger{
		db: db, opts: opts, priv: priv, pub: priv.Public().(ed25519.PublicKey), readOnly: ro,
		wake: make(chan struct{}, 1), cpReq: make(chan chan error),
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	if err := l.loadHead(); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if ro {
		close(l.done)
		return l, nil
	}
	go l.run()
	return l, nil
}

// loadHead reads the last record and the last checkpoint.
func (l *Ledger) loadHead() error {
	seq, h, cpSeq, err := l.storedHead()
	if err != nil {
		return err
	}
	l.seq, l.hash, l.cSeq, l.cHash, l.cpSeq = seq, h, seq, h, cpSeq
	l.hashHex = hex.EncodeToString(l.hash[:])
	return nil
}

// storedHead reads the seq and hash of the last stored record and the seq
// of the last stored checkpoint.
func (l *Ledger) storedHead() (seq uint64, h [32]byte, cpSeq uint64, err error) {
	err = l.db.View(func(txn *badger.Txn) error {
		if k, v, ok, err := last(txn, prefixRecord); err != nil {
			return err
		} else if ok {
			var r Record
			var prev [32]byte
			if err := r.decodeBinaryHashes(v, &prev, &h); err != nil {
				return fmt.Errorf("decode head record %x: %w", k, err)
			}
			seq = binary.BigEndian.Uint64(k[len(prefixRecord):])
		}
		if k, _, ok, err := last(txn, prefixCheckpoint); err != nil {
			return err
		} else if ok {
			cpSeq = binary.BigEndian.Uint64(k[len(prefixCheckpoint):])
		}
		return nil
	})
	return seq, h, cpSeq, err
}

// rollback follows a failed commit: every record appended since the last
// good commit is failed, and the chain resumes from what the store really
// holds (a failed badger batch may have been stored in part or in full),
// so that the next group links to the stored head and the ledger recovers
// by itself once writes succeed again (a disk with space again). If the
// store cannot even be read, the failure stays until Close.
func (l *Ledger) rollback(cause error) {
	seq, h, cpSeq, err := l.storedHead()
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.pending; p != nil {
		l.pending = nil
		p.err = cause
		close(p.done)
	}
	if err != nil {
		if l.err == nil {
			l.err = fmt.Errorf("%w: %v (and reading the head back: %v)", ErrWriteFailed, cause, err)
		}
		return
	}
	l.seq, l.hash = seq, h
	l.hashHex = hex.EncodeToString(h[:])
	l.hmu.Lock()
	l.cSeq, l.cHash, l.cpSeq = seq, h, cpSeq
	l.hmu.Unlock()
}

func last(txn *badger.Txn, prefix []byte) (k, v []byte, ok bool, err error) {
	o := badger.DefaultIteratorOptions
	o.Reverse, o.Prefix, o.PrefetchValues = true, prefix, false
	it := txn.NewIterator(o)
	defer it.Close()
	seek := append(append([]byte{}, prefix...), 0xff)
	it.Seek(seek)
	if !it.ValidForPrefix(prefix) {
		return nil, nil, false, nil
	}
	k = it.Item().KeyCopy(nil)
	if len(k) != len(prefix)+8 {
		return nil, nil, false, fmt.Errorf("malformed key %q", k)
	}
	v, err = it.Item().ValueCopy(nil)
	return k, v, err == nil, err
}

// PublicKey returns the Ed25519 key that verifies this ledger's
// checkpoints; publish it (GET /audit/pubkey) so verification does not
// trust the data dir.
func (l *Ledger) PublicKey() ed25519.PublicKey { return l.pub }

// Head returns the seq and hex hash of the last committed record; (0, "")
// for an empty ledger.
func (l *Ledger) Head() (seq uint64, hash string) {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if l.cSeq == 0 {
		return 0, ""
	}
	return l.cSeq, hex.EncodeToString(l.cHash[:])
}

// Append assigns each record, in order, its Seq, At (when zero, from
// Options.Now), Prev and Hash, and queues them for the writer. It never
// waits for the disk, so a caller may hold its own short lock around it;
// call Wait on the returned Ticket (outside that lock) before answering.
// Records appended by one call are committed in the same group. If any
// record is invalid none is appended and the Ticket carries
// ErrInvalidRecord. After Append the records belong to the ledger.
func (l *Ledger) Append(recs ...*Record) Ticket {
	if l.readOnly {
		return Ticket{err: ErrReadOnly}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Ticket{err: ErrClosed}
	}
	if l.err != nil {
		return Ticket{err: l.err}
	}
	if len(recs) == 0 {
		return Ticket{}
	}
	var now time.Time
	for _, r := range recs {
		if r.At.IsZero() {
			if now.IsZero() {
				now = l.opts.Now()
			}
			r.At = now
		}
		if err := r.normalize(); err != nil {
			return Ticket{err: fmt.Errorf("append: %w", err)}
		}
	}
	g := l.pending
	if g == nil {
		g = l.spare
		l.spare = nil
		if g == nil {
			g = &group{}
		}
		g.done = make(chan struct{})
		l.pending = g
	}
	for _, r := range recs {
		prev := l.hash
		l.seq++
		r.Seq = l.seq
		r.Prev = l.hashHex
		l.scratch, l.hash = hashRecord(l.scratch, &prev, r)
		var hx [64]byte
		hex.Encode(hx[:], l.hash[:])
		l.hashHex = string(hx[:])
		r.Hash = l.hashHex

		// Record: its stored (binary) form, encoded once.
		k := len(g.buf)
		g.buf = appendSeqKey(g.buf, prefixRecord, r.Seq)
		rv := len(g.buf)
		g.buf = r.appendBinary(g.buf, &prev, &l.hash)
		rend := len(g.buf)
		g.add(k, rv, rend)
		// Time index: filters only.
		k = len(g.buf)
		g.buf = appendTimeKey(g.buf, r.At, r.Seq)
		v := len(g.buf)
		g.buf = appendIndexValue(g.buf, r)
		g.add(k, v, len(g.buf))
		if r.Principal == "" {
			continue
		}
		// Principal index: a byte-exact copy of the record, so a replay
		// never reads l/r/ (Verify checks the copies).
		k = len(g.buf)
		g.buf = appendPrincipalKey(g.buf, r.Principal, r.At, r.Seq)
		v = len(g.buf)
		g.buf = append(g.buf, g.buf[rv:rend]...)
		g.add(k, v, len(g.buf))
		if r.Type == TypeTxn && r.BalanceAfter != nil {
			k = len(g.buf)
			g.buf = append(g.buf, prefixBalance...)
			g.buf = append(g.buf, r.Principal...)
			v = len(g.buf)
			g.buf = binary.BigEndian.AppendUint64(g.buf, r.Seq)
			g.add(k, v, len(g.buf))
		}
	}
	g.lastSeq, g.lastHash = l.seq, l.hash
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return Ticket{g: g}
}

// run is the writer goroutine.
func (l *Ledger) run() {
	defer close(l.done)
	var cpTick, syncTick <-chan time.Time
	if l.opts.CheckpointInterval > 0 {
		t := time.NewTicker(l.opts.CheckpointInterval)
		defer t.Stop()
		cpTick = t.C
	}
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncEvery)
		defer t.Stop()
		syncTick = t.C
	}
	dirty := false
	for {
		select {
		case <-l.wake:
			if l.flush(false) == nil {
				dirty = true
			}
		case <-cpTick:
			if l.flush(true) == nil {
				dirty = true
			}
		case <-syncTick:
			if dirty {
				dirty = false
				l.db.Sync() // a failure here shows again on the next commit or Close
			}
		case reply := <-l.cpReq:
			err := l.flush(true)
			dirty = true
			reply <- err
		case <-l.quit:
			err := l.flush(true)
			if err == nil {
				err = l.db.Sync()
			}
			l.closeErr = err
			return
		}
	}
}

// flush commits the pending group, with a checkpoint in the same
// transaction when one is due (or forced and anything is uncovered).
func (l *Ledger) flush(forceCP bool) error {
	l.mu.Lock()
	g, failed := l.pending, l.err
	l.pending = nil
	l.mu.Unlock()
	if failed != nil {
		if g != nil {
			g.err = failed
			close(g.done)
		}
		return failed
	}
	newSeq, newHash := l.cSeq, l.cHash // only this goroutine writes them
	if g != nil {
		newSeq, newHash = g.lastSeq, g.lastHash
	}
	var cp []byte
	every := uint64(l.opts.CheckpointEvery)
	if newSeq > l.cpSeq && (forceCP || (l.opts.CheckpointEvery > 0 && newSeq-l.cpSeq >= every)) {
		c := signCheckpoint(l.priv, newSeq, newHash, l.opts.Now())
		cp = c.appendJSON(nil)
	}
	if g == nil && cp == nil {
		return nil
	}
	err := l.write(g, newSeq, cp)
	if err == nil && l.opts.Sync == SyncAlways {
		err = l.db.Sync()
	}
	if err != nil {
		err = fmt.Errorf("%w: %v", ErrWriteFailed, err)
		l.rollback(err)
	} else {
		l.hmu.Lock()
		l.cSeq, l.cHash = newSeq, newHash
		if cp != nil {
			l.cpSeq = newSeq
		}
		l.hmu.Unlock()
	}
	if g != nil {
		g.err = err
		close(g.done)
		if err == nil {
			l.recycle(g)
		}
	}
	return err
}

// maxSpare bounds the buffer kept for reuse between groups.
const maxSpare = 1 << 20

// recycle hands g's buffers to the next group. Tickets keep only g's done
// channel and err, which the next group replaces with its own.
func (l *Ledger) recycle(g *group) {
	if cap(g.buf) > maxSpare {
		return
	}
	spare := &group{buf: g.buf[:0], entries: g.entries[:0]}
	l.mu.Lock()
	l.spare = spare
	l.mu.Unlock()
}

// write commits the group's entries and the checkpoint in one badger
// transaction; a group too large for one is split into consecutive
// transactions in seq order, so a crash leaves a prefix of the chain.
func (l *Ledger) write(g *group, cpSeq uint64, cp []byte) error {
	txn := l.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	set := func(e *badger.Entry) error {
		err := txn.SetEntry(e)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return err
			}
			l.commits.Add(1)
			txn = l.db.NewTransaction(true)
			err = txn.SetEntry(e)
		}
		return err
	}
	n := 0
	if g != nil {
		n = len(g.entries)
	}
	if cp != nil {
		n++
	}
	ents := make([]badger.Entry, n) // badger keeps the pointers until commit
	if g != nil {
		for i, sp := range g.entries {
			ents[i] = badger.Entry{Key: g.buf[sp.k:sp.v], Value: g.buf[sp.v:sp.end]}
			if err := set(&ents[i]); err != nil {
				return err
			}
		}
	}
	if cp != nil {
		ents[n-1] = badger.Entry{Key: seqKey(prefixCheckpoint, cpSeq), Value: cp}
		if err := set(&ents[n-1]); err != nil {
			return err
		}
	}
	if l.writeFault != nil {
		if err := l.writeFault(); err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	l.commits.Add(1)
	return nil
}

// checkpointNow asks the writer to commit what is pending and sign the
// head. It is a no-op on a read-only ledger.
func (l *Ledger) checkpointNow() error {
	if l.readOnly {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case l.cpReq <- reply:
		return <-reply
	case <-l.done:
		return nil // closed: Close wrote the final checkpoint
	}
}

// Close stops accepting records, commits everything pending, writes a
// final checkpoint and fsyncs. It does not close the badger DB. Later
// calls return the first call's result.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		if l.readOnly {
			return
		}
		close(l.quit)
		<-l.done
	})
	return l.closeErr
}
