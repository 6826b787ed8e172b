package policy

import (
	"errors"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// OverrideChange is one write to an override store: the override of
// Principal put (Policy set) or deleted (Policy nil), as the store's
// version Version.
type OverrideChange struct {
	Version   uint64
	Principal string
	Policy    *Policy
}

// ErrChangesCompacted: the changes asked for are no longer kept; load the
// overrides again (Overrides.Load) instead.
var ErrChangesCompacted = errors.New("policy: override changes compacted")

// maxChanges is how many recent changes an Overrides keeps for Changes.
const maxChanges = 1024

// Overrides is the badger store of per-principal overrides (under the
// prefix "p/", as LoadOverrides, SaveOverride and DeleteOverride) with a
// change feed: every Put and Delete through it gets the next version, and
// Changes returns the writes after a version, so a reader holding a
// compiled copy can follow them. The feed is fed synchronously by this
// value's own writes and starts at version 0 when it is created; it does
// not see writes to the database made around it. It keeps the last 1024
// changes. Safe for concurrent use; it does not own the DB.
type Overrides struct {
	db *badger.DB

	mu      sync.Mutex // serializes writes with the feed
	version uint64
	log     []OverrideChange // the last maxChanges changes, oldest first
}

// NewOverrides returns the override store in db.
func NewOverrides(db *badger.DB) *Overrides { return &Overrides{db: db} }

// Load reads every stored override, by principal, and the version they
// are current as of: Changes(version) returns what was written after.
func (o *Overrides) Load() (map[string]*Policy, uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m, err := LoadOverrides(o.db)
	return m, o.version, err
}

// Put stores p as principal's override, replacing any other. The change
// is in the feed once Put returns nil.
func (o *Overrides) Put(principal string, p *Policy) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := SaveOverride(o.db, principal, p); err != nil {
		return err
	}
	o.record(principal, p)
	return nil
}

// Delete removes principal's override; absent is not an error (and is
// still a change in the feed).
func (o *Overrides) Delete(principal string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := DeleteOverride(o.db, principal); err != nil {
		return err
	}
	o.record(principal, nil)
	return nil
}

// record appends a change; o.mu is held.
func (o *Overrides) record(principal string, p *Policy) {
	o.version++
	if len(o.log) == maxChanges {
		n := copy(o.log, o.log[1:])
		o.log = o.log[:n]
	}
	o.log = append(o.log, OverrideChange{Version: o.version, Principal: principal, Policy: p})
}

// Changes returns the changes after version since, oldest first, and the
// version they bring the reader to. Nothing new returns no changes and
// since's version (or the store's, when since is ahead of it). When the
// changes after since are no longer kept it returns ErrChangesCompacted.
func (o *Overrides) Changes(since uint64) ([]OverrideChange, uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if since >= o.version {
		return nil, o.version, nil
	}
	oldest := o.version - uint64(len(o.log)) // the log holds oldest+1 … version
	if since < oldest {
		return nil, o.version, ErrChangesCompacted
	}
	out := make([]OverrideChange, o.version-since)
	copy(out, o.log[since-oldest:])
	return out, o.version, nil
}
