package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// ErrJournalPending is returned by Export on a read-only ledger when
	// the journal holds acknowledged records that the store does not hold
	// yet (the gateway was killed rather than stopped); opening the data
	// dir writable once applies them. Verify checks them in memory.
	ErrJournalPending = errors.New("ledger: journal not applied to the store; start the gateway once (or verify online) to apply it")
)

// SyncMode says when journaled groups are forced to stable storage.
type SyncMode int

const (
	// SyncAlways fdatasyncs the journal after every group's write, before
	// its tickets are released: an answered call survives a machine crash.
	// The zero value.
	SyncAlways SyncMode = iota
	// SyncInterval releases a group's tickets once its journal write(2)
	// returned (the bytes are in the OS page cache, so a process crash
	// loses nothing) and fdatasyncs the journal in the background every
	// Options.SyncEvery (a machine crash may lose that much).
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
	// KeepJournal makes Close leave the journal files in place even when
	// everything was applied, for a caller that still has to close the
	// store: it deletes them with RemoveJournal once the store closed
	// cleanly, so that a store whose last flush fails (a full disk)
	// keeps its records in the journal for the next Open.
	KeepJournal bool
	// ReadOnly opens the ledger as on a read-only DB even when db is
	// writable (a temporary copy of a store): nothing is written to db
	// or to dir.
	ReadOnly bool
}

// Ledger is the append-only, hash-chained log. All methods are safe for
// concurrent use. Two goroutines run behind it: the writer appends groups
// of records to the journal and answers their Tickets, the applier copies
// journaled groups into badger in order. Close stops both. A Ledger
// opened on a read-only badger DB verifies, queries and exports but
// refuses Append.
type Ledger struct {
	db       *badger.DB
	opts     Options
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	readOnly bool
	j        *journal // nil when read-only
	// roJournal is, on a read-only ledger, the seq range the journal
	// holds beyond the store (after a crash): replayed and checked in
	// memory at Open, never applied. Zero when there is none.
	roJournalFirst, roJournalLast uint64
	// journalFrom is the first seq the journal held at Open (0: none).
	journalFrom uint64

	mu      sync.Mutex // guards the appended head, pending, closed, err, spare
	seq     uint64
	hash    [32]byte
	pending *group
	closed  bool
	err     error  // sticky write failure
	hashHex string // hex of hash: the next record's Prev
	scratch []byte
	spares  []*group // applied groups' buffers, reused by the next groups

	hmu   sync.Mutex // guards the journaled head and cpSeq
	cSeq  uint64     // last journaled (acknowledged) record; written only by the writer
	cHash [32]byte
	cpSeq uint64 // last checkpointed seq; written only by the applier

	amu       sync.Mutex // guards the apply queue and the applied head
	acond     *sync.Cond // broadcast when aSeq, applyErr or applyStopped change
	queue     []*group   // journaled, not yet applied, in seq order
	cpWaiters []chan error
	aSeq      uint64 // last record applied to badger
	aHash     [32]byte
	applyErr  error // the applier's last failure; nil once it succeeds again
	applyStop bool  // the applier has exited

	acked        atomic.Uint64 // cSeq, for lock-free reads
	applied      atomic.Uint64 // aSeq, for lock-free reads
	applyFailing atomic.Bool
	maxBacklog   uint64 // Append fails fast beyond this many unapplied records while the applier fails

	wake      chan struct{}
	cpReq     chan chan error
	quit      chan struct{}
	done      chan struct{}
	applyWake chan struct{}
	applyQuit chan struct{}
	applyDone chan struct{}
	writerErr error // the writer's final flush and sync

	// Background journal syncs under SyncInterval: at most one at a time,
	// off the writer goroutine so that a slow fsync never delays a group.
	bgSyncing  atomic.Bool
	bgSyncFail atomic.Bool // a background sync failed: Close syncs again
	bgSyncDone sync.WaitGroup
	drainErr   error // the applier's final drain and sync

	closeOnce sync.Once
	closeErr  error

	ents    []badger.Entry // the applier's write buffer
	commits atomic.Int64   // badger commits by the applier (tests)
	// writeFault, when set (tests), runs in the writer before each
	// journal write; a non-nil result fails that write as the disk would.
	writeFault func() error
	// applyFault, when set (tests), runs in the applier before each badger
	// commit; a non-nil result fails that commit as badger would.
	applyFault func() error
	halted     atomic.Bool  // tests: the applier applies nothing (a crash is simulated)
	scanned    atomic.Int64 // index keys visited by Query (tests)
}

