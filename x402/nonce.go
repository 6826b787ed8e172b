package x402

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ethereum/go-ethereum/common"
)

// NonceKey identifies one EIP-3009 authorization: the token contract
// (chain and asset), the payer and the payer-chosen nonce. The token's
// authorizationState is keyed the same way.
type NonceKey struct {
	ChainID uint64
	Asset   common.Address
	From    common.Address
	Nonce   [32]byte
}

// String returns "chainID/asset/from/nonce" in hex, for logs.
func (k NonceKey) String() string {
	return fmt.Sprintf("%d/%s/%s/%x", k.ChainID, k.Asset.Hex(), k.From.Hex(), k.Nonce)
}

// noncePrefix is the badger key prefix of the nonce lock. A key is
// "x/n/" ‖ chainID (8 bytes big-endian) ‖ asset (20) ‖ from (20) ‖ nonce
// (32), 84 bytes. The value is state (1 byte: 1 locked, 2 settled) ‖
// tx hash (32 bytes, zero until settled) ‖ expiry (8 bytes big-endian Unix
// seconds, 0 = none). Entries carry a badger expiry of validBefore +
// NonceGrace (at least one second after the write), on the NonceLock's
// clock: once an authorization's validBefore has passed the token refuses
// it, so its entry is no longer needed. The lock itself treats an entry
// past its expiry as free by its own clock, so a test clock decides
// expiry; badger drops the entry by the wall clock.
const noncePrefix = "x/n/"

// NonceGrace is how long a nonce entry outlives its authorization's
// validBefore (clock skew between the gateway and the chain).
const NonceGrace = time.Hour

// NonceState is the stored state of an authorization.
type NonceState uint8

const (
	// NonceFree: never locked, released, or expired.
	NonceFree NonceState = iota
	// NonceLocked: in flight (verified, settlement not known to be done).
	NonceLocked
	// NonceSettled: used on chain.
	NonceSettled
)

// ErrNonceStore wraps badger failures of the NonceLock.
var ErrNonceStore = errors.New("x402: nonce store")

// NonceLock guarantees that one authorization is used by at most one
// request at a time, across restarts. It is safe for concurrent use; it
// does not own the badger DB (the caller opens and closes it).
type NonceLock struct {
	// Now is the clock every expiry is measured on; nil means time.Now.
	// Set it before the first call, not while the lock is in use.
	Now func() time.Time

	db   *badger.DB
	mu   sync.Mutex
	held map[NonceKey]time.Time // locked by this process → expiry
}

// NewNonceLock returns a lock stored in db under the prefix "x/n/".
func NewNonceLock(db *badger.DB) *NonceLock {
	return &NonceLock{db: db, held: make(map[NonceKey]time.Time)}
}

func (k NonceKey) dbKey() []byte {
	b := make([]byte, 0, len(noncePrefix)+8+20+20+32)
	b = append(b, noncePrefix...)
	b = binary.BigEndian.AppendUint64(b, k.ChainID)
	b = append(b, k.Asset[:]...)
	b = append(b, k.From[:]...)
	return append(b, k.Nonce[:]...)
}

func keyFromDB(b []byte) (k NonceKey, ok bool) {
	if len(b) != len(noncePrefix)+80 {
		return k, false
	}
	b = b[len(noncePrefix):]
	k.ChainID = binary.BigEndian.Uint64(b)
	copy(k.Asset[:], b[8:28])
	copy(k.From[:], b[28:48])
	copy(k.Nonce[:], b[48:80])
	return k, true
}

func nonceValue(s NonceState, tx common.Hash, expires time.Time) []byte {
	v := make([]byte, 41)
	v[0] = byte(s)
	copy(v[1:33], tx[:])
	if !expires.IsZero() {
		binary.BigEndian.PutUint64(v[33:], uint64(expires.Unix()))
	}
	return v
}

func parseNonceValue(v []byte) (s NonceState, tx common.Hash, expires time.Time) {
	if len(v) != 41 {
		return NonceSettled, tx, expires // unknown encoding: fail closed
	}
	copy(tx[:], v[1:33])
	if e := binary.BigEndian.Uint64(v[33:]); e != 0 {
		expires = time.Unix(int64(e), 0)
	}
	return NonceState(v[0]), tx, expires
}

func (l *NonceLock) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// entry returns the badger entry for k with value v, expiring NonceGrace
// after expires (zero: never) and at least a second from now.
func (l *NonceLock) entry(k []byte, v []byte, expires time.Time) *badger.Entry {
	e := badger.NewEntry(k, v)
	if !expires.IsZero() {
		now := l.now()
		switch ttl := expires.Sub(now); {
		case ttl > 100*365*24*time.Hour: // effectively never expires
		case ttl+NonceGrace > 0:
			e.ExpiresAt = uint64(now.Add(ttl + NonceGrace).Unix())
		default:
			e.ExpiresAt = uint64(now.Add(time.Second).Unix())
		}
	}
	return e
}

