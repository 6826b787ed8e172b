package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
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
	DefaultSegmentBytes       = 64 << 20
	maxSegmentBytes           = 1 << 30 // record offsets in an index are u32
)

// Options configure a Ledger. The zero value is SyncAlways, a checkpoint
// every 1000 records, no time-based checkpoints, 64 MiB journal segments
// and time.Now.
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
	// KeepJournal has no effect since the journal's segments are the
	// record store (they are never deleted); it stays for callers that
	// set it with RemoveJournal.
	KeepJournal bool
	// ReadOnly opens the ledger as on a read-only DB even when db is
	// writable (a temporary copy of a store): nothing is written to db
	// or to dir.
	ReadOnly bool
	// Node, in cluster mode, names this node in every record appended
	// without one (Record.Node, hashed): each record says which node's
	// chain it belongs to.
	Node string
	// SegmentBytes is the segment size past which the writer seals the
	// segment and starts a new one; 0 (or less) means
	// DefaultSegmentBytes, and more than 1 GiB is cut to 1 GiB.
	SegmentBytes int64

	// hooks inject faults and count internals in this package's tests;
	// nil (always, outside them) injects and counts nothing.
	hooks *hooks
}

// Ledger is the append-only, hash-chained log. All methods are safe for
// concurrent use. It composes the roles of its files: Open runs the
// recovery (recovery.go), then two goroutines run behind it: the writer
// (writer.go) appends groups of records to the journal and answers their
// Tickets, the applier (applier.go) indexes journaled groups, writes their
// badger entries
// in order and writes the checkpoints the checkpointer (checkpoint.go)
// signs. Close stops both. A Ledger opened on a read-only badger DB
// verifies, queries and exports but refuses Append. The zero value is
// not usable; call Open.
type Ledger struct {
	db       *badger.DB
	opts     Options
	pub      ed25519.PublicKey
	readOnly bool
	w        *writer
	a        *applier
	cp       *checkpointer
	st       *recordStore
	// roJournal is, on a read-only ledger, the seq range of records after
	// l/applied (after a crash): checked at Open, their badger entries
	// and checkpoint not written. Zero when there is none.
	roJournalFirst, roJournalLast uint64
	// crashed says, on a read-only ledger, that Open found the marks of a
	// crash (records after l/applied, or a segment never sealed).
	crashed bool

	closeOnce sync.Once
	closeErr  error
}

// Ticket is the receipt for an Append. The zero Ticket is already done.
type Ticket struct {
	g   *group
	w   *writer
	err error
}

// Wait blocks until the records of the Append are in the journal (and
// fdatasynced under SyncAlways); the applier indexes them afterwards,
// and reads wait for that (see Query). It returns
// ErrInvalidRecord, ErrClosed, ErrReadOnly or ErrWriteFailed (wrapping
// the cause) when they were not journaled. Wait may be called any number
// of times from any goroutine.
func (t Ticket) Wait() error { return t.wait(false) }

// WaitYielding is Wait for a caller that knows other appenders are at
// work (the gateway with other calls in flight): before journaling, it
// lets the goroutines ready to run go first, so that those about to
// append join the same group and one write(2) journals them all. Its
// records are journaled before it returns, as with Wait. With nobody
// else ready it costs a pass through the scheduler; with an idle CPU it
// can cost a thread wake-up, which is why Wait does not yield.
func (t Ticket) WaitYielding() error { return t.wait(true) }

func (t Ticket) wait(yield bool) error {
	if t.err != nil {
		return t.err
	}
	if t.g == nil {
		return nil
	}
	return t.w.wait(t.g, yield)
}

