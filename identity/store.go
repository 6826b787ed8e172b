package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// keyPrefix is the badger prefix this package owns: "k/<key_id>" → JSON
// of storedKey (no secret; its SHA-256 only).
const keyPrefix = "k/"

type storedKey struct {
	keyJSON
	HashHex string `json:"sha256"`
}

// Store holds API keys: all of them in memory, indexed by secret digest
// and by key_id (keyIndex), and persisted in badger. Authenticate never
// reads the store and takes no lock. All methods are safe for concurrent
// use.
type Store struct {
	db     *badger.DB
	prefix string
	mu     sync.RWMutex // serializes writes (the index's one writer)
	idx    *keyIndex

	// The keys snapshot (snapshot.go): the one loaded from or last
	// written, and whether a key changed since; gen counts changes.
	snapMu    sync.Mutex // one WriteSnapshot at a time
	snapHash  string
	snapDirty bool
	gen       uint64
}

// Open loads every key from db into memory.
func Open(db *badger.DB) (*Store, error) { return OpenPrefix(db, keyPrefix) }

// OpenPrefix is Open on keys stored under another badger prefix: a copy
// of keys kept for someone else (the cluster's keys, mirrored on each
// node, live under their own prefix so that the node's own "k/" rows and
// their ledger check stay as they are). A million keys load in about two
// seconds on two cores: rows in the stored form are decoded by hand
// (decodeStored) straight into the index's slabs with one string per
// key by two goroutines reading a range of rows each, the Digest's
// hashing runs on a third while they decode, and the index's tables are
// filled at the end in slot order (keyIndex.fill).
func OpenPrefix(db *badger.DB, prefix string) (*Store, error) {
	s := &Store{db: db, prefix: prefix, idx: newKeyIndex(estimateKeys(db, prefix))}
	type filled struct {
		s *slab
		n int
	}
	batches := make(chan filled, 4)
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		for b := range batches {
			base := s.idx.addSlab(b.s, b.n)
			for i := range b.n {
				k := s.idx.at(base + uint32(i))
				s.principal(k)
				s.idx.sum.add(k)
			}
		}
	}()
	// The rows are read in key ranges, each by its own goroutine (the
	// decoding is most of the load; the index is built beside them). At
	// start nothing else writes key rows, so each range's own read
	// snapshot sees the same rows. Each range hands on full slabs and
	// keeps its last, partial one; those are packed after all finished
	// (the index takes full slabs only, but the last).
	bounds := splitKeys(db, prefix, 2)
	tails := make([]filled, len(bounds)+1)
	errs := make([]error, len(bounds)+1)
	var wg sync.WaitGroup
	for r := range tails {
		from, to := []byte(prefix), []byte(nil)
		if r > 0 {
			from = bounds[r-1]
		}
		if r < len(bounds) {
			to = bounds[r]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur, n := new(slab), 0
			errs[r] = db.View(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(s.prefix), PrefetchValues: false})
				defer it.Close()
				for it.Seek(from); it.Valid(); it.Next() {
					if to != nil && bytes.Compare(it.Item().Key(), to) >= 0 {
						break
					}
					k := &cur[n]
					if err := it.Item().Value(func(v []byte) error { return decodeStored(v, k) }); err != nil {
						return fmt.Errorf("key %s: %w", it.Item().Key(), err)
					}
					if n++; n == slabSize {
						batches <- filled{cur, n}
						cur, n = new(slab), 0
					}
				}
				return nil
			})
			tails[r] = filled{cur, n}
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil {
		// Pack the partial slabs: full ones go as they fill, the rest last.
		cur, n := new(slab), 0
		for _, t := range tails {
			for i := range t.n {
				cur[n] = t.s[i]
				if n++; n == slabSize {
					batches <- filled{cur, n}
					cur, n = new(slab), 0
				}
			}
		}
		if n > 0 {
			batches <- filled{cur, n}
		}
	}
	close(batches)
	<-indexed
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	if !s.idx.fill() { // two rows of one id or digest: the later one wins, as it always did
		s.idx.reindex()
	}
	return s, nil
}

