package storetest

import (
	"encoding/hex"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// NonceContract checks a NonceStore: one winner among concurrent locks,
// release, settled authorizations kept, and expiry at validBefore +
// x402.NonceGrace on the clock newStore is given (the store must measure
// every expiry on it).
func NonceContract(t *testing.T, newStore func(t *testing.T, now func() time.Time) gateway.NonceStore) {
	key := func(b byte) x402.NonceKey {
		// Base Sepolia USDC from 0x…a1 (addresses filled by hand: only
		// x402 imports go-ethereum).
		k := x402.NonceKey{ChainID: 84532}
		hex.Decode(k.Asset[:], []byte("036CbD53842c5426634e7929541eC2318f3dCF7e"))
		k.From[19] = 0xa1
		k.Nonce[0] = b
		return k
	}
	lock := func(t *testing.T, n gateway.NonceStore, k x402.NonceKey, expires time.Time) bool {
		t.Helper()
		ok, err := n.Lock(k, expires)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		return ok
	}
	t.Run("OneWinnerUnderConcurrency", func(t *testing.T) {
		clk := NewClock(time.Now())
		n := newStore(t, clk.Now)
		for round := range 3 {
			k := key(byte(round))
			var wins atomic.Int32
			concurrently(100, func(int) {
				ok, err := n.Lock(k, clk.Now().Add(time.Minute))
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			})
			if got := wins.Load(); got != 1 {
				t.Fatalf("round %d: got %d winners, want 1", round, got)
			}
		}
	})
	t.Run("Release", func(t *testing.T) {
		clk := NewClock(time.Now())
		n := newStore(t, clk.Now)
		k, exp := key(1), clk.Now().Add(time.Minute)
		if !lock(t, n, k, exp) {
			t.Fatal("first Lock: got false, want true")
		}
		if lock(t, n, k, exp) {
			t.Fatal("second Lock: got true, want false")
		}
		if lock(t, n, key(2), exp) == false {
			t.Fatal("another nonce: got false, want true")
		}
		if err := n.Release(k); err != nil {
			t.Fatal(err)
		}
		if !lock(t, n, k, exp) {
			t.Fatal("after Release: got false, want true")
		}
		if err := n.Release(key(9)); err != nil {
			t.Fatalf("Release of an unknown key: %v, want nil", err)
		}
	})
	t.Run("MarkSettled", func(t *testing.T) {
		clk := NewClock(time.Now())
		n := newStore(t, clk.Now)
		k, exp := key(3), clk.Now().Add(time.Minute)
		lock(t, n, k, exp)
		if err := n.MarkSettled(k, "0x000000000000000000000000000000000000000000000000000000000000abcd"); err != nil {
			t.Fatal(err)
		}
		if err := n.Release(k); err != nil { // a no-op on a settled key
			t.Fatal(err)
		}
		if lock(t, n, k, exp) {
			t.Fatal("Lock after MarkSettled and Release: got true, want false (used)")
		}
		clk.Advance(time.Minute + x402.NonceGrace - time.Second)
		if lock(t, n, k, exp) {
			t.Fatal("Lock before validBefore + grace: got true, want false")
		}
	})
	t.Run("ExpiryOnTheStoreClock", func(t *testing.T) {
		clk := NewClock(time.Now())
		n := newStore(t, clk.Now)
		k := key(4)
		validBefore := clk.Now().Add(time.Minute)
		lock(t, n, k, validBefore)
		clk.Advance(time.Minute + x402.NonceGrace - 2*time.Second)
		if lock(t, n, k, validBefore) {
			t.Fatal("before validBefore + grace: got lockable, want held")
		}
		clk.Advance(3 * time.Second)
		if !lock(t, n, k, clk.Now().Add(time.Minute)) {
			t.Fatal("after validBefore + grace: got held, want lockable")
		}
		settled := key(5)
		lock(t, n, settled, clk.Now().Add(time.Minute))
		if err := n.MarkSettled(settled, ""); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute + x402.NonceGrace + time.Second)
		if !lock(t, n, settled, clk.Now().Add(time.Minute)) {
			t.Fatal("settled, after validBefore + grace: got held, want lockable")
		}
	})
	t.Run("NoExpiry", func(t *testing.T) {
		clk := NewClock(time.Now())
		n := newStore(t, clk.Now)
		k := key(6)
		lock(t, n, k, time.Time{})
		clk.Advance(30 * 24 * time.Hour)
		if lock(t, n, k, time.Time{}) {
			t.Fatal("without validBefore, a month later: got lockable, want held")
		}
	})
}
