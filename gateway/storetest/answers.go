package storetest

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

// AnswerContract checks an AnswerStore: a missing key is not found, a put
// value reads back byte for byte (binary keys and values included), a put
// replaces, keys are independent, a value expires after its TTL (on the
// wall clock: both badger and Redis expire by it), and concurrent puts
// and gets of many keys each read their own value. A store that is also
// an AnswerClaimer (shared between nodes) must give one claim to one of
// many concurrent attempts, name the holder's fingerprint to the others,
// free it on release (only the holder's own), and let it lapse after its
// TTL. A store that is also a FailureCounter must count each failure once
// under concurrent callers, keep keys apart, and let a count lapse after
// the TTL of its first failure.
func AnswerContract(t *testing.T, newStore func(t *testing.T) gateway.AnswerStore) {
	get := func(t *testing.T, s gateway.AnswerStore, k string) ([]byte, bool) {
		t.Helper()
		v, ok, err := s.GetAnswer(k)
		if err != nil {
			t.Fatalf("GetAnswer(%q): %v", k, err)
		}
		return v, ok
	}
	put := func(t *testing.T, s gateway.AnswerStore, k string, v []byte, ttl time.Duration) {
		t.Helper()
		if err := s.PutAnswer(k, v, ttl); err != nil {
			t.Fatalf("PutAnswer(%q): %v", k, err)
		}
	}
	t.Run("MissingIsNotFound", func(t *testing.T) {
		s := newStore(t)
		if v, ok := get(t, s, "i/k/key:a\x00nothing"); ok || v != nil {
			t.Fatalf("got %q %t, want not found", v, ok)
		}
	})
	t.Run("RoundTripAndReplace", func(t *testing.T) {
		s := newStore(t)
		k := "i/p/0xAbC\x00pay-0123456789abcdef"
		v := []byte("{\"status\":200}\x00\xff binary")
		put(t, s, k, v, time.Hour)
		if got, ok := get(t, s, k); !ok || !bytes.Equal(got, v) {
			t.Fatalf("got %q %t, want %q", got, ok, v)
		}
		put(t, s, k, []byte("second"), time.Hour)
		if got, ok := get(t, s, k); !ok || string(got) != "second" {
			t.Fatalf("after replace: got %q %t, want second", got, ok)
		}
	})
	t.Run("KeysIndependent", func(t *testing.T) {
		s := newStore(t)
		keys := []string{"i/k/key:a\x00x", "i/k/key:a\x00xy", "i/k/key:ab\x00x", "i/n/00ff", "i/k/key:a"}
		for i, k := range keys {
			put(t, s, k, []byte(fmt.Sprint(i)), time.Hour)
		}
		for i, k := range keys {
			if got, ok := get(t, s, k); !ok || string(got) != fmt.Sprint(i) {
				t.Errorf("%q: got %q %t, want %d", k, got, ok, i)
			}
		}
	})
	t.Run("Expires", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "short", []byte("v"), time.Second)
		put(t, s, "long", []byte("v"), time.Hour)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := get(t, s, "short"); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a value with a 1 s TTL still there after 10 s")
			}
			time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
		}
		if _, ok := get(t, s, "long"); !ok {
			t.Fatal("a value with a 1 h TTL expired")
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		s := newStore(t)
		concurrently(64, func(i int) {
			k := fmt.Sprintf("i/k/key:c\x00%d", i)
			v := []byte(fmt.Sprintf("answer %d", i))
			for range 5 {
				if err := s.PutAnswer(k, v, time.Hour); err != nil {
					t.Error(err)
					return
				}
				got, ok, err := s.GetAnswer(k)
				if err != nil || !ok || !bytes.Equal(got, v) {
					t.Errorf("%q: got %q %t %v", k, got, ok, err)
					return
				}
			}
		})
	})
	t.Run("Claims", func(t *testing.T) {
		s, ok := newStore(t).(gateway.AnswerClaimer)
		if !ok {
			t.Skip("not an AnswerClaimer (a store of one node)")
		}
		fpA, fpB := bytes.Repeat([]byte{0xaa}, 32), bytes.Repeat([]byte{0xbb}, 32)
		var wins atomic.Int32
		concurrently(50, func(int) {
			ok, holder, err := s.ClaimAnswer("i/k/key:d\x00x", fpA, time.Minute)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			} else if !bytes.Equal(holder, fpA) {
				t.Errorf("holder: got %x, want %x", holder, fpA)
			}
		})
		if wins.Load() != 1 {
			t.Fatalf("concurrent claims: %d won, want 1", wins.Load())
		}
		if ok, holder, err := s.ClaimAnswer("i/k/key:d\x00x", fpB, time.Minute); err != nil || ok || !bytes.Equal(holder, fpA) {
			t.Fatalf("another request's claim: got %t %x %v, want refused naming %x", ok, holder, err, fpA)
		}
		if err := s.ReleaseAnswer("i/k/key:d\x00x", fpB); err != nil { // not its claim: nothing changes
			t.Fatal(err)
		}
		if ok, _, _ := s.ClaimAnswer("i/k/key:d\x00x", fpB, time.Minute); ok {
			t.Fatal("a release by a non-holder freed the claim")
		}
		if err := s.ReleaseAnswer("i/k/key:d\x00x", fpA); err != nil {
			t.Fatal(err)
		}
		if ok, _, err := s.ClaimAnswer("i/k/key:d\x00x", fpB, 200*time.Millisecond); err != nil || !ok {
			t.Fatalf("claim after release: got %t %v, want taken", ok, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			ok, _, err := s.ClaimAnswer("i/k/key:d\x00x", fpA, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a claim with a 200 ms TTL still held after 5 s")
			}
			time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
		}
	})
	t.Run("FailureCounter", func(t *testing.T) {
		s, ok := newStore(t).(gateway.FailureCounter)
		if !ok {
			t.Skip("not a FailureCounter (a store of one node)")
		}
		failures := func(k string) int64 {
			t.Helper()
			n, err := s.Failures(k)
			if err != nil {
				t.Fatalf("Failures(%q): %v", k, err)
			}
			return n
		}
		if n := failures("signin-fails/192.0.2.1/1"); n != 0 {
			t.Fatalf("a key never counted: got %d, want 0", n)
		}
		const n = 50
		var seen [n + 1]atomic.Int32
		concurrently(n, func(int) {
			c, err := s.CountFailure("signin-fails/192.0.2.1/1", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if c < 1 || c > n {
				t.Errorf("CountFailure returned %d, want 1..%d", c, n)
				return
			}
			seen[c].Add(1)
		})
		for i := 1; i <= n; i++ {
			if seen[i].Load() != 1 {
				t.Fatalf("count %d returned %d times, want once (each failure counted once)", i, seen[i].Load())
			}
		}
		if got := failures("signin-fails/192.0.2.1/1"); got != n {
			t.Fatalf("after %d failures: got %d", n, got)
		}
		if got := failures("signin-fails/192.0.2.1/2"); got != 0 {
			t.Fatalf("another key: got %d, want 0", got)
		}
		if _, err := s.CountFailure("signin-fails/2001:db8::/3", time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CountFailure("signin-fails/2001:db8::/3", time.Hour); err != nil { // the first failure's TTL holds
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for failures("signin-fails/2001:db8::/3") != 0 {
			if time.Now().After(deadline) {
				t.Fatal("a count whose first failure had a 1 s TTL still there after 10 s")
			}
			time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
		}
	})
}