// group is the set of records appended between two writer passes; they
// are journaled as one frame and applied together. Keys and values of all
// its badger entries are packed back to back in buf, and its journal
// frame in jbuf, so a group costs a few allocations however many records
// it holds.
type group struct {
	buf      []byte
	entries  []span
	jbuf     []byte // frame header, then uvarint-length-prefixed stored records
	firstSeq uint64
	lastSeq  uint64
	lastHash [32]byte
	done     chan struct{}
	err      error
}

// span locates one entry in group.buf: key buf[k:v], value buf[v:end].
type span struct{ k, v, end int }

func (g *group) add(k, v, end int) { g.entries = append(g.entries, span{k, v, end}) }

// addRecord appends r's badger entries (record, time index, admin index,
// principal index, balance index) and returns where its stored form lies in buf.
// prev and hash are the binary hashes behind r.Prev and r.Hash.
func (g *group) addRecord(r *Record, prev, hash *[32]byte) (rv, rend int) {
	// Record: its stored (binary) form, encoded once.
	k := len(g.buf)
	g.buf = appendSeqKey(g.buf, prefixRecord, r.Seq)
	rv = len(g.buf)
	g.buf = r.appendBinary(g.buf, prev, hash)
	rend = len(g.buf)
	g.add(k, rv, rend)
	// Time index: filters only.
	k = len(g.buf)
	g.buf = appendTimeKey(g.buf, r.At, r.Seq)
	v := len(g.buf)
	g.buf = appendIndexValue(g.buf, r)
	g.add(k, v, len(g.buf))
	if r.Type == TypeAdmin {
		// Admin index: the management history, read whole at start.
		k = len(g.buf)
		g.buf = appendSeqKey(g.buf, prefixAdmin, r.Seq)
		v = len(g.buf)
		g.buf = append(g.buf, g.buf[rv:rend]...)
		g.add(k, v, len(g.buf))
	}
	if r.Principal == "" {
		return rv, rend
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
	return rv, rend
}

// Ticket is the receipt for an Append. The zero Ticket is already done.
type Ticket struct {
	g   *group
	err error
}

// Wait blocks until the records of the Append are in the journal (and
// fdatasynced under SyncAlways); the applier copies them into badger
// afterwards, and reads wait for that (see Query). It returns
// ErrInvalidRecord, ErrClosed, ErrReadOnly or ErrWriteFailed (wrapping
// the cause) when they were not journaled. Wait may be called any number
// of times from any goroutine.
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

// keyApplied holds the seq (u64 BE) of the last record applied from the
// journal, written in the same badger transaction as that record.
var keyApplied = []byte("l/applied")

// Open opens the ledger stored under the l/ prefix of db and its journal
// in dir, and starts the writer and the applier. dir is the data dir
// holding checkpoint.key, created (mode 0600) on first start and reused
// after; a key readable by group or others is refused
// (ErrKeyPermissions). Before it returns, Open applies to badger every
// journaled record that badger does not hold yet (after a crash),
// checking each against the chain: a journal that does not continue the
// stored chain is refused with an error wrapping ErrTampered, a torn last
// frame (an unanswered group) is dropped. On a DB opened with ReadOnly
// (or with Options.ReadOnly) the key must exist, nothing is written, a journal with unapplied
// records is replayed and checked in memory only (Verify counts it,
// Export refuses it with ErrJournalPending) and no goroutine is started. The
// caller keeps ownership of db and closes it after Close.
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
	ro := db.Opts().ReadOnly || opts.ReadOnly
	priv, err := loadOrCreateKey(dir, !ro)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l := &Ledger{
		db: db, opts: opts, priv: priv, pub: priv.Public().(ed25519.PublicKey), readOnly: ro,
		maxBacklog: defaultMaxBacklog,
		wake:       make(chan struct{}, 1), cpReq: make(chan chan error),
		quit: make(chan struct{}), done: make(chan struct{}),
		applyWake: make(chan struct{}, 1), applyQuit: make(chan struct{}), applyDone: make(chan struct{}),
	}
	l.acond = sync.NewCond(&l.amu)
	if err := l.recover(dir, segmentBytes); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if ro {
		close(l.done)
		close(l.applyDone)
		return l, nil
	}
	go l.run()
	go l.applyLoop()
	return l, nil
}

