package gateway

import (
	"encoding/json"
	"strings"
)

// decodeRPC decodes one JSON-RPC message into m: the common shape of a
// request in one pass without reflection (parseRPC), anything else with
// encoding/json, whose rules are the reference (FuzzDecodeRPC checks that
// both agree whenever the fast path answers).
func decodeRPC(body []byte, m *rpcMessage) error {
	if parseRPC(body, m) {
		return nil
	}
	*m = rpcMessage{}
	return json.Unmarshal(body, m)
}

// jsonScanner walks JSON text. Its methods return false on anything the
// fast path does not handle (escapes in strings it must read, invalid
// text): the caller then falls back.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jsonScanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes or control bytes and returns its
// bytes (no copy).
func (s *jsonScanner) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			return nil, false // leave UTF-8 validation to encoding/json
		}
		s.i++
	}
	return nil, false
}

// rawStr passes over a string, escapes included (checked as JSON
// allows them), as encoding/json's scanner does.
func (s *jsonScanner) rawStr() bool {
	if !s.eat('"') {
		return false
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
				continue
			case 'u':
				if s.i+6 > len(s.b) {
					return false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				s.i += 6
				continue
			}
			return false
		}
		s.i++
	}
	return false
}

// skip passes over one value and returns its text.
func (s *jsonScanner) skip(depth int) ([]byte, bool) {
	if depth > 64 {
		return nil, false
	}
	c := s.peek()
	start := s.i
	switch {
	case c == '"':
		ok := s.rawStr()
		return s.b[start:s.i], ok
	case c == '{':
		s.i++
		if s.eat('}') {
			return s.b[start:s.i], true
		}
		for {
			if !s.rawStr() || !s.eat(':') {
				return nil, false
			}
			if _, ok := s.skip(depth + 1); !ok {
				return nil, false
			}
			if s.eat('}') {
				return s.b[start:s.i], true
			}
			if !s.eat(',') {
				return nil, false
			}
		}
	case c == '[':
		s.i++
		if s.eat(']') {
			return s.b[start:s.i], true
		}
		for {
			if _, ok := s.skip(depth + 1); !ok {
				return nil, false
			}
			if s.eat(']') {
				return s.b[start:s.i], true
			}
			if !s.eat(',') {
				return nil, false
			}
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || '0' <= c && c <= '9':
		return s.num()
	}
	return nil, false
}

func (s *jsonScanner) lit(w string) ([]byte, bool) {
	if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return s.b[s.i-len(w) : s.i], true
	}
	return nil, false
}

// num reads a JSON number (RFC 8259 grammar).
func (s *jsonScanner) num() ([]byte, bool) {
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if digits() == 0 {
		return nil, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return nil, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	return s.b[start:s.i], true
}

// parseRPC is the fast path of decodeRPC: an object whose keys appear at
// most once, "jsonrpc", "method" strings, "id" a string or number, and
// "params" an object whose known keys have the types mcpParams reads.
// Unknown keys are skipped. It reports false, with m in any state, for
// anything else.
func parseRPC(b []byte, m *rpcMessage) bool {
	*m = rpcMessage{}
	s := jsonScanner{b: b}
	if !s.eat('{') {
		return false
	}
	seen := 0
	if !s.eat('}') {
		for {
			k, ok := s.str()
			if !ok || !s.eat(':') {
				return false
			}
			var bit int
			switch string(k) {
			case "jsonrpc":
				v, ok := s.str()
				if !ok {
					return false
				}
				m.JSONRPC, bit = string(v), 1
			case "method":
				v, ok := s.str()
				if !ok {
					return false
				}
				m.Method, bit = string(v), 2
			case "id":
				c := s.peek()
				if c != '"' && c != '-' && (c < '0' || c > '9') {
					return false
				}
				v, ok := s.skip(0)
				if !ok {
					return false
				}
				m.ID, bit = json.RawMessage(v), 4
			case "params":
				if !parseParams(&s, &m.Params) {
					return false
				}
				bit = 8
			case "result", "error":
				return false
			default:
				if foldsTo(k, "jsonrpc", "method", "id", "params", "result", "error") {
					return false // encoding/json matches keys case-insensitively
				}
				if _, ok := s.skip(0); !ok {
					return false
				}
			}
			if bit != 0 {
				if seen&bit != 0 {
					return false // duplicate key: encoding/json decides
				}
				seen |= bit
			}
			if s.eat('}') {
				break
			}
			if !s.eat(',') {
				return false
			}
		}
	}
	s.ws()
	return s.i == len(s.b)
}

// parseParams reads a params object into p.
func parseParams(s *jsonScanner, p *rpcParams) bool {
	if s.peek() != '{' {
		return false
	}
	s.i++
	p.present, p.ok = true, true
	if s.eat('}') {
		return true
	}
	seen := 0
	for {
		k, ok := s.str()
		if !ok || !s.eat(':') {
			return false
		}
		bit := 0
		switch string(k) {
		case "name", "uri", "protocolVersion":
			v, ok := s.str()
			if !ok {
				return false
			}
			switch string(k) {
			case "name":
				p.Name, bit = string(v), 1
			case "uri":
				p.URI, bit = string(v), 2
			default:
				p.ProtocolVersion, bit = string(v), 4
			}
		case "arguments":
			v, ok := s.skip(0)
			if !ok {
				return false
			}
			p.Arguments, bit = json.RawMessage(v), 8
		case "_meta":
			if !parseMeta(s, &p.Meta) {
				return false
			}
			bit = 16
		default:
			if foldsTo(k, "name", "uri", "protocolVersion", "arguments", "_meta") {
				return false
			}
			if _, ok := s.skip(0); !ok {
				return false
			}
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if s.eat('}') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}

// metaIdempotencyKey is the _meta key of a key caller's idempotency key
// (mcpreplay.go).
const metaIdempotencyKey = "toolgate/idempotency-key"

// parseMeta reads params._meta into mm.
func parseMeta(s *jsonScanner, mm *mcpMeta) bool {
	if !s.eat('{') {
		return false
	}
	if s.eat('}') {
		return true
	}
	for {
		k, ok := s.str()
		if !ok || !s.eat(':') {
			return false
		}
		switch string(k) {
		case metaProtocolVersion:
			v, ok := s.str()
			if !ok || mm.ProtocolVersion != nil {
				return false
			}
			pv := string(v)
			mm.ProtocolVersion = &pv
		case metaClientCapabilities, "x402/payment":
			v, ok := s.skip(0)
			if !ok || string(v) == "null" {
				return false
			}
			if string(k) == metaClientCapabilities {
				if mm.ClientCapabilities != nil {
					return false
				}
				mm.ClientCapabilities = json.RawMessage(v)
			} else {
				if mm.Payment != nil {
					return false
				}
				mm.Payment = json.RawMessage(v)
			}
		case metaIdempotencyKey:
			v, ok := s.skip(0)
			if !ok || mm.IdempotencyKey != nil {
				return false
			}
			mm.IdempotencyKey = json.RawMessage(v)
		default:
			if foldsTo(k, metaProtocolVersion, metaClientCapabilities, "x402/payment", metaIdempotencyKey) {
				return false
			}
			if _, ok := s.skip(0); !ok {
				return false
			}
		}
		if s.eat('}') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}

// foldsTo reports whether k equals one of names ignoring case (encoding/json
// would take it for that field).
func foldsTo(k []byte, names ...string) bool {
	for _, n := range names {
		if len(n) == len(k) && strings.EqualFold(string(k), n) {
			return true
		}
	}
	return false
}
