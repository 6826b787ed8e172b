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
	"errors"
	"time"
)

// Errors returned by the Store, compared with errors.Is.
var (
	ErrNotFound = errors.New("identity: no such key")
	ErrRevoked  = errors.New("identity: key already revoked")
)

// SecretPrefix starts every API key secret.
const SecretPrefix = "it-"

// secretBytes is the entropy of a secret: 160 bits, 32 base32 characters.
const secretBytes = 20

// Secret lengths accepted by ParseSecret: "it-" + 8 groups of 4 + 7 dashes.
const secretLen = len(SecretPrefix) + 32 + 7

var b32 = base32.NewEncoding("ABCDEFGHJKLMNPQRSTUVWXYZ23456789").WithPadding(base32.NoPadding)

// Key is one API key's public record. Keys held by the Store are
// immutable; changes replace the whole value.
type Key struct {
	ID        string    `json:"key_id"`
	Name      string    `json:"name,omitempty"`
	Hint      string    `json:"key"` // masked secret, e.g. "it-7K3M…"
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Hash      [32]byte  `json:"-"`

	// Principal is "key:<ID>", precomputed for the hot path.
	Principal string `json:"-"`
}

// Active reports whether the key authenticates at now.
func (k *Key) Active(now time.Time) bool {
	return k.RevokedAt.IsZero() && (k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt))
}

// Status names the key's state at now: "active", "revoked" or "expired".
func (k *Key) Status(now time.Time) string {
	switch {
	case !k.RevokedAt.IsZero():
		return "revoked"
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return "expired"
	}
	return "active"
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
	for i, c := range s[len(SecretPrefix):] {
		if i%5 == 4 {
			if c != '-' {
				return false
			}
			continue
		}
		if !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '9') {
			return false
		}
	}
	return true
}

// Credential extracts an API key from the X-API-Key header or from an
// "Authorization: Bearer it-…" header. present reports whether the request
// tried to present a key at all (a non-empty X-API-Key, or a Bearer token
// starting with "it-"); the returned secret may still be malformed.
// It does not allocate; secret aliases the input.
func Credential(xAPIKey, authorization []byte) (secret []byte, present bool) {
	if len(xAPIKey) > 0 {
		return xAPIKey, true
	}
	const bearer = "Bearer "
	if len(authorization) > len(bearer) && equalFoldASCII(authorization[:len(bearer)], bearer) {
		tok := authorization[len(bearer):]
		for len(tok) > 0 && tok[0] == ' ' {
			tok = tok[1:]
		}
		if len(tok) >= len(SecretPrefix) && string(tok[:len(SecretPrefix)]) == SecretPrefix {
			return tok, true
		}
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