// recover reads badger's head, replays the journal onto it and, when
// writable, applies what badger lacks, syncs badger, and starts an empty
// journal.
func (l *Ledger) recover(dir string, segBytes int64) error {
	seq, h, cpSeq, aSeq, aHash, err := l.storedHead()
	if err != nil {
		return err
	}
	segs, err := listSegments(dir)
	if err != nil {
		return err
	}
	groups, jFirst, jSeq, jHash, err := replayJournal(segs, aSeq, aHash)
	if err != nil {
		return err
	}
	if l.readOnly && len(groups) > 0 {
		// Checked against the chain by replayJournal; kept in memory only.
		l.roJournalFirst, l.roJournalLast = groups[0].firstSeq, jSeq
		groups = nil
	}
	l.journalFrom = jFirst
	if jSeq > seq {
		seq, h = jSeq, jHash
	}
	l.seq, l.hash, l.cSeq, l.cHash, l.cpSeq = seq, h, seq, h, cpSeq
	l.hashHex = hex.EncodeToString(l.hash[:])
	l.aSeq, l.aHash = aSeq, aHash
	l.acked.Store(seq)
	l.applied.Store(aSeq)
	if l.readOnly {
		l.aSeq, l.aHash = seq, h
		l.applied.Store(seq)
		return nil
	}
	l.queue = groups
	if err := l.applyPending(false); err != nil {
		return fmt.Errorf("apply journal: %w", err)
	}
	if l.aSeq < seq { // badger held records beyond the journal
		l.aSeq, l.aHash = seq, h
		l.applied.Store(seq)
	}
	if len(segs) > 0 {
		// Everything journaled is in badger now; make that durable before
		// the journal goes.
		if err := l.db.Sync(); err != nil {
			return err
		}
	}
	l.j = &journal{dir: dir, syncDir: true, segBytes: segBytes, segs: segs}
	if err := l.j.remove(segs); err != nil {
		return err
	}
	return l.j.create(seq + 1)
}

// storedHead reads the seq and hash of the last stored record, the seq
// of the last stored checkpoint, and the seq and hash of the last record
// applied from the journal (l/applied; the last stored record for a
// store written before the journal existed).
func (l *Ledger) storedHead() (seq uint64, h [32]byte, cpSeq, aSeq uint64, aHash [32]byte, err error) {
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
		aSeq, aHash = seq, h
		item, err := txn.Get(keyApplied)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if len(v) != 8 {
			return fmt.Errorf("%w: malformed %s", ErrTampered, keyApplied)
		}
		if s := binary.BigEndian.Uint64(v); s < seq {
			// Records beyond l/applied were stored by a transaction split
			// in parts; the journal holds them. (l/applied beyond the last
			// record means records were deleted: Verify reports that.)
			aSeq = s
		}
		switch {
		case aSeq < seq && aSeq > 0:
			item, err := txn.Get(seqKey(prefixRecord, aSeq))
			if err != nil {
				return fmt.Errorf("read applied record %d: %w", aSeq, err)
			}
			return item.Value(func(v []byte) error {
				var r Record
				var prev [32]byte
				return r.decodeBinaryHashes(v, &prev, &aHash)
			})
		case aSeq == 0:
			aHash = [32]byte{}
		}
		return nil
	})
	return seq, h, cpSeq, aSeq, aHash, err
}

