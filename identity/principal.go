package identity

import (
	"errors"
	"strings"
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
)

var kindPrefix = [...]string{KindNone: "", KindKey: "key:", KindWallet: "wallet:"}

// Principal is who a call is for: its kind and id, printed as
// "key:<key_id>" or "wallet:0x…" (the form of ledger records, metrics and
// the APIs). It is a value; the zero value is "not identified". This type
// is the one place principals are parsed and printed.
type Principal struct {
	Kind PrincipalKind
	ID   string // key id, or checksummed wallet address
	s    string // the printed form, kept so String never allocates
}

// KeyPrincipal is the principal of the API key with id.
func KeyPrincipal(id string) Principal { return Principal{Kind: KindKey, ID: id, s: "key:" + id} }

// WalletPrincipal is the principal of a wallet (checksummed address).
func WalletPrincipal(addr string) Principal {
	return Principal{Kind: KindWallet, ID: addr, s: "wallet:" + addr}
}

// String returns the printed form ("" when not identified).
func (p Principal) String() string { return p.s }

// IsZero reports whether p is "not identified".
func (p Principal) IsZero() bool { return p.Kind == KindNone }

// ErrPrincipal is returned by ParsePrincipal for a string that is not a
// principal.
var ErrPrincipal = errors.New("identity: not a principal (want key:<key_id> or wallet:0x…)")

// ParsePrincipal parses a printed principal. It checks the form, not that
// the key or wallet exists; a wallet address is taken as written.
func ParsePrincipal(s string) (Principal, error) {
	for k := KindKey; k <= KindWallet; k++ {
		if id, ok := strings.CutPrefix(s, kindPrefix[k]); ok && id != "" {
			return Principal{Kind: k, ID: id, s: s}, nil
		}
	}
	return Principal{}, ErrPrincipal
}
