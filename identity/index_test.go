package identity

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestKeyIndex_GrowAndReplace fills an index far past its first table
// and slab, replaces keys (as a revocation does), and checks that every
// key is found by digest and by id, that a replaced key is found as its
// latest version, and that Len counts ids, not versions.
func TestKeyIndex_GrowAndReplace(t *testing.T) {
	x := newKeyIndex(0) // 16 slots: grows many times
	const n = 3*slabSize + 17
	add := func(k Key) *Key {
		slot, pos := x.reserve()
		*slot = k
		x.add(pos)
		return slot
	}
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{ID: fmt.Sprintf("k_%06d", i), Hash: sha256.Sum256([]byte{byte(i), byte(i >> 8)})}
		add(keys[i])
	}
	for i := 0; i < n; i += 3 { // every third key revoked
		k := keys[i]
		k.revoked = int64(1000 + i)
		keys[i] = k
		add(k)
	}
	if x.ids != n {
		t.Fatalf("ids: got %d, want %d", x.ids, n)
	}
	if got, want := len(x.byHash.Load().slots), 8192; got != want { // n = 3089 at most 3/4 full
		t.Errorf("digest table: got %d slots, want %d", got, want)
	}
	for i, k := range keys {
		byD := x.digest(&k.Hash)
		byI := x.id(k.ID)
		if byD == nil || byI == nil || byD != byI {
			t.Fatalf("key %d: by digest %p, by id %p", i, byD, byI)
		}
		if byD.ID != k.ID || byD.revoked != k.revoked {
			t.Fatalf("key %d: got %s revoked %d, want %s revoked %d", i, byD.ID, byD.revoked, k.ID, k.revoked)
		}
	}
	seen := map[string]bool{}
	x.each(func(k *Key) {
		if seen[k.ID] {
			t.Fatalf("each: %s twice", k.ID)
		}
		seen[k.ID] = true
	})
	if len(seen) != n {
		t.Fatalf("each: got %d keys, want %d", len(seen), n)
	}
	other := sha256.Sum256([]byte("not stored"))
	if x.digest(&other) != nil || x.id("k_nope") != nil {
		t.Fatal("found a key that was never added")
	}
	// Same first 128 bits, another digest: found by the index, refused
	// by the Store's full constant-time compare.
	near := keys[5].Hash
	near[31] ^= 1
	if x.digest(&near) == nil {
		t.Fatal("index: the 128-bit prefix should match")
	}
	s := &Store{idx: x}
	if s.byDigest(near) != nil {
		t.Fatal("byDigest accepted a digest differing in its last byte")
	}
}