// replayJournal reads the segments in order and checks every frame and
// every record against the chain: seqs consecutive from the segment's
// name, prev links, hashes and the canonical encoding; the first record
// after aSeq must link to aHash. It returns the records after aSeq as
// groups (one per frame) ready to apply, the journal's first seq (0 when
// it is empty), and its last seq and hash (aSeq, aHash when it holds
// nothing newer). A torn last frame of
// the last segment is ignored; any other damage is an error wrapping
// ErrTampered.
func replayJournal(segs []segment, aSeq uint64, aHash [32]byte) (groups []*group, first, seq uint64, h [32]byte, err error) {
	seq, h = aSeq, aHash
	var r Record
	var prev, self [32]byte
	var scratch []byte
	var next uint64 // the next seq the journal must hold; 0 before the first record
	for i, s := range segs {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return nil, 0, 0, h, fmt.Errorf("journal: %w", err)
		}
		bodies, torn, err := parseFrames(b)
		if err == nil && torn && i != len(segs)-1 {
			err = errors.New("torn frame before the last segment")
		}
		if err != nil {
			return nil, 0, 0, h, fmt.Errorf("%w: journal %s: %v", ErrTampered, filepath.Base(s.path), err)
		}
		if len(bodies) > 0 {
			if next != 0 && s.first != next {
				return nil, 0, 0, h, fmt.Errorf("%w: journal %s: expected a segment starting at %d", ErrTampered, filepath.Base(s.path), next)
			}
			next = s.first
			if first == 0 {
				first = s.first
			}
		}
		for _, body := range bodies {
			var g *group
			err := frameRecords(body, func(v []byte) error {
				if err := r.decodeBinaryHashes(v, &prev, &self); err != nil {
					return fmt.Errorf("record after %d undecodable", next-1)
				}
				if r.Seq != next {
					return fmt.Errorf("record %d where %d belongs", r.Seq, next)
				}
				next++
				if r.Seq <= aSeq {
					return nil // in badger already
				}
				if r.Seq != seq+1 {
					return fmt.Errorf("records %d..%d missing (the store ends at %d)", seq+1, r.Seq-1, aSeq)
				}
				if prev != h {
					return fmt.Errorf("record %d: prev does not match the hash of record %d", r.Seq, seq)
				}
				var want [32]byte
				scratch, want = hashRecord(scratch, &prev, &r)
				if want != self {
					return fmt.Errorf("record %d: hash does not match its contents", r.Seq)
				}
				if g == nil {
					g = &group{firstSeq: r.Seq, done: closedChan}
				}
				rv, rend := g.addRecord(&r, &prev, &self)
				if !bytes.Equal(g.buf[rv:rend], v) {
					return fmt.Errorf("record %d: not in canonical form", r.Seq)
				}
				seq, h = r.Seq, self
				g.lastSeq, g.lastHash = seq, h
				return nil
			})
			if err != nil {
				return nil, 0, 0, h, fmt.Errorf("%w: journal %s: %v", ErrTampered, filepath.Base(s.path), err)
			}
			if g != nil {
				groups = append(groups, g)
			}
		}
	}
	return groups, first, seq, h, nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

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

// Head returns the seq and hex hash of the last acknowledged (journaled)
// record; (0, "") for an empty ledger. It does not wait for the applier.
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
// Records appended by one call are journaled in the same frame, so a
// crash keeps all or none of them. If any record is invalid none is
// appended and the Ticket carries ErrInvalidRecord. While the applier
// cannot write to badger and more than 100 000 acknowledged records wait
// for it, Append fails fast with ErrWriteFailed. After Append the records
// belong to the ledger.
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
	if l.applyFailing.Load() {
		if n := l.seq - l.applied.Load(); n >= l.maxBacklog {
			return Ticket{err: fmt.Errorf("%w: %d records wait to be applied to the store, which fails", ErrWriteFailed, n)}
		}
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
		if n := len(l.spares); n > 0 {
			g = l.spares[n-1]
			l.spares[n-1] = nil
			l.spares = l.spares[:n-1]
		} else {
			g = &group{}
		}
		g.done = make(chan struct{})
		g.firstSeq = l.seq + 1
		g.jbuf = append(g.jbuf[:0], make([]byte, frameHeader)...)
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
		rv, rend := g.addRecord(r, &prev, &l.hash)
		g.jbuf = binary.AppendUvarint(g.jbuf, uint64(rend-rv))
		g.jbuf = append(g.jbuf, g.buf[rv:rend]...)
	}
	g.lastSeq, g.lastHash = l.seq, l.hash
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return Ticket{g: g}
}

