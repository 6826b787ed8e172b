package identity

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// PrincipalKind says what identified a caller.
type PrincipalKind uint8

const (
	// KindNone: not identified.
	KindNone PrincipalKind = iota
	// KindKey: an API key ("key:<key_id>").
	KindKey
	// KindWallet: an x402 payer ("wallet:0x…", checksummed).
	KindWallet
	// KindOIDC: the subject of an OAuth 2.1 / OIDC access token from a
	// configured issuer ("oidc:<alias>:<sub>").
	KindOIDC
)

var kindPrefix = [...]string{KindNone: "", KindKey: "key:", KindWallet: "wallet:", KindOIDC: "oidc:"}

// Principal is who a call is for: its kind and id, printed as
// "key:<key_id>", "wallet:0x…" or "oidc:<alias>:<sub>" (the form of ledger
// records, metrics and the APIs). It is a value; the zero value is "not identified". This type
// is the one place principals are parsed and printed.
type Principal struct {
	Kind PrincipalKind
	ID   string // key id, checksummed wallet address, or "<alias>:<sub>"
	s    string // the printed form, kept so String never allocates
}

// KeyPrincipal is the principal of the API key with id.
func KeyPrincipal(id string) Principal { return Principal{Kind: KindKey, ID: id, s: "key:" + id} }

// WalletPrincipal is the principal of a wallet (checksummed address).
func WalletPrincipal(addr string) Principal {
	return Principal{Kind: KindWallet, ID: addr, s: "wallet:" + addr}
}

// OIDCPrincipal is the principal of the subject sub of the token issuer
// configured as alias. alias must be a valid alias (ValidAlias); sub is
// taken as written (the verifier bounds it, SubjectOK).
func OIDCPrincipal(alias, sub string) Principal {
	id := alias + ":" + sub
	return Principal{Kind: KindOIDC, ID: id, s: "oidc:" + id}
}

// OIDC returns the issuer alias and subject of an oidc principal; ok is
// false for other kinds.
func (p Principal) OIDC() (alias, sub string, ok bool) {
	if p.Kind != KindOIDC {
		return "", "", false
	}
	alias, sub, ok = strings.Cut(p.ID, ":")
	return alias, sub, ok
}

// MaxAlias bounds an issuer alias; MaxSubject a token subject.
const (
	MaxAlias   = 32
	MaxSubject = 255
)

// ValidAlias reports whether s can name an issuer in a principal: 1 to
// MaxAlias lowercase letters, digits, "_" or "-".
func ValidAlias(s string) bool {
	if len(s) == 0 || len(s) > MaxAlias {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// SubjectOK reports whether a token subject can be part of a principal:
// 1 to MaxSubject bytes of valid UTF-8 without control characters (a
// principal is a ledger index key and a log value).
func SubjectOK(s string) bool {
	if len(s) == 0 || len(s) > MaxSubject || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// String returns the printed form ("" when not identified).
func (p Principal) String() string { return p.s }

// IsZero reports whether p is "not identified".
func (p Principal) IsZero() bool { return p.Kind == KindNone }

// ErrPrincipal is returned by ParsePrincipal for a string that is not a
// principal.
var ErrPrincipal = errors.New("identity: not a principal (want key:<key_id>, wallet:0x… or oidc:<alias>:<sub>)")

// ParsePrincipal parses a printed principal. It checks the form, not that
// the key, wallet or subject exists; a wallet address is taken as written.
func ParsePrincipal(s string) (Principal, error) {
	for k := KindKey; k <= KindOIDC; k++ {
		id, ok := strings.CutPrefix(s, kindPrefix[k])
		if !ok || id == "" {
			continue
		}
		if k == KindOIDC {
			alias, sub, ok := strings.Cut(id, ":")
			if !ok || !ValidAlias(alias) || !SubjectOK(sub) {
				return Principal{}, ErrPrincipal
			}
		}
		return Principal{Kind: k, ID: id, s: s}, nil
	}
	return Principal{}, ErrPrincipal
}
