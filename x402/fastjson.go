package x402

import (
	"encoding/json"

	"github.com/toolgate/toolgate/jsonscan"
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
type scanner struct{ jsonscan.Scanner }

// str reads a string without escapes or non-ASCII bytes.
func (s *scanner) str() (string, bool) {
	b, ok := s.Str()
	return string(b), ok
}

// lit consumes a literal word such as null.
func (s *scanner) lit(word string) bool {
	_, ok := s.Lit(word)
	return ok
}

// integer reads a JSON integer that fits an int (no fraction, no exponent).
func (s *scanner) integer() (int, bool) {
	s.WS()
	j, neg := s.I, false
	if j < len(s.B) && s.B[j] == '-' {
		neg, j = true, j+1
	}
	start := j
	n := 0
	for j < len(s.B) && s.B[j] >= '0' && s.B[j] <= '9' {
		if j-start >= 15 {
			return 0, false
		}
		n = n*10 + int(s.B[j]-'0')
		j++
	}
	if j == start || (s.B[start] == '0' && j-start > 1) {
		return 0, false
	}
	if j < len(s.B) && (s.B[j] == '.' || s.B[j] == 'e' || s.B[j] == 'E') {
		return 0, false
	}
	s.I = j
	if neg {
		n = -n
	}
	return n, true
}

// skip consumes one value nested at most so deep.
func (s *scanner) skip(depth int) bool {
	_, ok := s.Skip(depth)
	return ok
}

// fields walks an object whose '{' was consumed, calling field for each
// key (positioned at its value). Duplicate keys leave the fast path.
func (s *scanner) fields(field func(key string) bool) bool {
	if s.Peek() == '}' {
		s.I++
		return true
	}
	var seenBuf [8]string
	seen := seenBuf[:0]
	for {
		key, ok := s.str()
		if !ok || s.Peek() != ':' {
			return false
		}
		for _, k := range seen {
			if k == key {
				return false
			}
		}
		seen = append(seen, key)
		s.I++
		if !field(key) {
			return false
		}
		switch s.Peek() {
		case ',':
			s.I++
		case '}':
			s.I++
			return true
		default:
			return false
		}
	}
}

func (s *scanner) stringField(dst *string) bool {
	if s.Peek() == 'n' {
		return s.lit("null") // encoding/json leaves a string unchanged on null
	}
	v, ok := s.str()
	*dst = v
	return ok
}

func (s *scanner) payment(raw []byte, w *wirePayment) bool {
	s.B, s.I = raw, 0
	if s.Peek() != '{' {
		return false
	}
	s.I++
	ok := s.fields(func(key string) bool {
		switch key {
		case "x402Version":
			if s.Peek() == 'n' {
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
			if s.Peek() == 'n' {
				return s.lit("null")
			}
			w.Accepted = new(Requirements)
			return s.requirements(w.Accepted)
		case "payload":
			if s.Peek() == 'n' {
				return s.lit("null")
			}
			w.Payload = new(wireExact)
			return s.exact(w.Payload)
		}
		if jsonscan.FoldsTo(key, "x402Version", "scheme", "network", "accepted", "payload") {
			return false
		}
		return s.skip(1)
	})
	if !ok {
		return false
	}
	s.WS()
	return s.I == len(s.B)
}

func (s *scanner) requirements(r *Requirements) bool {
	if s.Peek() != '{' {
		return false
	}
	s.I++
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
			if s.Peek() == 'n' {
				return s.lit("null")
			}
			v, ok := s.integer()
			r.MaxTimeoutSeconds = v
			return ok
		case "extra":
			s.WS()
			start := s.I
			if !s.skip(2) {
				return false
			}
			r.Extra = append(json.RawMessage(nil), s.B[start:s.I]...)
			return true
		}
		if jsonscan.FoldsTo(key, "scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra") {
			return false
		}
		return s.skip(2)
	})
}

func (s *scanner) exact(e *wireExact) bool {
	if s.Peek() != '{' {
		return false
	}
	s.I++
	return s.fields(func(key string) bool {
		switch key {
		case "signature":
			return s.stringField(&e.Signature)
		case "authorization":
			if s.Peek() == 'n' {
				return s.lit("null")
			}
			e.Authorization = new(wireAuthz)
			return s.authz(e.Authorization)
		}
		if jsonscan.FoldsTo(key, "signature", "authorization", "permit2Authorization") {
			// An upto (Permit2) payload takes encoding/json.
			return false
		}
		return s.skip(2)
	})
}

func (s *scanner) authz(a *wireAuthz) bool {
	if s.Peek() != '{' {
		return false
	}
	s.I++
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
		if jsonscan.FoldsTo(key, "from", "to", "value", "validAfter", "validBefore", "nonce") {
			return false
		}
		return s.skip(3)
	})
}