// splitKeys returns up to parts-1 row keys that split the rows under
// prefix into ranges of about equal numbers of rows, from badger's table
// statistics (tables holding nothing but such rows; tables of different
// levels overlap, so the split is only about even); none when the tables
// say too little (a small store, or rows in the memtable). Any keys would
// do for correctness: the ranges they bound cover the prefix exactly.
func splitKeys(db *badger.DB, prefix string, parts int) [][]byte {
	type edge struct {
		key []byte
		n   int
	}
	var edges []edge
	total := 0
	for _, t := range db.Tables() {
		if !bytes.HasPrefix(t.Left, []byte(prefix)) || !bytes.HasPrefix(t.Right, []byte(prefix)) || len(t.Left) < len(prefix)+8 {
			continue
		}
		edges = append(edges, edge{t.Left[:len(t.Left)-8], int(t.KeyCount)}) // without badger's version suffix
		total += int(t.KeyCount)
	}
	if total < 4*slabSize || parts < 2 {
		return nil
	}
	sort.Slice(edges, func(i, j int) bool { return bytes.Compare(edges[i].key, edges[j].key) < 0 })
	var out [][]byte
	seen := 0
	for _, e := range edges {
		if len(out) < parts-1 && seen >= total*(len(out)+1)/parts {
			out = append(out, bytes.Clone(e.key))
		}
		seen += e.n
	}
	return out
}

// estimateKeys returns a lower bound of the rows under the key prefix,
// from badger's table statistics, to size the index: only tables that
// hold nothing but key rows count (a table that also holds ledger
// entries could count millions of them; the memtable is not counted).
func estimateKeys(db *badger.DB, prefix string) int {
	n := 0
	for _, t := range db.Tables() {
		if bytes.HasPrefix(t.Left, []byte(prefix)) && bytes.HasPrefix(t.Right, []byte(prefix)) {
			n += int(t.KeyCount)
		}
	}
	return min(n, 1<<24)
}

// index publishes the key at pos, replacing the key of its id. Revoked
// keys stay in the digest index (Lookup finds them; Authenticate refuses
// them). Callers hold s.mu, or own s (Open).
func (s *Store) index(pos uint32) {
	s.principal(s.idx.at(pos))
	s.idx.add(pos)
}

// principal sets k's Principal, "key:" + its ID, sharing one string.
func (s *Store) principal(k *Key) {
	if len(k.Principal) != len("key:")+len(k.ID) || k.Principal[len("key:"):] != k.ID {
		k.Principal = "key:" + k.ID
		k.ID = k.Principal[len("key:"):] // one string for both
	}
}

// keep stores a copy of k in the index and returns it (callers hold s.mu).
func (s *Store) keep(k *Key) *Key {
	slot, pos := s.idx.reserve()
	*slot = *k
	s.index(pos)
	return slot
}

// byDigest returns the key whose full digest is h, or nil.
func (s *Store) byDigest(h [32]byte) *Key {
	k := s.idx.digest(&h)
	if k == nil || subtle.ConstantTimeCompare(k.Hash[:], h[:]) != 1 {
		return nil
	}
	return k
}

// put writes k's row (callers hold s.mu).
func (s *Store) put(k *Key) error {
	v, err := json.Marshal(storedKey{keyJSON: k.toJSON(), HashHex: hex.EncodeToString(k.Hash[:])})
	if err != nil {
		return err
	}
	s.gen++
	s.snapDirty = true
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(s.prefix+k.ID), v)
	})
}

