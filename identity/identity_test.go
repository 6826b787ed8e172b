package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func openDB(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestNewSecret(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		s, h := NewSecret()
		if !LooksLikeSecret([]byte(s)) {
			t.Fatalf("secret %q does not look like a secret", s)
		}
		if h != sha256.Sum256([]byte(s)) {
			t.Fatal("digest is not SHA-256 of the secret")
		}
		if seen[s] {
			t.Fatalf("duplicate secret %q", s)
		}
		seen[s] = true
	}
}

func TestCredential(t *testing.T) {
	tests := []struct {
		name, xkey, auth, want string
		present                bool
	}{
		{"XAPIKey", "it-ABC", "", "it-ABC", true},
		{"XAPIKeyWins", "it-A", "Bearer it-B", "it-A", true},
		{"Bearer", "", "Bearer it-B", "it-B", true},
		{"BearerCase", "", "bearer   it-B", "it-B", true},
		{"OtherBearer", "", "Bearer sk-123", "", false},
		{"Basic", "", "Basic Zm9vOmJhcg==", "", false},
		{"None", "", "", "", false},
		{"GarbageXAPIKey", "garbage", "", "garbage", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, present := Credential([]byte(tt.xkey), []byte(tt.auth))
			if string(got) != tt.want || present != tt.present {
				t.Fatalf("got %q, %v; want %q, %v", got, present, tt.want, tt.present)
			}
		})
	}
}

func TestStore_Lifecycle(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	secret, k, err := s.Create("agent", now.Add(time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		got, ok := s.Authenticate([]byte(secret), now)
		if !ok || got.ID != k.ID || got.Principal != "key:"+k.ID {
			t.Fatalf("got %v %v", got, ok)
		}
	})
	t.Run("Expired", func(t *testing.T) {
		if _, ok := s.Authenticate([]byte(secret), now.Add(time.Hour)); ok {
			t.Fatal("expired key authenticated")
		}
	})
	t.Run("WrongSecret", func(t *testing.T) {
		other, _ := NewSecret()
		if _, ok := s.Authenticate([]byte(other), now); ok {
			t.Fatal("unknown secret authenticated")
		}
	})
	t.Run("LookupBySecretAndID", func(t *testing.T) {
		a, ok1 := s.Lookup(secret)
		b, ok2 := s.Lookup(k.ID)
		if !ok1 || !ok2 || a.ID != k.ID || b.ID != k.ID {
			t.Fatal("lookup failed")
		}
	})
	t.Run("NoSecretAtRest", func(t *testing.T) {
		db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.DefaultIteratorOptions)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				v, _ := it.Item().ValueCopy(nil)
				if strings.Contains(string(v), secret[3:]) || strings.Contains(string(it.Item().Key()), secret[3:]) {
					t.Fatalf("secret stored at rest under %q", it.Item().Key())
				}
			}
			return nil
		})
		b, _ := json.Marshal(k)
		if strings.Contains(string(b), secret[8:]) {
			t.Fatalf("key JSON reveals the secret: %s", b)
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		if _, err := s.Revoke(k.ID, now); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.Authenticate([]byte(secret), now); ok {
			t.Fatal("revoked key authenticated")
		}
		if _, err := s.Revoke(k.ID, now); err != ErrRevoked {
			t.Fatalf("second revoke: got %v, want ErrRevoked", err)
		}
		if _, err := s.Revoke("k_missing", now); err != ErrNotFound {
			t.Fatalf("revoke missing: got %v, want ErrNotFound", err)
		}
	})
	t.Run("SurvivesReopen", func(t *testing.T) {
		secret2, k2, _ := s.Create("second", time.Time{}, now)
		db.Close()
		db2 := openDB(t, dir)
		defer db2.Close()
		s2, err := Open(db2)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := s2.Authenticate([]byte(secret2), now.Add(1000*time.Hour)); !ok || got.ID != k2.ID {
			t.Fatal("key lost across reopen")
		}
		if _, ok := s2.Authenticate([]byte(secret), now); ok {
			t.Fatal("revocation lost across reopen")
		}
		if s2.Len() != 2 {
			t.Fatalf("Len: got %d, want 2", s2.Len())
		}
	})
}

func TestStore_ConcurrentCreateAuthenticate(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	s, _ := Open(db)
	now := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				sec, k, err := s.Create("", time.Time{}, now)
				if err != nil {
					t.Error(err)
					return
				}
				if got, ok := s.Authenticate([]byte(sec), now); !ok || got.ID != k.ID {
					t.Error("fresh key did not authenticate")
				}
			}
		}()
	}
	wg.Wait()
	if s.Len() != 400 {
		t.Fatalf("Len: got %d, want 400", s.Len())
	}
}

func FuzzCredential(f *testing.F) {
	f.Add([]byte("it-ABCD"), []byte("Bearer it-X"))
	f.Add([]byte(""), []byte("bearer "))
	f.Add([]byte(""), []byte("Bearer"))
	f.Fuzz(func(t *testing.T, xkey, auth []byte) {
		sec, present := Credential(xkey, auth)
		if !present && sec != nil {
			t.Fatal("secret without presence")
		}
		LooksLikeSecret(sec)
	})
}

