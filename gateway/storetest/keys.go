package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
)

// KeyContract checks a KeyStore: create, authenticate, look up, list,
// expire and revoke.
func KeyContract(t *testing.T, newStore func(t *testing.T) gateway.KeyStore) {
	now := t0
	create := func(t *testing.T, s gateway.KeyStore, name string, expires time.Time, at ...time.Time) (string, *identity.Key) {
		t.Helper()
		created := now
		if len(at) > 0 {
			created = at[0]
		}
		secret, k, err := s.Create(name, expires, created)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if !identity.LooksLikeSecret([]byte(secret)) || k.ID == "" || k.Principal != "key:"+k.ID || k.Name != name {
			t.Fatalf("Create: got %q, %+v, want an it-… secret and key:<id>", secret, k)
		}
		return secret, k
	}
	t.Run("CreateAuthenticate", func(t *testing.T) {
		s := newStore(t)
		secret, k := create(t, s, "agent", time.Time{})
		got, ok := s.Authenticate([]byte(secret), now)
		if !ok || got.ID != k.ID {
			t.Fatalf("Authenticate: got %v, %t, want key %s", got, ok, k.ID)
		}
		if got, ok := s.Lookup(k.ID); !ok || got.ID != k.ID {
			t.Fatalf("Lookup by id: got %v, %t", got, ok)
		}
		if got, ok := s.Lookup(secret); !ok || got.ID != k.ID {
			t.Fatalf("Lookup by secret: got %v, %t", got, ok)
		}
		wrong := []byte(secret)
		wrong[len(wrong)-1] ^= 1
		if _, ok := s.Authenticate(wrong, now); ok {
			t.Fatal("Authenticate with a changed secret: got ok, want refused")
		}
		if _, ok := s.Lookup("k_none"); ok {
			t.Fatal("Lookup of an unknown id: got ok, want not found")
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		s := newStore(t)
		secret, k := create(t, s, "", time.Time{})
		other, _ := create(t, s, "", time.Time{})
		rk, err := s.Revoke(k.ID, now)
		if err != nil || rk.ID != k.ID || rk.RevokedAt().IsZero() {
			t.Fatalf("Revoke: got %+v, %v", rk, err)
		}
		if _, ok := s.Authenticate([]byte(secret), now); ok {
			t.Fatal("Authenticate after Revoke: got ok, want refused")
		}
		if got, ok := s.Lookup(k.ID); !ok || got.RevokedAt().IsZero() {
			t.Fatalf("Lookup after Revoke: got %+v, %t, want the revoked key", got, ok)
		}
		if _, err := s.Revoke(k.ID, now); !errors.Is(err, identity.ErrRevoked) {
			t.Fatalf("second Revoke: got %v, want ErrRevoked", err)
		}
		if _, ok := s.Authenticate([]byte(other), now); !ok {
			t.Fatal("another key after Revoke: got refused, want ok")
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		s := newStore(t)
		secret, _ := create(t, s, "", now.Add(time.Hour))
		if _, ok := s.Authenticate([]byte(secret), now.Add(59*time.Minute)); !ok {
			t.Fatal("before expiry: got refused, want ok")
		}
		if _, ok := s.Authenticate([]byte(secret), now.Add(61*time.Minute)); ok {
			t.Fatal("after expiry: got ok, want refused")
		}
	})
	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		var ids []string
		for i, name := range []string{"a", "b", "c"} {
			_, k := create(t, s, name, time.Time{}, now.Add(time.Duration(i)*time.Second))
			ids = append(ids, k.ID)
		}
		keys := s.List()
		if len(keys) != 3 {
			t.Fatalf("List: got %d keys, want 3", len(keys))
		}
		for i, k := range keys {
			if k.ID != ids[i] {
				t.Fatalf("List[%d]: got %s, want %s (oldest first)", i, k.ID, ids[i])
			}
		}
	})
}