// Create makes a new key and returns its secret (shown once) and record.
// A zero expiresAt means the key never expires.
func (s *Store) Create(name string, expiresAt, now time.Time) (string, *Key, error) {
	secret, k := NewKey(name, expiresAt, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.put(k); err != nil {
		return "", nil, fmt.Errorf("store key: %w", err)
	}
	return secret, s.keep(k), nil
}

// NewKey makes a new key without storing it and returns its secret
// (shown once) and record. A zero expiresAt means the key never expires.
func NewKey(name string, expiresAt, now time.Time) (string, *Key) {
	secret, hash := NewSecret()
	k := &Key{
		ID:      newKeyID(),
		Name:    name,
		Hint:    secret[:len(SecretPrefix)+4] + "…",
		created: now.Unix(),
		Hash:    hash,
	}
	if !expiresAt.IsZero() {
		k.expires = expiresAt.Unix()
	}
	k.Principal = "key:" + k.ID
	return secret, k
}

// Merge adds k to the store, or merges it into the key of the same id:
// a revocation in either wins (the earlier revocation time is kept) and
// everything else of the stored key stays. It reports the key now stored
// and whether the store changed. A key whose digest differs from the
// stored one of its id is refused (ErrConflict): ids are random, so that
// is damage, not a change.
func (s *Store) Merge(k *Key) (*Key, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.idx.id(k.ID); old != nil {
		if old.Hash != k.Hash {
			return old, false, fmt.Errorf("%w: key %s", ErrConflict, k.ID)
		}
		if k.revoked == 0 || (old.revoked != 0 && old.revoked <= k.revoked) {
			return old, false, nil
		}
		m := *old
		m.revoked = k.revoked
		k = &m
	}
	if err := s.put(k); err != nil {
		return nil, false, fmt.Errorf("store key: %w", err)
	}
	return s.keep(k), true, nil
}

// Authenticate returns the active key whose secret is presented, or
// (nil, false). It hashes the secret, reads only memory and does not
// allocate.
func (s *Store) Authenticate(secret []byte, now time.Time) (*Key, bool) {
	if !LooksLikeSecret(secret) {
		return nil, false
	}
	h := sha256.Sum256(secret)
	k := s.byDigest(h)
	if k == nil || !k.Active(now) {
		return nil, false
	}
	return k, true
}

// Lookup finds a key by its key_id or by its secret, whatever its state.
func (s *Store) Lookup(ref string) (*Key, bool) {
	if LooksLikeSecret([]byte(ref)) {
		k := s.byDigest(sha256.Sum256([]byte(ref)))
		return k, k != nil
	}
	k := s.idx.id(ref)
	return k, k != nil
}

// List returns every key, oldest first.
func (s *Store) List() []*Key {
	s.mu.RLock()
	out := make([]*Key, 0, s.idx.ids)
	s.idx.each(func(k *Key) { out = append(out, k) })
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].created != out[j].created {
			return out[i].created < out[j].created
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Len returns the number of keys, revoked ones included.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.idx.ids
}

// Revoke marks the key revoked; it fails authentication from the next call.
func (s *Store) Revoke(id string, now time.Time) (*Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.idx.id(id)
	if old == nil {
		return nil, ErrNotFound
	}
	if old.revoked != 0 {
		return old, ErrRevoked
	}
	k := *old
	k.revoked = now.Unix()
	if err := s.put(&k); err != nil {
		return nil, fmt.Errorf("store key: %w", err)
	}
	return s.keep(&k), nil
}

// Restore rewrites the stored row of key id with name, expiry and
// revocation time (zero: unset), keeping its digest, hint and creation
// time: it puts back what the ledger's management records say (toolgate
// audit rebuild-state). It cannot bring back a key whose row is gone.
func (s *Store) Restore(id, name string, expiresAt, revokedAt time.Time) (*Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.idx.id(id)
	if old == nil {
		return nil, ErrNotFound
	}
	k := *old
	k.Name, k.expires, k.revoked = name, unixOf(expiresAt), unixOf(revokedAt)
	if err := s.put(&k); err != nil {
		return nil, fmt.Errorf("store key: %w", err)
	}
	return s.keep(&k), nil
}

// Each calls fn with every key (the current version of each key_id), in
// no particular order. fn must not call the Store's write methods.
func (s *Store) Each(fn func(*Key)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.idx.each(fn)
}