// expired reports whether a stored entry is past its expiry on l's clock
// (badger hides it only once the wall clock passes it).
func (l *NonceLock) expired(it *badger.Item) bool {
	at := it.ExpiresAt()
	return at != 0 && at <= uint64(l.now().Unix())
}

// Lock marks k in flight if it is free. It returns false when k is already
// locked or settled, by this or an earlier process. expires is the
// authorization's validBefore (zero: keep forever). Lock is atomic: of
// concurrent calls for one key exactly one returns true.
func (l *NonceLock) Lock(k NonceKey, expires time.Time) (bool, error) {
	l.mu.Lock()
	if exp, ok := l.held[k]; ok && (exp.IsZero() || l.now().Before(exp.Add(NonceGrace))) {
		l.mu.Unlock()
		return false, nil
	}
	l.held[k] = expires
	l.mu.Unlock()

	dk := k.dbKey()
	var taken bool
	var err error
	for range 3 {
		taken = false
		err = l.db.Update(func(txn *badger.Txn) error {
			it, gerr := txn.Get(dk)
			switch {
			case gerr == nil && !l.expired(it):
				taken = true
				return nil
			case gerr != nil && !errors.Is(gerr, badger.ErrKeyNotFound):
				return gerr
			}
			return txn.SetEntry(l.entry(dk, nonceValue(NonceLocked, common.Hash{}, expires), expires))
		})
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	if err != nil || taken {
		l.mu.Lock()
		delete(l.held, k)
		l.mu.Unlock()
	}
	if err != nil {
		return false, fmt.Errorf("%w: lock %s: %v", ErrNonceStore, k, err)
	}
	return !taken, nil
}

// Settled records that k was used on chain by transaction tx. The entry
// stays until the authorization expires (plus NonceGrace).
func (l *NonceLock) Settled(k NonceKey, tx common.Hash) error {
	dk := k.dbKey()
	err := l.update(func(txn *badger.Txn) error {
		var expires time.Time
		if it, err := txn.Get(dk); err == nil {
			_ = it.Value(func(v []byte) error { _, _, expires = parseNonceValue(v); return nil })
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return txn.SetEntry(l.entry(dk, nonceValue(NonceSettled, tx, expires), expires))
	})
	l.forget(k)
	if err != nil {
		return fmt.Errorf("%w: settled %s: %v", ErrNonceStore, k, err)
	}
	return nil
}

// Release frees a locked k whose authorization was not used (settlement
// failed definitively or was never attempted), so the payer may present
// it again. Releasing a settled key is a no-op.
func (l *NonceLock) Release(k NonceKey) error {
	dk := k.dbKey()
	err := l.update(func(txn *badger.Txn) error {
		it, err := txn.Get(dk)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		var s NonceState
		_ = it.Value(func(v []byte) error { s, _, _ = parseNonceValue(v); return nil })
		if s == NonceSettled {
			return nil
		}
		return txn.Delete(dk)
	})
	l.forget(k)
	if err != nil {
		return fmt.Errorf("%w: release %s: %v", ErrNonceStore, k, err)
	}
	return nil
}

// Lookup returns the stored state of k and, when settled, its transaction.
func (l *NonceLock) Lookup(k NonceKey) (NonceState, common.Hash, error) {
	var s NonceState
	var tx common.Hash
	err := l.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(k.dbKey())
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if l.expired(it) {
			return nil
		}
		return it.Value(func(v []byte) error { s, tx, _ = parseNonceValue(v); return nil })
	})
	if err != nil {
		return NonceFree, tx, fmt.Errorf("%w: lookup %s: %v", ErrNonceStore, k, err)
	}
	return s, tx, nil
}

// Locked calls fn for every key still locked (in flight), for example to
// reconcile settlements left unknown by a crash. fn must not call other
// NonceLock methods; collect the keys first.
func (l *NonceLock) Locked(fn func(k NonceKey, expires time.Time)) error {
	err := l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(noncePrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k, ok := keyFromDB(it.Item().Key())
			if !ok || l.expired(it.Item()) {
				continue
			}
			var s NonceState
			var exp time.Time
			_ = it.Item().Value(func(v []byte) error { s, _, exp = parseNonceValue(v); return nil })
			if s == NonceLocked {
				fn(k, exp)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: scan: %v", ErrNonceStore, err)
	}
	return nil
}

func (l *NonceLock) update(fn func(*badger.Txn) error) error {
	var err error
	for range 3 {
		if err = l.db.Update(fn); !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}

func (l *NonceLock) forget(k NonceKey) {
	l.mu.Lock()
	delete(l.held, k)
	l.mu.Unlock()
}
