package x402

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ethereum/go-ethereum/common"
)

func openBadger(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func testNonceKey(b byte) NonceKey {
	k := NonceKey{ChainID: 84532, Asset: common.HexToAddress("0x036CbD53842c5426634e7929541eC2318f3dCF7e"), From: vecPayer}
	k.Nonce[0] = b
	return k
}

func TestNonceLock_Lock(t *testing.T) {
	t.Run("ConcurrentExactlyOne", func(t *testing.T) {
		db := openBadger(t, t.TempDir())
		defer db.Close()
		l := NewNonceLock(db)
		for round := range 5 {
			k := testNonceKey(byte(round))
			var wins atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					ok, err := l.Lock(k, time.Now().Add(time.Minute))
					if err != nil {
						t.Error(err)
					}
					if ok {
						wins.Add(1)
					}
				}()
			}
			close(start)
			wg.Wait()
			if got := wins.Load(); got != 1 {
				t.Errorf("round %d: got %d winners, want 1", round, got)
			}
		}
	})
	t.Run("ConcurrentDistinctProcessesView", func(t *testing.T) {
		// Two NonceLocks on one DB (no shared in-memory map): badger's
		// conflict detection alone must still admit exactly one.
		db := openBadger(t, t.TempDir())
		defer db.Close()
		ls := []*NonceLock{NewNonceLock(db), NewNonceLock(db)}
		k := testNonceKey(9)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if ok, err := ls[i%2].Lock(k, time.Time{}); err != nil {
					t.Error(err)
				} else if ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Errorf("got %d winners, want 1", got)
		}
	})
	t.Run("ReleaseThenRelock", func(t *testing.T) {
		db := openBadger(t, t.TempDir())
		defer db.Close()
		l := NewNonceLock(db)
		k := testNonceKey(1)
		if ok, _ := l.Lock(k, time.Time{}); !ok {
			t.Fatal("first lock: got false, want true")
		}
		if ok, _ := l.Lock(k, time.Time{}); ok {
			t.Fatal("second lock: got true, want false")
		}
		if err := l.Release(k); err != nil {
			t.Fatal(err)
		}
		if ok, _ := l.Lock(k, time.Time{}); !ok {
			t.Error("after release: got false, want true")
		}
	})
	t.Run("SettledStaysUsed", func(t *testing.T) {
		db := openBadger(t, t.TempDir())
		defer db.Close()
		l := NewNonceLock(db)
		k := testNonceKey(2)
		tx := common.HexToHash("0xabcd")
		_, _ = l.Lock(k, time.Now().Add(time.Minute))
		if err := l.Settled(k, tx); err != nil {
			t.Fatal(err)
		}
		_ = l.Release(k) // no-op on settled
		if ok, _ := l.Lock(k, time.Time{}); ok {
			t.Error("lock after settled: got true, want false")
		}
		s, h, err := l.Lookup(k)
		if err != nil || s != NonceSettled || h != tx {
			t.Errorf("got %v %s %v, want settled %s", s, h.Hex(), err, tx.Hex())
		}
	})
	t.Run("SurvivesReopen", func(t *testing.T) {
		dir := t.TempDir()
		db := openBadger(t, dir)
		l := NewNonceLock(db)
		locked, settled, released := testNonceKey(1), testNonceKey(2), testNonceKey(3)
		for _, k := range []NonceKey{locked, settled, released} {
			if ok, err := l.Lock(k, time.Now().Add(time.Hour)); !ok || err != nil {
				t.Fatalf("lock %v: %v %v", k, ok, err)
			}
		}
		_ = l.Settled(settled, common.HexToHash("0x01"))
		_ = l.Release(released)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		db = openBadger(t, dir)
		defer db.Close()
		l = NewNonceLock(db)
		if ok, _ := l.Lock(locked, time.Time{}); ok {
			t.Error("locked key after reopen: got lockable, want held")
		}
		if ok, _ := l.Lock(settled, time.Time{}); ok {
			t.Error("settled key after reopen: got lockable, want used")
		}
		if ok, _ := l.Lock(released, time.Time{}); !ok {
			t.Error("released key after reopen: got held, want lockable")
		}
		var pending []NonceKey
		if err := l.Locked(func(k NonceKey, _ time.Time) { pending = append(pending, k) }); err != nil {
			t.Fatal(err)
		}
		if len(pending) != 2 || pending[0] != locked || pending[1] != released {
			t.Errorf("Locked: got %v, want [%v %v]", pending, locked, released)
		}
	})
	t.Run("ExpiredEntryFreed", func(t *testing.T) {
		db := openBadger(t, t.TempDir())
		defer db.Close()
		clk := newFakeClock(time.Now())
		l := NewNonceLock(db)
		l.Now = clk.Now
		k := testNonceKey(4)
		// validBefore long past: the entry lives the one-second floor.
		if ok, _ := l.Lock(k, clk.Now().Add(-2*NonceGrace)); !ok {
			t.Fatal("got false, want true")
		}
		l.forget(k)
		if ok, _ := l.Lock(k, time.Time{}); ok {
			t.Fatal("within the floor: got lockable, want held")
		}
		clk.Advance(1100 * time.Millisecond)
		if ok, _ := l.Lock(k, time.Time{}); !ok {
			t.Error("after expiry: got held, want lockable")
		}
	})
	t.Run("HeldUntilValidBeforePlusGrace", func(t *testing.T) {
		db := openBadger(t, t.TempDir())
		defer db.Close()
		clk := newFakeClock(time.Now())
		l := NewNonceLock(db)
		l.Now = clk.Now
		k := testNonceKey(5)
		validBefore := clk.Now().Add(time.Minute)
		if ok, _ := l.Lock(k, validBefore); !ok {
			t.Fatal("got false, want true")
		}
		other := NewNonceLock(db) // the store's view, not this process's map
		other.Now = clk.Now
		clk.Advance(time.Minute + NonceGrace - 2*time.Second)
		if ok, _ := l.Lock(k, validBefore); ok {
			t.Fatal("before validBefore+grace (this lock): got lockable, want held")
		}
		if ok, _ := other.Lock(k, validBefore); ok {
			t.Fatal("before validBefore+grace (store): got lockable, want held")
		}
		var pending int
		_ = other.Locked(func(NonceKey, time.Time) { pending++ })
		if pending != 1 {
			t.Fatalf("Locked before expiry: got %d, want 1", pending)
		}
		clk.Advance(3 * time.Second)
		if s, _, err := other.Lookup(k); err != nil || s != NonceFree {
			t.Fatalf("Lookup after expiry: got %v, %v, want free", s, err)
		}
		pending = 0
		_ = other.Locked(func(NonceKey, time.Time) { pending++ })
		if pending != 0 {
			t.Fatalf("Locked after expiry: got %d, want 0", pending)
		}
		if ok, _ := l.Lock(k, clk.Now().Add(time.Minute)); !ok {
			t.Error("after validBefore+grace: got held, want lockable")
		}
	})
}

// fakeClock is a clock that moves only when told. Safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