// run is the writer goroutine: it journals pending groups and answers
// their Tickets.
func (l *Ledger) run() {
	defer close(l.done)
	var syncTick <-chan time.Time
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncEvery)
		defer t.Stop()
		syncTick = t.C
	}
	for {
		select {
		case <-l.wake:
			l.flush()
		case <-syncTick:
			l.syncInBackground()
		case reply := <-l.cpReq:
			if err := l.flush(); err != nil {
				reply <- err
				continue
			}
			l.amu.Lock()
			l.cpWaiters = append(l.cpWaiters, reply)
			l.amu.Unlock()
			l.wakeApplier()
		case <-l.quit:
			err := l.flush()
			l.bgSyncDone.Wait()
			if l.bgSyncFail.Load() {
				l.j.dirty = true
			}
			if serr := l.j.sync(); err == nil {
				err = serr
			}
			l.writerErr = err
			return
		}
	}
}

// flush journals the pending group with one write(2), fdatasyncs it under
// SyncAlways, hands it to the applier and releases its Tickets.
func (l *Ledger) flush() error {
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
	if g == nil {
		return nil
	}
	err := l.waitBacklog(g)
	if err == nil && l.writeFault != nil {
		err = l.writeFault()
	}
	if err == nil {
		body := g.jbuf[frameHeader:]
		binary.LittleEndian.PutUint32(g.jbuf, uint32(len(body)))
		binary.LittleEndian.PutUint32(g.jbuf[4:], crc32Checksum(body))
		err = l.j.append(g.jbuf, g.firstSeq, l.opts.Sync == SyncAlways)
	}
	if err != nil {
		sticky := errors.Is(err, errJournalCut)
		err = fmt.Errorf("%w: %v", ErrWriteFailed, err)
		l.rollback(err, sticky)
		g.err = err
		close(g.done)
		return err
	}
	l.hmu.Lock()
	l.cSeq, l.cHash = g.lastSeq, g.lastHash
	l.hmu.Unlock()
	l.acked.Store(g.lastSeq)
	l.amu.Lock()
	l.queue = append(l.queue, g)
	l.amu.Unlock()
	l.wakeApplier()
	close(g.done)
	return nil
}

func (l *Ledger) wakeApplier() {
	select {
	case l.applyWake <- struct{}{}:
	default:
	}
}

// waitBacklog holds the writer while the applier is more than maxBacklog
// records behind (backpressure: callers wait longer), and fails the group
// instead when the applier is failing.
func (l *Ledger) waitBacklog(g *group) error {
	l.amu.Lock()
	defer l.amu.Unlock()
	for g.firstSeq-1-l.aSeq >= l.maxBacklog {
		if l.applyErr != nil {
			return fmt.Errorf("%d records wait to be applied to the store: %v", g.firstSeq-1-l.aSeq, l.applyErr)
		}
		if l.applyStop {
			return ErrClosed
		}
		l.acond.Wait()
	}
	return nil
}

// rollback follows a failed journal write: every record appended since
// the last good write is failed, and the chain resumes from the journal's
// end, so that the next group links to it and the ledger recovers by
// itself once writes succeed again (a disk with space again). When the
// journal could not even be cut back (sticky), the failure stays until
// Close.
func (l *Ledger) rollback(cause error, sticky bool) {
	l.hmu.Lock()
	seq, h := l.cSeq, l.cHash
	l.hmu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.pending; p != nil {
		l.pending = nil
		p.err = cause
		close(p.done)
	}
	if sticky && l.err == nil {
		l.err = cause
	}
	l.seq, l.hash = seq, h
	l.hashHex = hex.EncodeToString(h[:])
}

// applyLoop is the applier goroutine: it copies journaled groups into
// badger, retrying with backoff while badger fails, and writes the
// checkpoints.
func (l *Ledger) applyLoop() {
	defer func() {
		l.amu.Lock()
		l.applyStop = true
		l.acond.Broadcast()
		l.amu.Unlock()
		close(l.applyDone)
	}()
	var cpTick <-chan time.Time
	if l.opts.CheckpointInterval > 0 {
		t := time.NewTicker(l.opts.CheckpointInterval)
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
			case <-l.applyQuit:
				l.drain()
				return
			}
		} else {
			select {
			case <-l.applyWake:
			case <-cpTick:
				forceCP = true
			case <-l.applyQuit:
				l.drain()
				return
			}
		}
		if l.halted.Load() {
			continue
		}
		if err := l.applyPending(forceCP); err != nil {
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			retry = time.After(backoff)
			continue
		}
		backoff, forceCP = 0, false
	}
}

