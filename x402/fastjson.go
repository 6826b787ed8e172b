package x402

import (
	"encoding/json"
	"strings"
)

// decodeWire fills w from raw JSON. The common shape of a payment payload
// (ASCII strings without escapes, each known field once, right types) is
// decoded by a small single-pass scanner; anything else — escapes,
// non-ASCII, duplicate or differently-cased field names, wrong types,
// syntax errors — goes to encoding/json, which then decides (and words the
// error). The two agree on every input the fast path accepts
// (FuzzDecodeWire checks it).
func decodeWire(raw []byte, w *wirePayment) error {
	var s scanner
	if s.payment(raw, w) {
		return nil
	}
	*w = wirePayment{}
	return json.Unmarshal(raw, w)
}

// scanner decodes the fast path; any method returning false means "not the
// fast path", never "invalid" — the caller falls back.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str reads a string without escapes or non-ASCII bytes.
func (s *scanner) str() (string, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		switch {
		case c == '"':
			s.i = j + 1
			return string(s.b[start:j]), true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", false
		}
	}
	return "", false
}

// lit consumes a literal word such as null.
func (s *scanner) lit(word string) bool {
	s.ws()
	if !strings.HasPrefix(string(s.b[s.i:min(len(s.b), s.i+len(word))]), word) {
		return false
	}
	s.i += len(word)
	return true
}

func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// integer reads a JSON integer that fits an int (no fraction, no exponent).
func (s *scanner) integer() (int, bool) {
	s.ws()
	j, neg := s.i, false
	if j < len(s.b) && s.b[j] == '-' {
		neg, j = true, j+1
	}
	start := j
	n := 0
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		if j-start >= 15 {
			return 0, false
		}
		n = n*10 + int(s.b[j]-'0')
		j++
	}
	if j == start || (s.b[start] == '0' && j-start > 1) {
		return 0, false
	}
	if j < len(s.b) && (s.b[j] == '.' || s.b[j] == 'e' || s.b[j] == 'E') {
		return 0, false
	}
	s.i = j
	if neg {
		n = -n
	}
	return n, true
}

// skip consumes any JSON value the fast path can vouch for.
func (s *scanner) skip(depth int) bool {
	if depth > 32 {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{':
		s.i++
		return s.fields(func(string) bool { return s.skip(depth + 1) })
	case c == '[':
		s.i++
		if s.peek() == ']' {
			s.i++
			return true
		}
		for {
			if !s.skip(depth + 1) {
				return false
			}
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return false
}

// number consumes a JSON number (grammar checked).
func (s *scanner) number() bool {
	j := s.i
	if j < len(s.b) && s.b[j] == '-' {
		j++
	}
	digits := func() int {
		k := j
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
		return j - k
	}
	start := j
	n := digits()
	if n == 0 || (n > 1 && s.b[start] == '0') {
		return false
	}
	if j < len(s.b) && s.b[j] == '.' {
		j++
		if digits() == 0 {
			return false
		}
	}
	if j < len(s.b) && (s.b[j] == 'e' || s.b[j] == 'E') {
		j++
		if j < len(s.b) && (s.b[j] == '+' || s.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return false
		}
	}
	s.i = j
	return true
}

// fields walks an object whose '{' was consumed, calling field for each
// key (positioned at its value). Duplicate keys leave the fast path.
func (s *scanner) fields(field func(key string) bool) bool {
	if s.peek() == '}' {
		s.i++
		return true
	}
	var seenBuf [8]string
	seen := seenBuf[:0]
	for {
		key, ok := s.str()
		if !ok || s.peek() != ':' {
			return false
		}
		for _, k := range seen {
			if k == key {
				return false
			}
		}
		seen = append(seen, key)
		s.i++
		if !field(key) {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// known reports whether key is one of names, or differs from one only by
// case (encoding/json would match it case-insensitively).
func foldsTo(key string, names ...string) bool {
	for _, n := range names {
		if strings.EqualFold(key, n) {
			return true
		}
	}
	return false
}

func (s *scanner) stringField(dst *string) bool {
	if s.peek() == 'n' {
		return s.lit("null") // encoding/json leaves a string unchanged on null
	}
	v, ok := s.str()
	*dst = v
	return ok
}

func (s *scanner) payment(raw []byte, w *wirePayment) bool {
	s.b, s.i = raw, 0
	if s.peek() != '{' {
		return false
	}
	s.i++
	ok := s.fields(func(key string) bool {
		switch key {
		case "x402Version":
			if s.peek() == 'n' {
				return s.lit("null")
			}
			v, ok := s.integer()
			w.X402Version = &v
			return ok
		case "scheme":
			return s.stringField(&w.Scheme)
		case "network":
			return s.stringField(&w.Network)
		case "accepted":
			if s.peek() == 'n' {
				return s.lit("null")
			}
			w.Accepted = new(Requirements)
			return s.requirements(w.Accepted)
		case "payload":
			if s.peek() == 'n' {
				return s.lit("null")
			}
			w.Payload = new(wireExact)
			return s.exact(w.Payload)
		}
		if foldsTo(key, "x402Version", "scheme", "network", "accepted", "payload") {
			return false
		}
		return s.skip(1)
	})
	if !ok {
		return false
	}
	s.ws()
	return s.i == len(s.b)
}

func (s *scanner) requirements(r *Requirements) bool {
	if s.peek() != '{' {
		return false
	}
	s.i++
	return s.fields(func(key string) bool {
		switch key {
		case "scheme":
			return s.stringField(&r.Scheme)
		case "network":
			return s.stringField(&r.Network)
		case "amount":
			return s.stringField(&r.Amount)
		case "asset":
			return s.stringField(&r.Asset)
		case "payTo":
			return s.stringField(&r.PayTo)
		case "maxTimeoutSeconds":
			if s.peek() == 'n' {
				return s.lit("null")
			}
			v, ok := s.integer()
			r.MaxTimeoutSeconds = v
			return ok
		case "extra":
			s.ws()
			start := s.i
			if !s.skip(2) {
				return false
			}
			r.Extra = append(json.RawMessage(nil), s.b[start:s.i]...)
			return true
		}
		if foldsTo(key, "scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra") {
			return false
		}
		return s.skip(2)
	})
}

func (s *scanner) exact(e *wireExact) bool {
	if s.peek() != '{' {
		return false
	}
	s.i++
	return s.fields(func(key string) bool {
		switch key {
		case "signature":
			return s.stringField(&e.Signature)
		case "authorization":
			if s.peek() == 'n' {
				return s.lit("null")
			}
			e.Authorization = new(wireAuthz)
			return s.authz(e.Authorization)
		}
		if foldsTo(key, "signature", "authorization", "permit2Authorization") {
			// An upto (Permit2) payload takes encoding/json.
			return false
		}
		return s.skip(2)
	})
}

func (s *scanner) authz(a *wireAuthz) bool {
	if s.peek() != '{' {
		return false
	}
	s.i++
	return s.fields(func(key string) bool {
		switch key {
		case "from":
			return s.stringField(&a.From)
		case "to":
			return s.stringField(&a.To)
		case "value":
			return s.stringField(&a.Value)
		case "validAfter":
			return s.stringField(&a.ValidAfter)
		case "validBefore":
			return s.stringField(&a.ValidBefore)
		case "nonce":
			return s.stringField(&a.Nonce)
		}
		if foldsTo(key, "from", "to", "value", "validAfter", "validBefore", "nonce") {
			return false
		}
		return s.skip(3)
	})
}