func FuzzLooksLikeSecret(f *testing.F) {
	s, _ := NewSecret()
	f.Add(s)
	f.Add("it-")
	f.Fuzz(func(t *testing.T, s string) {
		if LooksLikeSecret([]byte(s)) && (!strings.HasPrefix(s, "it-") || len(s) != secretLen) {
			t.Fatalf("%q accepted", s)
		}
	})
}

func TestBearer(t *testing.T) {
	cases := []struct {
		in   string
		form BearerForm
		tok  string
	}{
		{"", BearerNone, ""},
		{"Basic abc", BearerNone, ""},
		{"Bearer ", BearerNone, ""},
		{"Bearer    ", BearerNone, ""},
		{"Bearer it-ABCD-EFGH", BearerAPIKey, "it-ABCD-EFGH"},
		{"bearer   it-x ", BearerAPIKey, "it-x"},
		{"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", BearerJWT, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"},
		{"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", BearerJWT, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."},
		{"Bearer a..c", BearerOpaque, "a..c"},
		{"Bearer .b.c", BearerOpaque, ".b.c"},
		{"Bearer a.b.c.d", BearerOpaque, "a.b.c.d"},
		{"Bearer a+b.c.d", BearerOpaque, "a+b.c.d"},
		{"Bearer a.b+c.d", BearerJWT, "a.b+c.d"}, // only the header part is checked here; decoding refuses the rest
		{"Bearer admin-token-123", BearerOpaque, "admin-token-123"},
	}
	for _, tc := range cases {
		form, tok := Bearer([]byte(tc.in))
		if form != tc.form || string(tok) != tc.tok {
			t.Errorf("Bearer(%q) = %s %q, want %s %q", tc.in, form, tok, tc.form, tc.tok)
		}
	}
}

// FuzzBearer: the one bearer classifier never panics, returns a token
// that is part of its input, and agrees with Credential on API keys.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer it-ABCD", "Bearer a.b.c", "Bearer a.b.", "bearer x", "Bearer  eyJ.eyJ.sig ", "Basic x", "Bearer ..."} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, auth []byte) {
		form, tok := Bearer(auth)
		if form == BearerNone {
			if tok != nil {
				t.Fatalf("no bearer but token %q", tok)
			}
		} else if len(tok) == 0 || !bytes.Contains(auth, tok) {
			t.Fatalf("token %q not in %q", tok, auth)
		}
		if form == BearerJWT && bytes.Count(tok, []byte{'.'}) != 2 {
			t.Fatalf("JWT %q without two dots", tok)
		}
		_, isKey := Credential(nil, auth)
		if isKey != (form == BearerAPIKey) {
			t.Fatalf("Credential says key %v, Bearer says %s", isKey, form)
		}
	})
}

func TestParsePrincipal_OIDC(t *testing.T) {
	p := OIDCPrincipal("corp", "user:42/x")
	back, err := ParsePrincipal(p.String())
	if err != nil || back != p || back.String() != "oidc:corp:user:42/x" {
		t.Fatalf("round trip %v %v", back, err)
	}
	alias, sub, ok := back.OIDC()
	if !ok || alias != "corp" || sub != "user:42/x" {
		t.Fatalf("OIDC() = %q %q %v", alias, sub, ok)
	}
	for _, bad := range []string{"oidc:", "oidc:corp", "oidc:corp:", "oidc:Corp:x", "oidc:c:a\x00b", "oidc::x"} {
		if _, err := ParsePrincipal(bad); err == nil {
			t.Errorf("ParsePrincipal(%q) accepted", bad)
		}
	}
}

// looksLikeSecretSpec is LooksLikeSecret written as the shape reads: the
// prefix, then at every fifth position a dash, elsewhere A-Z or 2-9.
func looksLikeSecretSpec(s []byte) bool {
	if len(s) != secretLen || !strings.HasPrefix(string(s), SecretPrefix) {
		return false
	}
	for i, c := range s[len(SecretPrefix):] {
		if i%5 == 4 {
			if c != '-' {
				return false
			}
		} else if !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '9') {
			return false
		}
	}
	return true
}

func TestLooksLikeSecret_Shape(t *testing.T) {
	s, _ := NewSecret()
	if !LooksLikeSecret([]byte(s)) {
		t.Fatalf("%q refused", s)
	}
	// Every byte value at every position of a valid secret, and every
	// length around it: the table-driven check agrees with the shape.
	for i := 0; i < len(s); i++ {
		for c := 0; c < 256; c++ {
			b := []byte(s)
			b[i] = byte(c)
			if got, want := LooksLikeSecret(b), looksLikeSecretSpec(b); got != want {
				t.Fatalf("%q: got %v, want %v", b, got, want)
			}
		}
	}
	for n := 0; n < 2*secretLen; n++ {
		b := []byte(strings.Repeat(s, 2)[:n])
		if got, want := LooksLikeSecret(b), looksLikeSecretSpec(b); got != want {
			t.Fatalf("%q: got %v, want %v", b, got, want)
		}
	}
}