// drain applies everything journaled, with a final checkpoint, and syncs
// badger (Close).
func (l *Ledger) drain() {
	if l.halted.Load() {
		l.drainErr = errHalted
		return
	}
	err := l.applyPending(true)
	if err == nil {
		err = l.db.Sync()
	}
	l.drainErr = err
}

var errHalted = errors.New("ledger: halted")

// maxApply bounds the records merged into one badger transaction.
const maxApply = 8192

// applyPending applies the queued groups in order, several per badger
// transaction, with a checkpoint in the transaction where one is due (or
// forced, or asked for by checkpointNow, and anything is uncovered). On
// failure the groups stay queued (applying them again is idempotent), the
// waiting checkpointNow calls get the error, and the failure shows in
// Healthy until a later attempt succeeds.
func (l *Ledger) applyPending(forceCP bool) error {
	every := uint64(l.opts.CheckpointEvery)
	for !l.halted.Load() {
		l.amu.Lock()
		groups, waiters := l.queue, l.cpWaiters
		newSeq, newHash := l.aSeq, l.aHash
		l.amu.Unlock()
		n, recs, cpDue := 0, uint64(0), false
		for n < len(groups) && recs < maxApply {
			g := groups[n]
			n++
			recs += g.lastSeq - g.firstSeq + 1
			newSeq, newHash = g.lastSeq, g.lastHash
			if l.opts.CheckpointEvery > 0 && newSeq-l.cpSeq >= every {
				cpDue = true
				break
			}
		}
		all := n == len(groups)
		var cp []byte
		if newSeq > l.cpSeq && (cpDue || all && (forceCP || len(waiters) > 0)) {
			c := signCheckpoint(l.priv, newSeq, newHash, l.opts.Now())
			cp = c.appendJSON(nil)
		}
		var err error
		if n > 0 || cp != nil {
			err = l.write(groups[:n], newSeq, cp)
		}
		if err != nil {
			err = fmt.Errorf("%w: apply: %v", ErrWriteFailed, err)
			l.amu.Lock()
			l.cpWaiters = l.cpWaiters[len(waiters):]
			l.applyErr = err
			l.applyFailing.Store(true)
			l.acond.Broadcast()
			l.amu.Unlock()
			for _, w := range waiters {
				w <- err
			}
			return err
		}
		if cp != nil {
			l.hmu.Lock()
			l.cpSeq = newSeq
			l.hmu.Unlock()
		}
		l.amu.Lock()
		l.queue = l.queue[n:]
		if len(l.queue) == 0 {
			l.queue = nil // let the backing array go
		}
		l.aSeq, l.aHash = newSeq, newHash
		l.applied.Store(newSeq)
		l.applyErr = nil
		l.applyFailing.Store(false)
		if all {
			l.cpWaiters = l.cpWaiters[len(waiters):]
		}
		l.acond.Broadcast()
		l.amu.Unlock()
		l.recycle(groups[:n])
		l.trim(newSeq)
		if all {
			for _, w := range waiters {
				w <- nil
			}
			return nil
		}
	}
	return errHalted
}

// trim deletes the journal segments badger now holds completely, after
// syncing badger so that they are not needed after a machine crash
// either. A failure leaves them for the next try.
func (l *Ledger) trim(applied uint64) {
	if l.j == nil {
		return
	}
	segs := l.j.applied(applied)
	if len(segs) == 0 || l.db.Sync() != nil {
		return
	}
	l.j.remove(segs)
}

// maxSpare bounds the buffer of a group kept for reuse, maxSpares the
// number of groups kept.
const (
	maxSpare  = 1 << 20
	maxSpares = 64
)

