// Package jsonscan reads JSON text in one pass without reflection, for
// the fast paths of toolgate's hot decoders (x402 payment payloads, MCP
// JSON-RPC messages). It owns the grammar of the pieces those decoders
// share: whitespace, strings, literals, numbers and skipped values.
//
// It never decides that text is invalid: a method returning false means
// "not the fast path", and the caller falls back to encoding/json, whose
// rules are the reference (each decoder's fuzz test checks that both agree
// whenever the fast path answers). It does not allocate.
package jsonscan

import "strings"

// maxDepth bounds the nesting Skip walks; deeper text takes the fallback.
const maxDepth = 64

// Scanner walks B from I. The zero value with B set is ready to use.
type Scanner struct {
	B []byte
	I int
}

// WS passes over whitespace.
func (s *Scanner) WS() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Peek returns the next byte after whitespace (0 at the end).
func (s *Scanner) Peek() byte {
	s.WS()
	if s.I < len(s.B) {
		return s.B[s.I]
	}
	return 0
}

// Eat consumes c if it is the next byte after whitespace.
func (s *Scanner) Eat(c byte) bool {
	if s.Peek() == c {
		s.I++
		return true
	}
	return false
}

// End reports whether only whitespace is left.
func (s *Scanner) End() bool {
	s.WS()
	return s.I == len(s.B)
}

// Str reads a string without escapes, control or non-ASCII bytes (which
// encoding/json would unescape or validate) and returns its bytes,
// uncopied.
func (s *Scanner) Str() ([]byte, bool) {
	if !s.Eat('"') {
		return nil, false
	}
	start := s.I
	for s.I < len(s.B) {
		switch c := s.B[s.I]; {
		case c == '"':
			s.I++
			return s.B[start : s.I-1], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
		s.I++
	}
	return nil, false
}

// Lit consumes the literal w (true, false, null) after whitespace.
func (s *Scanner) Lit(w string) ([]byte, bool) {
	s.WS()
	if len(s.B)-s.I >= len(w) && string(s.B[s.I:s.I+len(w)]) == w {
		s.I += len(w)
		return s.B[s.I-len(w) : s.I], true
	}
	return nil, false
}

// Num reads a number (RFC 8259 grammar) at I.
func (s *Scanner) Num() ([]byte, bool) {
	start := s.I
	if s.I < len(s.B) && s.B[s.I] == '-' {
		s.I++
	}
	if s.I < len(s.B) && s.B[s.I] == '0' {
		s.I++
	} else if s.digits() == 0 {
		return nil, false
	}
	if s.I < len(s.B) && s.B[s.I] == '.' {
		s.I++
		if s.digits() == 0 {
			return nil, false
		}
	}
	if s.I < len(s.B) && (s.B[s.I] == 'e' || s.B[s.I] == 'E') {
		s.I++
		if s.I < len(s.B) && (s.B[s.I] == '+' || s.B[s.I] == '-') {
			s.I++
		}
		if s.digits() == 0 {
			return nil, false
		}
	}
	return s.B[start:s.I], true
}

func (s *Scanner) digits() int {
	n := 0
	for s.I < len(s.B) && '0' <= s.B[s.I] && s.B[s.I] <= '9' {
		s.I++
		n++
	}
	return n
}

// Skip passes over one value, nested at most maxDepth-depth deep, and
// returns its text. Strings inside it may hold escapes (checked as JSON
// allows them) and any other bytes: what encoding/json's scanner accepts.
func (s *Scanner) Skip(depth int) ([]byte, bool) {
	if depth > maxDepth {
		return nil, false
	}
	c := s.Peek()
	start := s.I
	switch {
	case c == '"':
		ok := s.rawStr()
		return s.B[start:s.I], ok
	case c == '{':
		s.I++
		if s.Eat('}') {
			return s.B[start:s.I], true
		}
		for {
			s.WS()
			if !s.rawStr() || !s.Eat(':') {
				return nil, false
			}
			if _, ok := s.Skip(depth + 1); !ok {
				return nil, false
			}
			if s.Eat('}') {
				return s.B[start:s.I], true
			}
			if !s.Eat(',') {
				return nil, false
			}
		}
	case c == '[':
		s.I++
		if s.Eat(']') {
			return s.B[start:s.I], true
		}
		for {
			if _, ok := s.Skip(depth + 1); !ok {
				return nil, false
			}
			if s.Eat(']') {
				return s.B[start:s.I], true
			}
			if !s.Eat(',') {
				return nil, false
			}
		}
	case c == 't':
		return s.Lit("true")
	case c == 'f':
		return s.Lit("false")
	case c == 'n':
		return s.Lit("null")
	case c == '-' || '0' <= c && c <= '9':
		return s.Num()
	}
	return nil, false
}

// rawStr passes over a string at I, escapes included.
func (s *Scanner) rawStr() bool {
	if s.I >= len(s.B) || s.B[s.I] != '"' {
		return false
	}
	s.I++
	for s.I < len(s.B) {
		c := s.B[s.I]
		switch {
		case c == '"':
			s.I++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.I+1 >= len(s.B) {
				return false
			}
			switch s.B[s.I+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.I += 2
				continue
			case 'u':
				if s.I+6 > len(s.B) {
					return false
				}
				for _, h := range s.B[s.I+2 : s.I+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				s.I += 6
				continue
			}
			return false
		}
		s.I++
	}
	return false
}

// FoldsTo reports whether key equals one of names ignoring case: a key
// encoding/json would take for that field, which a fast path matching
// exact names must leave to it.
func FoldsTo[K ~string | ~[]byte](key K, names ...string) bool {
	for _, n := range names {
		if len(n) == len(key) && strings.EqualFold(string(key), n) {
			return true
		}
	}
	return false
}