// TestStore_ConcurrentRevokeAuthenticate authenticates keys while other
// goroutines create keys (growing the tables and slabs) and revoke some:
// under -race, and a revoked key never authenticates after Revoke
// returned, nor an active key fails.
func TestStore_ConcurrentRevokeAuthenticate(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	const n = 64
	secrets := make([]string, n)
	ids := make([]string, n)
	for i := range secrets {
		sec, k, err := s.Create("", time.Time{}, now)
		if err != nil {
			t.Fatal(err)
		}
		secrets[i], ids[i] = sec, k.ID
	}
	var revoked [n]atomic.Bool
	var stop atomic.Bool
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; !stop.Load(); j++ {
				i := (j*7 + r) % n
				wasRevoked := revoked[i].Load()
				_, ok := s.Authenticate([]byte(secrets[i]), now)
				if wasRevoked && ok {
					t.Errorf("key %d authenticated after its revocation returned", i)
					return
				}
				if !wasRevoked && i%2 == 1 && !ok { // odd keys are never revoked
					t.Errorf("active key %d did not authenticate", i)
					return
				}
			}
		}()
	}
	created := make(chan struct{})
	go func() { // growth: many keys past the first table and slab
		defer close(created)
		for range 3 * slabSize {
			if _, _, err := s.Create("", time.Time{}, now); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < n; i += 2 {
		if _, err := s.Revoke(ids[i], now); err != nil {
			t.Fatal(err)
		}
		revoked[i].Store(true)
	}
	<-created
	stop.Store(true)
	wg.Wait()
	if got, want := s.Len(), n+3*slabSize; got != want {
		t.Fatalf("Len: got %d, want %d", got, want)
	}
	if got := len(s.List()); got != n+3*slabSize {
		t.Fatalf("List: got %d keys, want %d", got, n+3*slabSize)
	}
}

// TestStore_Digest: the digest depends on every key's state, not on the
// order keys were stored in.
func TestStore_Digest(t *testing.T) {
	open := func() *Store {
		db := openDB(t, t.TempDir())
		t.Cleanup(func() { db.Close() })
		s, err := Open(db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Unix(1_700_000_000, 0)
	var made []*Key
	a := open()
	for range 5 {
		_, k, err := a.Create("n", time.Time{}, now)
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, k)
	}
	b := open()
	for i := len(made) - 1; i >= 0; i-- { // the other order
		if _, _, err := b.Merge(made[i]); err != nil {
			t.Fatal(err)
		}
	}
	da, na := a.Digest()
	db, nb := b.Digest()
	if da != db || na != 5 || nb != 5 {
		t.Fatalf("same keys, other order: %x (%d) and %x (%d)", da, na, db, nb)
	}
	if _, err := b.Revoke(made[2].ID, now); err != nil {
		t.Fatal(err)
	}
	d, _ := b.Digest()
	if d == da {
		t.Fatal("a revocation did not change the digest")
	}
	// Kept as keys change, it equals the digest of the same keys loaded
	// afresh.
	reloaded, err := Open(b.db)
	if err != nil {
		t.Fatal(err)
	}
	if dr, nr := reloaded.Digest(); dr != d || nr != 5 {
		t.Fatalf("after a revocation: kept %x, reloaded %x (%d keys)", d, dr, nr)
	}
}

// TestOpen_SplitRanges: a store whose key rows span many tables below
// level 0 is read in two ranges at once; every key loads exactly once,
// with its fields, and the Digest is the one of the keys as written.
func TestOpen_SplitRanges(t *testing.T) {
	dir := t.TempDir()
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithBaseTableSize(256 << 10).WithNumVersionsToKeep(1)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	const n = 9*slabSize + 123
	want := map[string]Key{}
	var sum digestSum
	wb := db.NewWriteBatch()
	for i := range n {
		secret, hash := NewSecret()
		k := Key{ID: fmt.Sprintf("k_S%015d", i), Name: fmt.Sprintf("n%d", i), Hint: secret[:7] + "…", Hash: hash,
			created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Unix() + int64(i)}
		if i%7 == 0 {
			k.revoked = k.created + 60
		}
		want[k.ID] = k
		sum.add(&k)
		v, err := json.Marshal(storedKey{keyJSON: k.toJSON(), HashHex: hex.EncodeToString(hash[:])})
		if err != nil {
			t.Fatal(err)
		}
		if err := wb.Set([]byte(keyPrefix+k.ID), v); err != nil {
			t.Fatal(err)
		}
		if i%(3*slabSize) == 3*slabSize-1 || i == n-1 { // a table per batch
			if err := wb.Flush(); err != nil {
				t.Fatal(err)
			}
			db.Close()
			if db, err = badger.Open(opts); err != nil {
				t.Fatal(err)
			}
			wb = db.NewWriteBatch()
		}
	}
	wb.Cancel()
	defer db.Close()
	if got := splitKeys(db, keyPrefix, 2); len(got) != 1 {
		t.Fatalf("setup: split keys %q, want one (tables: %d)", got, len(db.Tables()))
	}
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != n {
		t.Fatalf("Len: got %d, want %d", s.Len(), n)
	}
	seen := map[string]bool{}
	s.Each(func(k *Key) {
		w, ok := want[k.ID]
		if !ok || seen[k.ID] {
			t.Fatalf("key %s: unexpected or loaded twice", k.ID)
		}
		seen[k.ID] = true
		if k.Name != w.Name || k.Hint != w.Hint || k.Hash != w.Hash || k.created != w.created || k.revoked != w.revoked || k.Principal != "key:"+w.ID {
			t.Fatalf("key %s: got %+v, want %+v", k.ID, *k, w)
		}
	})
	if len(seen) != n {
		t.Fatalf("keys visited: got %d, want %d", len(seen), n)
	}
	got, _ := s.Digest()
	var wantSum [32]byte
	for i, l := range sum {
		binary.LittleEndian.PutUint64(wantSum[8*i:], l)
	}
	if got != wantSum {
		t.Fatal("Digest differs from the keys written")
	}
}

// TestOpen_DuplicateRows: two rows naming one key_id, and two keys of one
// digest (damage): the index is built as add always built it, the later
// row winning, and the count and digest are those of the keys that won.
func TestOpen_DuplicateRows(t *testing.T) {
	db := openDB(t, t.TempDir())
	_, hash := NewSecret()
	_, other := NewSecret()
	row := func(id, name string, h [32]byte) string {
		return `{"key_id":"` + id + `","name":"` + name + `","key":"it-AAAA…","created_at":"2026-12-01T00:00:00Z","sha256":"` + hex.EncodeToString(h[:]) + `"}`
	}
	rows := map[string]string{
		"k/a": row("k_DUP", "first", other),
		"k/b": row("k_DUP", "second", other),
		"k/c": row("k_ONE", "one", hash),
		"k/d": row("k_TWO", "two", hash),
	}
	err := db.Update(func(txn *badger.Txn) error {
		for k, v := range rows {
			if err := txn.Set([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 3 {
		t.Fatalf("Len: got %d, want 3", s.Len())
	}
	if k, _ := s.Lookup("k_DUP"); k.Name != "second" {
		t.Fatalf("k_DUP: got %q, want the later row", k.Name)
	}
	if k := s.byDigest(hash); k == nil || k.ID != "k_TWO" {
		t.Fatalf("by digest: got %v, want the later key k_TWO", k)
	}
	var want digestSum
	for _, id := range []string{"k_DUP", "k_ONE", "k_TWO"} {
		k, _ := s.Lookup(id)
		want.add(k)
	}
	if got, _ := s.Digest(); got != want.bytes() {
		t.Fatal("Digest is not the sum of the keys that won")
	}
}