// recycle hands the applied groups' buffers to the next groups. Tickets
// keep only a group's done channel and err, which a new group struct
// replaces with its own.
func (l *Ledger) recycle(gs []*group) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range gs {
		if len(l.spares) >= maxSpares {
			return
		}
		if cap(g.buf) > maxSpare || cap(g.jbuf) > maxSpare {
			continue
		}
		l.spares = append(l.spares, &group{buf: g.buf[:0], entries: g.entries[:0], jbuf: g.jbuf[:0]})
	}
}

// write commits the groups' entries, l/applied and the checkpoint in one
// badger transaction; when that is too large it is split into
// consecutive transactions in seq order, l/applied in the last, so a
// crash leaves a prefix and the journal replays the rest (writing the
// same keys again is harmless).
func (l *Ledger) write(gs []*group, seq uint64, cp []byte) error {
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
	n := 1
	for _, g := range gs {
		n += len(g.entries)
	}
	if cp != nil {
		n++
	}
	// badger keeps the pointers until Commit returns; the slice is reused
	// by the next write (this goroutine's only).
	if cap(l.ents) < n {
		l.ents = make([]badger.Entry, n)
	}
	ents := l.ents[:n]
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
	if l.applyFault != nil {
		if err := l.applyFault(); err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	l.commits.Add(1)
	return nil
}

// waitApplied returns once badger holds every record acknowledged when
// it was called (read-your-writes for Query, LatestBalances and the
// like). While the applier fails it returns that failure rather than
// wait for a retry; after Close it returns at once.
func (l *Ledger) waitApplied() error {
	if l.readOnly {
		return nil
	}
	target := l.acked.Load()
	if l.applied.Load() >= target {
		return nil
	}
	l.amu.Lock()
	defer l.amu.Unlock()
	for l.aSeq < target {
		if l.applyErr != nil {
			return fmt.Errorf("read: the store lags the journal: %w", l.applyErr)
		}
		if l.applyStop {
			return nil
		}
		l.acond.Wait()
	}
	return nil
}

// appliedHead returns the last record applied to badger.
func (l *Ledger) appliedHead() (uint64, [32]byte) {
	l.amu.Lock()
	defer l.amu.Unlock()
	return l.aSeq, l.aHash
}

// checkpointNow asks the writer to journal what is pending, then the
// applier to apply everything up to it and sign the head. It is a no-op
// on a read-only ledger.
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

// Close stops accepting records, journals everything pending, lets the
// applier apply it all to badger with a final checkpoint, fsyncs badger
// and deletes the journal. If badger cannot take it, the journal is kept
// (Open applies it) and the error returned. It does not close the badger
// DB. Later calls return the first call's result.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.stop() })
	return l.closeErr
}

func (l *Ledger) stop() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if l.readOnly {
		return nil
	}
	close(l.quit)
	<-l.done
	close(l.applyQuit)
	<-l.applyDone
	err := l.writerErr
	if err == nil {
		err = l.drainErr
	}
	if errors.Is(err, errHalted) {
		l.j.close(false)
		return nil
	}
	if cerr := l.j.close(err == nil && !l.opts.KeepJournal); err == nil {
		err = cerr
	}
	return err
}

// RemoveJournal deletes the journal files in dir. Call it only after a
// Close with Options.KeepJournal returned nil and the store it applied to
// was closed (and so flushed) without error; otherwise leave the journal
// for the next Open, which applies whatever the store lacks.
func RemoveJournal(dir string) error {
	segs, err := listSegments(dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	j := &journal{dir: dir, syncDir: true, segs: segs}
	return j.remove(segs)
}

// syncInBackground fsyncs the journal segment being written without
// blocking the writer: pwrite and fsync on one file may run concurrently,
// and what a later group writes is covered by the next tick. It runs on
// the writer goroutine, which owns j.f and j.dirty.
func (l *Ledger) syncInBackground() {
	if l.j.f == nil || !l.j.dirty || !l.bgSyncing.CompareAndSwap(false, true) {
		return
	}
	f := l.j.f
	l.j.dirty = false
	l.bgSyncDone.Add(1)
	go func() {
		defer l.bgSyncDone.Done()
		defer l.bgSyncing.Store(false)
		// os.File.Sync holds a reference on the descriptor, so a
		// concurrent rotation's Close cannot make it sync another file;
		// the rotation syncs the finished segment itself.
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			l.bgSyncFail.Store(true)
		}
	}()
}
