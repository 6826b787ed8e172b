package identity

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
)

// errFastPath says a stored key is not in the exact form put writes, so
// decodeStored falls back to encoding/json.
var errFastPath = errors.New("identity: not the stored form")

// decodeStored decodes the stored JSON of one key (put's json.Marshal of
// storedKey) into k. Loading a million keys at start is dominated by
// decoding, so the form put writes - fields in struct order, strings
// without escapes, times as RFC 3339 - is read by hand; anything else
// (an escape, another field order, an older row) goes through
// encoding/json, so every row json.Unmarshal accepts is still accepted
// with the same meaning.
func decodeStored(v []byte, k *Key) error {
	if err := decodeFast(v, k); err == nil {
		return nil
	}
	var sk storedKey
	if err := json.Unmarshal(v, &sk); err != nil {
		return err
	}
	h, err := hex.DecodeString(sk.HashHex)
	if err != nil || len(h) != 32 {
		return errBadDigest
	}
	*k = Key{ID: sk.ID, Name: sk.Name, Hint: sk.Hint,
		created: unixOf(sk.CreatedAt), expires: unixOf(sk.ExpiresAt), revoked: unixOf(sk.RevokedAt)}
	copy(k.Hash[:], h)
	return nil
}

var errBadDigest = errors.New("bad digest")

// decodeFast reads exactly `{"key_id":S,["name":S,]"key":S,"created_at":T,
// ["expires_at":T,]["revoked_at":T,]"sha256":H}`, with S strings without
// a backslash, T RFC 3339 times and H 64 hex digits; errFastPath for
// anything else.
func decodeFast(v []byte, k *Key) error {
	var f storedFields
	if err := parseFast(v, &f); err != nil {
		return err
	}
	// One allocation for the principal ("key:" + id, whose tail is the
	// ID), the name and the hint: a million keys live in memory.
	var sb strings.Builder
	sb.Grow(len("key:") + len(f.id) + len(f.name) + len(f.hint))
	sb.WriteString("key:")
	sb.Write(f.id)
	sb.Write(f.name)
	sb.Write(f.hint)
	str := sb.String()
	p4 := len("key:") + len(f.id)
	*k = Key{ID: str[len("key:"):p4], Principal: str[:p4], Name: str[p4 : p4+len(f.name)],
		Hint: str[p4+len(f.name):], Hash: f.hash, created: f.created, expires: f.expires, revoked: f.revoked}
	return nil
}

// storedFields are a stored key's fields as parseFast reads them; the
// strings alias the row.
type storedFields struct {
	id, name, hint            []byte
	created, expires, revoked int64
	hash                      [32]byte
}

// parseFast is decodeFast without making the strings.
func parseFast(v []byte, f *storedFields) error {
	p := fastParser{b: v}
	p.lit(`{"key_id":`)
	id := p.str()
	var name []byte
	if p.peek(`,"name":`) {
		p.lit(`,"name":`)
		name = p.str()
	}
	p.lit(`,"key":`)
	hint := p.str()
	p.lit(`,"created_at":`)
	created := p.time()
	var expires, revoked int64
	if p.peek(`,"expires_at":`) {
		p.lit(`,"expires_at":`)
		expires = p.time()
	}
	if p.peek(`,"revoked_at":`) {
		p.lit(`,"revoked_at":`)
		revoked = p.time()
	}
	p.lit(`,"sha256":`)
	digest := p.str()
	p.lit(`}`)
	if p.bad || len(p.b) != 0 || len(digest) != 64 {
		return errFastPath
	}
	*f = storedFields{id: id, name: name, hint: hint, created: created, expires: expires, revoked: revoked}
	if _, err := hex.Decode(f.hash[:], digest); err != nil {
		return errFastPath
	}
	return nil
}

type fastParser struct {
	b   []byte
	bad bool
}

func (p *fastParser) peek(s string) bool { return !p.bad && bytes.HasPrefix(p.b, []byte(s)) }

func (p *fastParser) lit(s string) {
	if !p.peek(s) {
		p.bad = true
		return
	}
	p.b = p.b[len(s):]
}

// str reads a JSON string without escapes or control bytes.
func (p *fastParser) str() []byte {
	if p.bad || len(p.b) == 0 || p.b[0] != '"' {
		p.bad = true
		return nil
	}
	end := bytes.IndexByte(p.b[1:], '"')
	if end < 0 {
		p.bad = true
		return nil
	}
	s := p.b[1 : 1+end]
	for _, c := range s {
		if c == '\\' || c < 0x20 {
			p.bad = true
			return nil
		}
	}
	if !utf8.Valid(s) { // encoding/json would replace the bad bytes
		p.bad = true
		return nil
	}
	p.b = p.b[2+end:]
	return s
}

// time reads a JSON string holding an RFC 3339 time, as Unix seconds
// (what Key keeps).
func (p *fastParser) time() int64 {
	s := p.str()
	if p.bad {
		return 0
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	if err != nil {
		p.bad = true
		return 0
	}
	return unixOf(t)
}
