package identity

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// snapFixture is a store of several groups of keys (rows written in the
// stored form, as bench/startup does, plus keys made through Create
// whose secrets the tests present).
type snapFixture struct {
	db      *badger.DB
	dir     string // where snapshots go
	s       *Store
	secrets map[string]string // key_id → secret, for the Created keys
}

func newSnapFixture(t *testing.T, rows int) *snapFixture {
	t.Helper()
	f := &snapFixture{db: openDB(t, t.TempDir()), dir: t.TempDir(), secrets: map[string]string{}}
	wb := f.db.NewWriteBatch()
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range rows {
		secret, hash := NewSecret()
		k := Key{ID: fmt.Sprintf("k_S%015d", i), Name: fmt.Sprintf("n%d", i), Hint: secret[:7] + "…", Hash: hash, created: created.Unix() + int64(i)}
		if i%5 == 0 {
			k.expires = k.created + 86400*365
		}
		if i%7 == 0 {
			k.revoked = k.created + 60
		}
		v, err := json.Marshal(storedKey{keyJSON: k.toJSON(), HashHex: hex.EncodeToString(hash[:])})
		if err != nil {
			t.Fatal(err)
		}
		if err := wb.Set([]byte(keyPrefix+k.ID), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.s, err = Open(f.db); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		secret, k, err := f.s.Create(fmt.Sprintf("made %d", i), time.Time{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f.secrets[k.ID] = secret
	}
	return f
}

func (f *snapFixture) write(t *testing.T) string {
	t.Helper()
	h, err := f.s.WriteSnapshot(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sameAsRows checks that s holds exactly the keys a load of every row
// gives: the same digest and count, and every key with its fields.
func sameAsRows(t *testing.T, db *badger.DB, s *Store) {
	t.Helper()
	full, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	dw, nw := full.Digest()
	dg, ng := s.Digest()
	if dg != dw || ng != nw {
		t.Fatalf("digest %x of %d keys, want %x of %d (a load of every row)", dg[:4], ng, dw[:4], nw)
	}
	full.Each(func(w *Key) {
		k, ok := s.Lookup(w.ID)
		if !ok || k.Name != w.Name || k.Hint != w.Hint || k.Hash != w.Hash || k.created != w.created || k.expires != w.expires ||
			k.revoked != w.revoked || k.Principal != "key:"+w.ID || k.ID != w.ID {
			t.Fatalf("key %s: got %+v (%v), want %+v", w.ID, k, ok, *w)
		}
		if byDigest := s.byDigest(w.Hash); byDigest != k {
			t.Fatalf("key %s: not found by its digest", w.ID)
		}
	})
}

func TestOpenSnapshot(t *testing.T) {
	const rows = 4*slabSize + 321
	t.Run("Current", func(t *testing.T) {
		f := newSnapFixture(t, rows)
		h := f.write(t)
		if _, current := f.s.SnapshotState(); !current {
			t.Fatal("a snapshot written with no change since is not current")
		}
		s, l, err := OpenSnapshot(f.db, f.dir, []string{h})
		if err != nil {
			t.Fatal(err)
		}
		if l.From != "snapshot" || l.Decoded != 0 || l.SnapKeys != rows+20 || l.Groups != (rows+20+snapGroupRows-1)/snapGroupRows {
			t.Fatalf("loaded %+v, want every key from the snapshot", l)
		}
		sameAsRows(t, f.db, s)
		for id, secret := range f.secrets {
			if k, ok := s.Authenticate([]byte(secret), time.Now()); !ok || k.ID != id {
				t.Fatalf("key %s does not authenticate after a snapshot load", id)
			}
		}
		if got, current := s.SnapshotState(); got != h || !current {
			t.Fatalf("SnapshotState: %q %v, want %q current", got, current, h)
		}
	})

	// Keys created, revoked and restored after the snapshot (a crash
	// before the next one): their groups are decoded from the rows, the
	// revoked key is refused, the new one authenticates.
	t.Run("Stale", func(t *testing.T) {
		f := newSnapFixture(t, rows)
		h := f.write(t)
		var revoked, kept string
		for id := range f.secrets {
			if revoked == "" {
				revoked = id
			} else if kept == "" {
				kept = id
			}
		}
		if _, err := f.s.Revoke(revoked, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.Restore("k_S000000000000007", "restored", time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		newSecret, newKey, err := f.s.Create("after the snapshot", time.Time{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, current := f.s.SnapshotState(); current {
			t.Fatal("SnapshotState: current after changes")
		}
		s, l, err := OpenSnapshot(f.db, f.dir, []string{h})
		if err != nil {
			t.Fatal(err)
		}
		if l.From != "snapshot+rows" || l.Stale == 0 || l.Stale > 3 || l.Decoded == 0 || l.SnapKeys+l.Decoded != rows+21 {
			t.Fatalf("loaded %+v, want the changed groups decoded", l)
		}
		sameAsRows(t, f.db, s)
		if _, ok := s.Authenticate([]byte(f.secrets[revoked]), time.Now()); ok {
			t.Fatal("a key revoked after the snapshot authenticates")
		}
		if _, ok := s.Authenticate([]byte(f.secrets[kept]), time.Now()); !ok {
			t.Fatal("an unchanged key does not authenticate")
		}
		if k, ok := s.Authenticate([]byte(newSecret), time.Now()); !ok || k.ID != newKey.ID {
			t.Fatal("a key created after the snapshot does not authenticate")
		}
		if k, _ := s.Lookup("k_S000000000000007"); k.Name != "restored" || k.revoked != 0 {
			t.Fatalf("restored key: %+v", k)
		}
		if _, current := s.SnapshotState(); current {
			t.Fatal("SnapshotState: a stale snapshot reported current")
		}
	})

	// A row edited in badger behind the store's back (a revoked key
	// made active): the snapshot's group no longer matches, so the row is
	// what is loaded, exactly as a load of every row; the digest then
	// differs from the one before the edit, which is what the state seal
	// and mark compare.
	t.Run("RowEdited", func(t *testing.T) {
		f := newSnapFixture(t, rows)
		before, _ := f.s.Digest()
		h := f.write(t)
		id := "k_S000000000000014" // revoked (14 % 7 == 0)
		err := f.db.Update(func(txn *badger.Txn) error {
			it, err := txn.Get([]byte(keyPrefix + id))
			if err != nil {
				return err
			}
			v, _ := it.ValueCopy(nil)
			var sk map[string]any
			if err := json.Unmarshal(v, &sk); err != nil {
				return err
			}
			delete(sk, "revoked_at")
			b, _ := json.Marshal(sk)
			return txn.Set([]byte(keyPrefix+id), b)
		})
		if err != nil {
			t.Fatal(err)
		}
		s, l, err := OpenSnapshot(f.db, f.dir, []string{h})
		if err != nil {
			t.Fatal(err)
		}
		if l.Stale != 1 {
			t.Fatalf("loaded %+v, want one group decoded", l)
		}
		sameAsRows(t, f.db, s)
		if k, _ := s.Lookup(id); k.revoked != 0 {
			t.Fatal("the edited row is not what was loaded")
		}
		if after, _ := s.Digest(); after == before {
			t.Fatal("the digest did not change with the edited row")
		}
	})

	// Rows deleted behind the store's back (damage): their groups hold
	// fewer rows than the snapshot's, and the keys are gone, as from a
	// load of every row.
	t.Run("RowsDeleted", func(t *testing.T) {
		f := newSnapFixture(t, rows)
		h := f.write(t)
		gone := []string{"k_S000000000000003", "k_S000000000000004", "k_S000000000001500"}
		err := f.db.Update(func(txn *badger.Txn) error {
			for _, id := range gone {
				if err := txn.Delete([]byte(keyPrefix + id)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		s, l, err := OpenSnapshot(f.db, f.dir, []string{h})
		if err != nil {
			t.Fatal(err)
		}
		if l.Stale != 2 || s.Len() != rows+20-len(gone) {
			t.Fatalf("loaded %+v, %d keys; want two groups decoded, %d keys", l, s.Len(), rows+20-len(gone))
		}
		sameAsRows(t, f.db, s)
		for _, id := range gone {
			if _, ok := s.Lookup(id); ok {
				t.Fatalf("deleted key %s still loaded", id)
			}
		}
		n := 0
		s.Each(func(*Key) { n++ })
		if n != s.Len() {
			t.Fatalf("Each visits %d keys, Len says %d", n, s.Len())
		}
		// Keys made afterwards land after the left over positions.
		secret, _, err := s.Create("after", time.Time{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := s.Authenticate([]byte(secret), time.Now()); !ok {
			t.Fatal("a key made after a load with holes does not authenticate")
		}
	})

	// The snapshot file damaged or edited while the gateway is down: its
	// SHA-256 is no longer the recorded one, so every row is decoded.
	t.Run("Tampered", func(t *testing.T) {
		f := newSnapFixture(t, rows)
		h := f.write(t)
		path := filepath.Join(f.dir, SnapshotFile(h))
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The first revoked key's record: its revocation time zeroed, as
		// an attacker making it active again would.
		edited := append([]byte(nil), orig...)
		for r := 0; ; r++ {
			rec := edited[r*snapRecordSize:]
			if string(rec[48:56]) != "\x00\x00\x00\x00\x00\x00\x00\x00" {
				clear(rec[48:56])
				break
			}
		}
		cases := []struct {
			name string
			data []byte
			why  string
		}{
			{"revocation cleared", edited, "SHA-256"},
			{"truncated", orig[:len(orig)/2], ""},
			{"tail cut", orig[:len(orig)-1], ""},
			{"empty", nil, "truncated"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if err := os.WriteFile(path, tc.data, 0o600); err != nil {
					t.Fatal(err)
				}
				s, l, err := OpenSnapshot(f.db, f.dir, []string{h})
				if err != nil {
					t.Fatal(err)
				}
				if l.From != "rows" || !strings.Contains(l.WhyNot, tc.why) || l.WhyNot == "" {
					t.Fatalf("loaded %+v, want every row decoded, the reason naming %q", l, tc.why)
				}
				sameAsRows(t, f.db, s)
				if k, _ := s.Lookup("k_S000000000000007"); k.revoked == 0 {
					t.Fatal("a revoked key loaded as active")
				}
				if got, _ := s.SnapshotState(); got != "" {
					t.Fatalf("SnapshotState names %q after a refused snapshot", got)
				}
			})
		}
	})

	// A snapshot nobody vouches for (no hash, another hash, a file
	// missing) is not used.
	t.Run("NotTrusted", func(t *testing.T) {
		f := newSnapFixture(t, rows)
		h := f.write(t)
		other := strings.Repeat("ab", 32)
		for _, trusted := range [][]string{nil, {other}, {""}} {
			s, l, err := OpenSnapshot(f.db, f.dir, trusted)
			if err != nil {
				t.Fatal(err)
			}
			if l.From != "rows" {
				t.Fatalf("trusted %q: loaded %+v, want every row decoded", trusted, l)
			}
			sameAsRows(t, f.db, s)
		}
		// A file renamed to another snapshot's name: the content's hash
		// is not the one vouched for.
		if err := os.Rename(filepath.Join(f.dir, SnapshotFile(h)), filepath.Join(f.dir, SnapshotFile(other))); err != nil {
			t.Fatal(err)
		}
		if _, l, _ := OpenSnapshot(f.db, f.dir, []string{other}); l.From != "rows" || !strings.Contains(l.WhyNot, "SHA-256") {
			t.Fatalf("renamed snapshot: loaded %+v, want it refused by its SHA-256", l)
		}
		// The first vouched one missing, the second there: the second.
		if err := os.Rename(filepath.Join(f.dir, SnapshotFile(other)), filepath.Join(f.dir, SnapshotFile(h))); err != nil {
			t.Fatal(err)
		}
		if _, l, _ := OpenSnapshot(f.db, f.dir, []string{other, h}); l.From != "snapshot" {
			t.Fatalf("loaded %+v, want the second vouched snapshot", l)
		}
	})

	// Every key row deleted and others written: nothing of the
	// snapshot matches.
	t.Run("Empty", func(t *testing.T) {
		db := openDB(t, t.TempDir())
		s, err := Open(db)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		h, err := s.WriteSnapshot(dir)
		if err != nil {
			t.Fatal(err)
		}
		s2, l, err := OpenSnapshot(db, dir, []string{h})
		if err != nil || l.From != "snapshot" || s2.Len() != 0 {
			t.Fatalf("empty store: %+v %v", l, err)
		}
		secret, _, err := s2.Create("one", time.Time{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		s3, l, err := OpenSnapshot(db, dir, []string{h})
		if err != nil || l.Stale != 1 || s3.Len() != 1 {
			t.Fatalf("one key after an empty snapshot: %+v %v", l, err)
		}
		if _, ok := s3.Authenticate([]byte(secret), time.Now()); !ok {
			t.Fatal("the key made after an empty snapshot does not authenticate")
		}
		sameAsRows(t, db, s3)
	})
}

// TestWriteSnapshot_ConcurrentChanges: keys are created and revoked
// while snapshots are written (-race). Every snapshot is of the rows at
// one moment: loaded later, it gives exactly what a load of every row
// gives, and it is reported current only if no change came after it.
func TestWriteSnapshot_ConcurrentChanges(t *testing.T) {
	f := newSnapFixture(t, 3*slabSize)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, k, err := f.s.Create(fmt.Sprintf("c%d", i), time.Time{}, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			if i%2 == 0 {
				if _, err := f.s.Revoke(k.ID, time.Now()); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	hashes := make(chan string, 8)
	go func() {
		defer wg.Done()
		defer close(hashes)
		for range 4 {
			h, err := f.s.WriteSnapshot(f.dir)
			if err != nil {
				t.Error(err)
				return
			}
			hashes <- h
		}
	}()
	var last string
	for h := range hashes {
		last = h
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	if got, current := f.s.SnapshotState(); got != last || current {
		t.Fatalf("SnapshotState: %q current=%v, want the last written, not current (changes followed)", got, current)
	}
	ents, _ := os.ReadDir(f.dir)
	if len(ents) > 2 {
		t.Fatalf("%d snapshot files kept, want at most 2 (the last and the one before)", len(ents))
	}
	s, l, err := OpenSnapshot(f.db, f.dir, []string{last})
	if err != nil {
		t.Fatal(err)
	}
	if l.From == "rows" {
		t.Fatalf("loaded %+v, want the snapshot used", l)
	}
	sameAsRows(t, f.db, s)
	h := f.write(t)
	if _, current := f.s.SnapshotState(); !current {
		t.Fatal("a snapshot written with no change since is not current")
	}
	if _, l, _ := OpenSnapshot(f.db, f.dir, []string{h}); l.From != "snapshot" {
		t.Fatalf("loaded %+v, want every key from the quiet snapshot", l)
	}
}

// TestWriteSnapshot_RowKeyNotID: a row whose key_id differs from its
// row key (damage) is loaded by Open as before, but no snapshot is
// written of it.
func TestWriteSnapshot_RowKeyNotID(t *testing.T) {
	f := newSnapFixture(t, 10)
	v := `{"key_id":"k_OTHER","key":"it-AAAA…","created_at":"2026-12-01T00:00:00Z","sha256":"` + strings.Repeat("0", 64) + `"}`
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyPrefix+"k_ROW"), []byte(v)) }); err != nil {
		t.Fatal(err)
	}
	s, err := Open(f.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteSnapshot(f.dir); err == nil || !strings.Contains(err.Error(), "row key") {
		t.Fatalf("WriteSnapshot: %v, want it refused", err)
	}
}
