package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
)

// The state mark.
//
// The seal (stateseal.go) spares a clean restart the read of the
// ledger's whole management history; a crash leaves no seal, and the full
// check (CheckState) reads and compares one admin record per key: most
// of a minute with a million keys. The mark carries the same facts as a
// seal - a ledger seq S with its hash, the digest of every key and of
// every override, the time of the start check - but is written while the
// gateway runs, each time its management state settles: right after the
// start check, and after every management change (coalesced: one write
// covers every change before it). A mark is taken only while no change
// is in progress (StateMarker.mu) and only while every change of this
// run was recorded in the ledger, so it states a fact the running
// gateway knows: the store's keys and overrides, exactly as digested,
// are what the ledger's management records up to S say.
//
// A start without a usable seal checks the mark instead of the whole
// history (matchMark): it trusts the mark only if
//
//   - the ledger still holds record S with the marked hash (the same
//     chain, not truncated or replaced: the hash of S commits to every
//     record before it, admin records included);
//   - the ledger holds no admin record after S (nothing changed the
//     management state since the mark: `keys --offline`, rebuild-state,
//     a change of the last run that the mark did not cover yet);
//   - the store's keys and overrides digest exactly as marked (no row
//     edited, lost, damaged, restored or changed since, by the gateway
//     or anyone else).
//
// Then the store is what the ledger says, as the full check would find:
// the state marked was the ledger's state at S, the ledger's management
// state has not changed after S, and the store has not changed since the
// mark. Keys that expired since the marked check are recorded as the
// full check records them. Anything else runs the full check; in
// particular a crash within moments of a management change (before its
// mark was written) does, and so does any store edit: a revoked key's row
// edited back to active changes the keys' digest.
//
// Like the seal, the mark is not a secret and proves nothing to anyone
// who can write the data dir (they could rewrite the mark with the
// store); it detects damage and edits of the store, not a forger of the
// whole data dir, which `toolgate audit verify` against the published
// checkpoint key is for. It also does not re-check the ledger's own
// admin index up to S (AdminRecords compares each entry with its record),
// as the sealed start does not either: `audit verify` checks every index.
// Like the full check, it finds admin records through that index, so an
// admin record whose index entry was deleted is found by `audit verify`,
// not by a start.
// Cluster mode has no mark (its keys and overrides are the cluster's).

// MarkFile is the state mark's name in the data dir.
const MarkFile = "state-mark"

// matchMark reads the mark at path and returns "" when it describes the
// store as it is and the ledger has no management record after it, else
// why not.
func matchMark(path string, led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, now time.Time) (stateSeal, string) {
	m, err := readSeal(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return m, "none"
	case err != nil:
		return m, "unreadable: " + err.Error()
	case m.Version != sealVersion:
		return m, fmt.Sprintf("version %d", m.Version)
	case now.Before(m.CheckedAt):
		return m, "the clock is behind the marked check"
	}
	hash, ok, err := led.RecordHash(m.LedgerSeq)
	switch {
	case err != nil:
		return m, err.Error()
	case !ok && m.LedgerSeq != 0:
		return m, fmt.Sprintf("the ledger holds no record %d", m.LedgerSeq)
	case hash != m.LedgerHash:
		return m, fmt.Sprintf("record %d's hash differs from the marked one", m.LedgerSeq)
	}
	var after uint64
	errAfter := errors.New("admin record after the mark")
	err = led.AdminRecordsAfter(m.LedgerSeq, func(r *ledger.Record) error {
		after = r.Seq
		return errAfter
	})
	switch {
	case errors.Is(err, errAfter):
		return m, fmt.Sprintf("management record %d is newer than the mark (seq %d)", after, m.LedgerSeq)
	case err != nil:
		return m, err.Error()
	}
	kd, nk := keys.Digest()
	if nk != m.Keys || fmt.Sprintf("%x", kd[:]) != m.KeysDigest {
		return m, "the keys differ from the marked ones"
	}
	od, no, err := overridesDigest(overrides)
	switch {
	case err != nil:
		return m, err.Error()
	case no != m.Overrides || od != m.OverridesDigest:
		return m, "the overrides differ from the marked ones"
	}
	return m, ""
}

// StateMarker writes the state mark while the gateway runs (see the top
// of this file). Management changes run inside Change; Changed asks for
// a new mark after one was recorded, Broken stops marking for good after
// one could not be (the store and the ledger may then differ until the
// next start's full check settles it). Its methods are safe for
// concurrent use; a nil *StateMarker does nothing.
type StateMarker struct {
	path      string
	led       *ledger.Ledger
	keys      *identity.Store
	overrides OverrideStore
	checkedAt time.Time
	log       *slog.Logger

	// mu is held shared by every management change, from its store write
	// to its acknowledged ledger record, and exclusively while a mark
	// reads the state.
	mu     sync.RWMutex
	kick   chan struct{}
	broken atomic.Bool

	snapDir              string // KeepKeysSnapshot
	meters               atomic.Pointer[string]
	snapFirst, snapEvery time.Duration

	ovMu      sync.Mutex
	ovDirty   bool // an override changed since ovDigest was taken
	ovDigest  string
	ovEntries int
}

