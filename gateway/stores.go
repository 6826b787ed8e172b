package gateway

import (
	"time"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// The shared state the gateway reads and writes sits behind the small
// interfaces below (DESIGN.md section 10). The local implementations are
// wired by default in New (meter.Quotas, meter.Spend, x402.NonceLock,
// identity.Store, policy.Overrides); a cluster plugs in others through
// Options and X402Options. Every implementation must pass the contract
// suites in gateway/storetest.
//
// The hot-path methods (QuotaStore.Admit and Undo, SpendStore.Reserve,
// Commit and Release, KeyStore.Authenticate) return decisions, not
// errors, as the local in-memory implementations do.

// QuotaStore counts calls per (principal, rate class) in an exact sliding
// window (meter.Quotas documents the semantics every implementation
// keeps). Safe for concurrent use.
type QuotaStore interface {
	// Admit decides one call at now against limit (< 0 unlimited, 0
	// blocked) and, when allowed, counts it under callID, unique among
	// the principal's calls in the window.
	Admit(principal string, class, limit int, now time.Time, callID uint64) meter.QuotaResult
	// Undo gives back the slot of the call counted under callID;
	// idempotent, and a no-op for unknown calls.
	Undo(principal string, class int, callID uint64)
	// Peek reports the calls in the window ending at now without counting
	// one, and the time until the next could pass.
	Peek(principal string, class, limit int, now time.Time) (used int, resetIn time.Duration)
	// Sweep forgets calls out of the window and evicts idle principals.
	Sweep(now time.Time) (evicted int)
}

// SpendStore holds per-day spend under a cap and prepaid credits, with
// reservations for calls in flight (meter.Spend documents the semantics).
// Reserve never lets concurrent calls exceed a cap or hold more credits
// than the balance; Commit and Release are idempotent by reservation ID.
// Safe for concurrent use.
type SpendStore interface {
	Reserve(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) (meter.Reservation, meter.SpendResult)
	// Commit bills r once, calling fn (if not nil) with the figures after
	// the commit while they cannot change; false when r is not open.
	Commit(r meter.Reservation, fn func(meter.Committed)) bool
	// Release returns r's cost unused; false when r is not open.
	Release(r meter.Reservation) bool
	// Status reads a principal's committed and reserved spend on day and
	// its credits at one instant.
	Status(principal string, day meter.Day) meter.SpendStatus
	// Balance returns the credits balance and whether there is one.
	Balance(principal string) (money.Micros, bool)
	// TopUp adds amount to the balance (creating it), calling fn with the
	// new balance while it cannot change; false, changing nothing, when it
	// would overflow.
	TopUp(principal string, amount money.Micros, fn func(balanceAfter money.Micros)) (money.Micros, bool)
	// Restore and RestoreBalance put back the ledger's figures at start.
	Restore(principal string, day meter.Day, spent money.Micros)
	RestoreBalance(principal string, balance money.Micros)
	// Sweep drops old days and evicts idle principals.
	Sweep(now time.Time) (evicted int)
}

// NonceStore locks x402 authorizations so that each is used by at most
// one call, and remembers the settled ones until they expire
// (validBefore + x402.NonceGrace, on the store's clock). Safe for
// concurrent use; an error means the store could not answer.
type NonceStore interface {
	// Lock marks k in flight if it is free; of concurrent calls for one
	// key exactly one returns true.
	Lock(k x402.NonceKey, expires time.Time) (bool, error)
	// Release frees a locked, unspent k; a no-op for a settled one.
	Release(k x402.NonceKey) error
	// MarkSettled records that k was used on chain (txHex may be empty).
	MarkSettled(k x402.NonceKey, txHex string) error
}

// AnswerStore keeps the recorded answers of idempotent calls
// (idempotency.go) for their retries: opaque values under keys, each
// until its TTL passes. Put replaces a value. Safe for concurrent use; an
// error means the store could not answer (a retry is then refused with
// 503, nothing charged). The local one is badger on the data dir
// (prefix "i/"); a cluster shares one so that a retry sent to another
// node gets the same answer.
type AnswerStore interface {
	GetAnswer(key string) (value []byte, ok bool, err error)
	PutAnswer(key string, value []byte, ttl time.Duration) error
}

// AnswerClaimer is implemented by answer stores shared between nodes: the
// first attempt of an idempotent call claims its key, so that a duplicate
// arriving at another node while it runs waits for its answer instead of
// running too. A claim lapses after its TTL (a node that died mid-call).
type AnswerClaimer interface {
	// ClaimAnswer takes key's claim for the request fingerprinted fp; when
	// another attempt holds it, ok is false and holder is that attempt's
	// fingerprint.
	ClaimAnswer(key string, fp []byte, ttl time.Duration) (ok bool, holder []byte, err error)
	// ReleaseAnswer gives up this node's claim of key for fp (after the
	// answer was put, or when there is none to put).
	ReleaseAnswer(key string, fp []byte) error
}

// FailureCounter counts failures under keys shared by every node, each
// count until its TTL (from its first failure) passes: what lets a
// cluster refuse a source's sign-ins once it sent too many wrong tokens
// to any of its nodes. Optional: implemented by a cluster's Sessions
// store; without it each node counts on its own.
type FailureCounter interface {
	// CountFailure adds one to key's count (starting it, with ttl, when
	// there is none) and returns the count after it.
	CountFailure(key string, ttl time.Duration) (int64, error)
	// Failures reports key's count (0 when there is none).
	Failures(key string) (int64, error)
}

// AdmitReserver decides a priced call's quota and spend reservation in
// one step (for a cluster: one round trip). It behaves as QuotaStore.Admit
// followed, when admitted, by SpendStore.Reserve, except that a call the
// spend refuses takes no quota slot. When the quota refuses, the
// reservation is the zero one and the SpendResult is not OK. On a
// failure both results carry Err and nothing is held. Its slots and
// reservations belong to the gateway's QuotaStore and SpendStore (Undo,
// Commit and Release apply). Optional (Options.AdmitReserve).
type AdmitReserver interface {
	AdmitReserve(principal string, class, limit int, now time.Time, callID uint64,
		day meter.Day, cost, spendLimit money.Micros, hasLimit bool) (meter.QuotaResult, meter.Reservation, meter.SpendResult)
}

// KeyStore holds API keys. Authenticate is on the hot path: it must
// answer from memory without allocating. Safe for concurrent use.
type KeyStore interface {
	// Authenticate returns the active key whose secret is presented.
	Authenticate(secret []byte, now time.Time) (*identity.Key, bool)
	// Lookup finds a key by key_id or secret, whatever its state.
	Lookup(ref string) (*identity.Key, bool)
	// List returns every key, oldest first.
	List() []*identity.Key
	// Create makes a key and returns its secret, shown once.
	Create(name string, expiresAt, now time.Time) (secret string, k *identity.Key, err error)
	// Revoke marks a key revoked (identity.ErrRevoked if it was already).
	Revoke(id string, now time.Time) (*identity.Key, error)
}

// OverrideStore holds per-principal policy overrides with a change feed:
// every Put and Delete gets the next version, and Changes returns the
// writes after a version (policy.ErrChangesCompacted when they are no
// longer kept: Load again), so the compiled state can follow writes made
// by other gateways. Safe for concurrent use.
type OverrideStore interface {
	// Load returns every override and the version it is current as of.
	Load() (overrides map[string]*policy.Policy, version uint64, err error)
	Put(principal string, p *policy.Policy) error
	Delete(principal string) error
	// Changes returns the writes after version since, oldest first, and
	// the version they bring the reader to.
	Changes(since uint64) (changes []policy.OverrideChange, version uint64, err error)
}

// ApprovalStore holds the calls held for a human decision (approval.go).
// An approval moves pending → approved → done (or failed), or pending →
// denied or expired, and each move out of pending happens once: of
// concurrent Decides of one approval, on one node or on several sharing
// the store, exactly one wins, so an approved call is run once. Each
// store acts for one node (NodeID; "" for a store of one gateway's own):
// the approvals it approves are run by that node, and Recover fails only
// those. Safe for concurrent use; an error means the store could not
// answer.
type ApprovalStore interface {
	// Create stores a new approval (pending); an existing id is an error.
	Create(a *Approval) error
	// Get returns the approval id, nil when there is none.
	Get(id string) (*Approval, error)
	// List returns the approvals in status ("": every one), oldest first.
	List(status string) ([]*Approval, error)
	// Decide moves the pending approval id to d.Status (approved, denied
	// or expired), recording d's who, when and why, and returns it with
	// ok true; an approval no longer pending is returned as it is, ok
	// false; an unknown id is nil, false. An approved approval is marked
	// as run by this store's node.
	Decide(id string, d ApprovalDecision) (a *Approval, ok bool, err error)
	// Finish records the answer of an approved call (approved → done);
	// false when the approval is not approved (already finished, or
	// failed by Recover).
	Finish(id string, res *ApprovalResult) (bool, error)
	// Recover marks failed, with reason, the approvals this node
	// approved and did not finish (it stopped while they ran: they are
	// not run again), and returns how many.
	Recover(reason string) (int, error)
	// Sweep deletes the approvals that reached an end (done, denied,
	// expired, failed) decided before cutoff, and returns how many.
	// Pending and approved (running) approvals are never swept.
	Sweep(cutoff time.Time) (int, error)
}

var (
	_ ApprovalStore = (*localApprovals)(nil)
	_ QuotaStore    = (*meter.Quotas)(nil)
	_ SpendStore    = (*meter.Spend)(nil)
	_ NonceStore    = (*x402.NonceLock)(nil)
	_ KeyStore      = (*identity.Store)(nil)
	_ OverrideStore = (*policy.Overrides)(nil)
)