// Open opens the ledger stored in dir/ledger (its segments) and under the
// l/ prefix of db, and starts the writer and the applier. A store of the
// earlier layout (records in badger) is migrated first (legacy.go; on a
// read-only Open into a temporary directory that Close removes). dir is the data dir
// holding checkpoint.key, created (mode 0600) on first start and reused
// after; a key readable by group or others is refused
// (ErrKeyPermissions). Before it returns, Open seals segments a crash
// left unsealed and writes the badger entries of every record after
// l/applied, checking each against the chain: a journal that does not continue the
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
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.SegmentBytes > maxSegmentBytes {
		opts.SegmentBytes = maxSegmentBytes
	}
	ro := db.Opts().ReadOnly || opts.ReadOnly
	priv, err := loadOrCreateKey(dir, !ro)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	rec, err := recoverState(db, dir, ro, opts.SegmentBytes)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l := &Ledger{
		db: db, opts: opts, pub: priv.Public().(ed25519.PublicKey), readOnly: ro,
		cp: newCheckpointer(priv, &opts, rec.cpSeq), st: rec.st,
	}
	// The segments stay mapped after Close, for reads, until the Ledger
	// is unreachable.
	runtime.AddCleanup(l, func(st *recordStore) { st.close() }, rec.st)
	pool := &groupPool{}
	if ro {
		if rec.seq > rec.aSeq {
			l.roJournalFirst, l.roJournalLast = rec.aSeq+1, rec.seq
		}
		l.crashed = rec.seq > rec.aSeq || rec.unsealed
		l.a = newApplier(db, rec.st, l.cp, pool, opts.hooks, rec.seq, rec.hash)
		l.w = newWriter(nil, l.a, pool, &opts, opts.hooks, rec.seq, rec.hash)
		close(l.w.done)
		close(l.a.done)
		return l, nil
	}
	l.a = newApplier(db, rec.st, l.cp, pool, opts.hooks, rec.aSeq, rec.aHash)
	l.a.indexed = rec.seq
	j, err := rec.repair(l.a, opts.SegmentBytes)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l.w = newWriter(j, l.a, pool, &opts, opts.hooks, rec.seq, rec.hash)
	l.w.start()
	l.a.start()
	return l, nil
}

// PublicKey returns the Ed25519 key that verifies this ledger's
// checkpoints; publish it (GET /audit/pubkey) so verification does not
// trust the data dir.
func (l *Ledger) PublicKey() ed25519.PublicKey { return l.pub }

// Head returns the seq and hex hash of the last acknowledged (journaled)
// record; (0, "") for an empty ledger. It does not wait for the applier.
func (l *Ledger) Head() (seq uint64, hash string) {
	seq, h := l.w.head()
	if seq == 0 {
		return 0, ""
	}
	return seq, hex.EncodeToString(h[:])
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
	if l.opts.Node != "" {
		for _, r := range recs {
			if r.Node == "" {
				r.Node = l.opts.Node
			}
		}
	}
	return l.w.append(recs)
}

// waitApplied returns once the applier has applied every record acknowledged when
// it was called (read-your-writes for Query, LatestBalances and the
// like). While the applier fails it returns that failure rather than
// wait for a retry; after Close it returns at once.
func (l *Ledger) waitApplied() error {
	if l.readOnly {
		return nil
	}
	return l.a.waitFor(l.w.journaled())
}

// appliedHead returns the last record applied (indexed).
func (l *Ledger) appliedHead() (uint64, [32]byte) { return l.a.head() }

// Close stops accepting records, journals everything pending, lets the
// applier apply it all with a final checkpoint, fsyncs badger and seals
// the segment being written. If badger cannot take it, the error is
// returned and the next Open applies what it lacks. It does not close the badger
// DB. Later calls return the first call's result.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.stop() })
	return l.closeErr
}

func (l *Ledger) stop() error {
	l.w.markClosed()
	if l.st.tmp != "" {
		defer os.RemoveAll(l.st.tmp)
	}
	if l.readOnly {
		return nil
	}
	err := l.w.stop()
	if aerr := l.a.stop(); err == nil {
		err = aerr
	}
	if errors.Is(err, errHalted) {
		// A simulated crash: the active segment stays unsealed.
		l.w.j.close()
		return nil
	}
	if serr := l.st.sealActive(); err == nil {
		err = serr
	}
	if cerr := l.w.j.close(); err == nil {
		err = cerr
	}
	return err
}

// RemoveJournal is what a caller of Close with Options.KeepJournal did
// once the store closed cleanly. The journal's segments are the record
// store now and are never removed, so it removes only journal files of
// the legacy layout (DATA/ledger-*.wal) that a migration has copied
// (Open removes them too). Call it only after that Close returned nil.
func RemoveJournal(dir string) error {
	if fi, err := os.Stat(filepath.Join(dir, segDir)); err != nil || !fi.IsDir() {
		return nil // not migrated: the legacy journal is still needed
	}
	segs, err := listSegments(dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	for _, s := range segs {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("journal: %w", err)
		}
	}
	return nil
}