// NewStateMarker returns a marker writing to path; checkedAt is the time
// of this process's start check.
func NewStateMarker(path string, led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, checkedAt time.Time, log *slog.Logger) *StateMarker {
	return &StateMarker{path: path, led: led, keys: keys, overrides: overrides, checkedAt: checkedAt, log: log,
		kick: make(chan struct{}, 1), ovDirty: true}
}

// Change runs fn, a management change, so that no mark is taken while
// it is under way.
func (m *StateMarker) Change(fn func()) {
	if m == nil {
		fn()
		return
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	fn()
}

// Changed asks for a new mark after a recorded change; overrides says
// whether an override changed (their digest is recomputed only then).
func (m *StateMarker) Changed(overrides bool) {
	if m == nil {
		return
	}
	if overrides {
		m.ovMu.Lock()
		m.ovDirty = true
		m.ovMu.Unlock()
	}
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Broken stops marking: a change was made in the store that the ledger
// could not record.
func (m *StateMarker) Broken() {
	if m == nil || m.broken.Swap(true) {
		return
	}
	m.log.Warn("state mark: a management change could not be recorded; no more marks this run (the next start after a crash checks the ledger's history in full)")
	if err := os.Remove(m.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("state mark: remove", "err", err)
	}
}

// Mark writes the mark now, for the state as it is once the changes in
// progress are done. It writes nothing once Broken.
func (m *StateMarker) Mark() error {
	if m.broken.Load() {
		return nil
	}
	m.mu.Lock()
	s, err := m.current()
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("state mark: %w", err)
	}
	if m.broken.Load() { // a change failed while the state was read
		return nil
	}
	if err := writeSeal(m.path, s); err != nil {
		return fmt.Errorf("state mark: %w", err)
	}
	return nil
}

// current reads the state to mark; callers hold mu.
func (m *StateMarker) current() (stateSeal, error) {
	m.ovMu.Lock()
	defer m.ovMu.Unlock()
	if m.ovDirty {
		d, n, err := overridesDigest(m.overrides)
		if err != nil {
			return stateSeal{}, err
		}
		m.ovDigest, m.ovEntries, m.ovDirty = d, n, false
	}
	seq, hash := m.led.Head()
	kd, nk := m.keys.Digest()
	snap, _ := m.keys.SnapshotState()
	var meters string
	if h := m.meters.Load(); h != nil {
		meters = *h
	}
	return stateSeal{Version: sealVersion, LedgerSeq: seq, LedgerHash: hash, CheckedAt: m.checkedAt.UTC(),
		Keys: nk, KeysDigest: fmt.Sprintf("%x", kd[:]), Overrides: m.ovEntries, OverridesDigest: m.ovDigest, KeysSnapshot: snap,
		MetersSnapshot: meters}, nil
}

// MetersSnapshot has the marks name the meters snapshot with SHA-256
// hash (the one the gateway restored from or last wrote) and asks for a
// mark.
func (m *StateMarker) MetersSnapshot(hash string) {
	if m == nil {
		return
	}
	m.meters.Store(&hash)
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// KeepKeysSnapshot makes the marker also keep the keys snapshot in dir
// current enough (identity.Store.WriteSnapshot): when it is not current,
// it writes one first after `first` from now and then at most once per
// every, and marks again to name it. A snapshot only saves a later
// start the decoding of the key rows it still matches, so a stale one
// costs time, never correctness. Call it before the gateway runs.
func (m *StateMarker) KeepKeysSnapshot(dir string, first, every time.Duration) {
	if m != nil {
		m.snapDir, m.snapFirst, m.snapEvery = dir, first, every
	}
}

// run writes a mark after each Changed until stop closes, and the keys
// snapshot when due (KeepKeysSnapshot).
func (m *StateMarker) run(stop <-chan struct{}) {
	var due <-chan time.Time
	next := time.Now().Add(m.snapFirst)
	arm := func() {
		if m.snapDir == "" || due != nil {
			return
		}
		if _, current := m.keys.SnapshotState(); !current {
			due = time.After(max(time.Until(next), 0))
		}
	}
	arm()
	for {
		select {
		case <-stop:
			return
		case <-m.kick:
			if err := m.Mark(); err != nil {
				m.log.Warn("state mark not written; a start after a crash checks the ledger's history in full", "err", err)
			}
			arm()
		case <-due:
			due, next = nil, time.Now().Add(m.snapEvery)
			if _, current := m.keys.SnapshotState(); current {
				continue
			}
			t0 := time.Now()
			hash, err := m.keys.WriteSnapshot(m.snapDir)
			if err != nil {
				m.log.Warn("keys snapshot not written; the next start decodes every key row", "err", err)
				continue
			}
			m.log.Info("keys snapshot written", "sha256", hash[:16], "ms", time.Since(t0).Milliseconds())
			if err := m.Mark(); err != nil { // the mark names the new snapshot
				m.log.Warn("state mark not written; a start after a crash checks the ledger's history in full", "err", err)
			}
			arm() // keys changed while it was written
		}
	}
}
