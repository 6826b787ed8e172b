// Package identity owns API keys: their generation, hashed storage in
// badger (prefix "k/"), and the in-memory index that authenticates a
// presented secret without touching the store.
//
// Secrets are shown once at creation and never stored: the store and the
// index hold only SHA-256 digests. Keys are named in URLs, logs and the
// ledger by their public key_id. The package knows nothing of policies,
// quotas or HTTP.
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// Errors returned by the Store, compared with errors.Is.
var (
	ErrNotFound = errors.New("identity: no such key")
	ErrRevoked  = errors.New("identity: key already revoked")
	ErrConflict = errors.New("identity: another key has this id")
)

// SecretPrefix starts every API key secret.
const SecretPrefix = "it-"

// secretBytes is the entropy of a secret: 160 bits, 32 base32 characters.
const secretBytes = 20

// Secret lengths accepted by ParseSecret: "it-" + 8 groups of 4 + 7 dashes.
const secretLen = len(SecretPrefix) + 32 + 7

var b32 = base32.NewEncoding("ABCDEFGHJKLMNPQRSTUVWXYZ23456789").WithPadding(base32.NoPadding)

// Key is one API key's public record. Keys held by the Store are
// immutable; changes replace the whole value. Times have second precision
// and are kept as Unix seconds (a million keys live in memory).
type Key struct {
	ID   string
	Name string
	Hint string // masked secret, e.g. "it-7K3M…"
	Hash [32]byte

	// Principal is "key:<ID>", precomputed for the hot path (see Who).
	Principal string

	created, expires, revoked int64 // Unix seconds; 0 = unset
}

func unixTime(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

// CreatedAt returns when the key was made.
func (k *Key) CreatedAt() time.Time { return unixTime(k.created) }

// ExpiresAt returns when the key stops working; zero if never.
func (k *Key) ExpiresAt() time.Time { return unixTime(k.expires) }

// RevokedAt returns when the key was revoked; zero if it was not.
func (k *Key) RevokedAt() time.Time { return unixTime(k.revoked) }

// Active reports whether the key authenticates at now.
func (k *Key) Active(now time.Time) bool {
	return k.revoked == 0 && (k.expires == 0 || now.Unix() < k.expires)
}

// Status names the key's state at now: "active", "revoked" or "expired".
func (k *Key) Status(now time.Time) string {
	switch {
	case k.revoked != 0:
		return "revoked"
	case k.expires != 0 && now.Unix() >= k.expires:
		return "expired"
	}
	return "active"
}

// keyJSON is a key as stored and as shown: never the secret.
type keyJSON struct {
	ID        string    `json:"key_id"`
	Name      string    `json:"name,omitempty"`
	Hint      string    `json:"key"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

func (k *Key) toJSON() keyJSON {
	return keyJSON{ID: k.ID, Name: k.Name, Hint: k.Hint, CreatedAt: k.CreatedAt(), ExpiresAt: k.ExpiresAt(), RevokedAt: k.RevokedAt()}
}

// MarshalJSON writes the key's public fields: key_id, name, the masked
// key, created_at, and expires_at / revoked_at when set.
func (k *Key) MarshalJSON() ([]byte, error) { return json.Marshal(k.toJSON()) }

// Record is a key as it is copied between stores (a cluster's shared
// copy and each node's): every public field and the secret's digest,
// never the secret.
type Record struct {
	keyJSON
	HashHex string `json:"sha256"`
}

// Record returns k's record.
func (k *Key) Record() Record {
	return Record{keyJSON: k.toJSON(), HashHex: hex.EncodeToString(k.Hash[:])}
}

// Revoked returns the record with the key revoked at t.
func (r Record) Revoked(t time.Time) Record {
	r.RevokedAt = t.UTC().Truncate(time.Second)
	return r
}

// Key returns the key the record describes; an error when its digest is
// not 32 bytes of hex or its id is empty.
func (r Record) Key() (*Key, error) {
	h, err := hex.DecodeString(r.HashHex)
	if err != nil || len(h) != 32 || r.ID == "" {
		return nil, errors.New("identity: bad key record")
	}
	k := &Key{ID: r.ID, Name: r.Name, Hint: r.Hint, Principal: "key:" + r.ID,
		created: unixOf(r.CreatedAt), expires: unixOf(r.ExpiresAt), revoked: unixOf(r.RevokedAt)}
	copy(k.Hash[:], h)
	return k, nil
}

func unixOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// NewSecret returns a fresh secret ("it-XXXX-XXXX-…", 160 bits from
// crypto/rand) and its SHA-256 digest.
func NewSecret() (string, [32]byte) {
	var raw [secretBytes]byte
	rand.Read(raw[:]) // never fails (crypto/rand panics on broken entropy)
	enc := b32.EncodeToString(raw[:])
	buf := make([]byte, 0, secretLen)
	buf = append(buf, SecretPrefix...)
	for i := 0; i < len(enc); i += 4 {
		if i > 0 {
			buf = append(buf, '-')
		}
		buf = append(buf, enc[i:i+4]...)
	}
	return string(buf), sha256.Sum256(buf)
}

// Fingerprint returns a short public fingerprint of a key's digest (16
// hex digits of SHA-256 over a fixed label and the digest), recorded in
// the ledger so that a damaged or swapped digest row is detected. It
// cannot authenticate (that needs the secret), and since a secret holds
// 160 random bits it does not help anyone find one.
func Fingerprint(digest [32]byte) string {
	h := sha256.New()
	h.Write([]byte("toolgate/identity/key-fingerprint/v1\x00"))
	h.Write(digest[:])
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func newKeyID() string {
	var raw [10]byte
	rand.Read(raw[:])
	return "k_" + b32.EncodeToString(raw[:])
}

// LooksLikeSecret reports whether s has the shape of an API key secret.
// It does not allocate and says nothing about whether the key exists.
func LooksLikeSecret(s []byte) bool {
	if len(s) != secretLen || string(s[:len(SecretPrefix)]) != SecretPrefix {
		return false
	}
	// Eight groups of four base32 characters, dash-separated: checked a
	// group at a time against a table (on every API-key call).
	b := s[len(SecretPrefix):]
	for len(b) > 4 {
		if !secretChar[b[0]] || !secretChar[b[1]] || !secretChar[b[2]] || !secretChar[b[3]] || b[4] != '-' {
			return false
		}
		b = b[5:]
	}
	return len(b) == 4 && secretChar[b[0]] && secretChar[b[1]] && secretChar[b[2]] && secretChar[b[3]]
}

// secretChar marks the characters of a secret's groups (RFC 4648 base32).
var secretChar = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '2'; c <= '9'; c++ {
		t[c] = true
	}
	return t
}()

// Credential extracts an API key from the X-API-Key header or from an
// "Authorization: Bearer it-…" header. present reports whether the request
// tried to present a key at all (a non-empty X-API-Key, or a Bearer token
// starting with "it-"); the returned secret may still be malformed.
// It does not allocate; secret aliases the input.
func Credential(xAPIKey, authorization []byte) (secret []byte, present bool) {
	if len(xAPIKey) > 0 {
		return xAPIKey, true
	}
	if form, tok := Bearer(authorization); form == BearerAPIKey {
		return tok, true
	}
	return nil, false
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Who returns the key's principal, without allocating.
func (k *Key) Who() Principal { return Principal{Kind: KindKey, ID: k.ID, s: k.Principal} }
