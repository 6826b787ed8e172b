package gateway

import (
	"encoding/json"

	"github.com/toolgate/toolgate/jsonscan"
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

// parseRPC is the fast path of decodeRPC: an object whose keys appear at
// most once, "jsonrpc", "method" strings, "id" a string or number, and
// "params" an object whose known keys have the types mcpParams reads.
// Unknown keys are skipped. It reports false, with m in any state, for
// anything else.
func parseRPC(b []byte, m *rpcMessage) bool {
	*m = rpcMessage{}
	s := jsonscan.Scanner{B: b}
	if !s.Eat('{') {
		return false
	}
	seen := 0
	if !s.Eat('}') {
		for {
			k, ok := s.Str()
			if !ok || !s.Eat(':') {
				return false
			}
			var bit int
			switch string(k) {
			case "jsonrpc":
				v, ok := s.Str()
				if !ok {
					return false
				}
				m.JSONRPC, bit = string(v), 1
			case "method":
				v, ok := s.Str()
				if !ok {
					return false
				}
				m.Method, bit = string(v), 2
			case "id":
				c := s.Peek()
				if c != '"' && c != '-' && (c < '0' || c > '9') {
					return false
				}
				v, ok := s.Skip(0)
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
				if jsonscan.FoldsTo(k, "jsonrpc", "method", "id", "params", "result", "error") {
					return false // encoding/json matches keys case-insensitively
				}
				if _, ok := s.Skip(0); !ok {
					return false
				}
			}
			if bit != 0 {
				if seen&bit != 0 {
					return false // duplicate key: encoding/json decides
				}
				seen |= bit
			}
			if s.Eat('}') {
				break
			}
			if !s.Eat(',') {
				return false
			}
		}
	}
	return s.End()
}

// parseParams reads a params object into p.
func parseParams(s *jsonscan.Scanner, p *rpcParams) bool {
	if s.Peek() != '{' {
		return false
	}
	s.I++
	p.present, p.ok = true, true
	if s.Eat('}') {
		return true
	}
	seen := 0
	for {
		k, ok := s.Str()
		if !ok || !s.Eat(':') {
			return false
		}
		bit := 0
		switch string(k) {
		case "name", "uri", "protocolVersion":
			v, ok := s.Str()
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
			v, ok := s.Skip(0)
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
			if jsonscan.FoldsTo(k, "name", "uri", "protocolVersion", "arguments", "_meta") {
				return false
			}
			if _, ok := s.Skip(0); !ok {
				return false
			}
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if s.Eat('}') {
			return true
		}
		if !s.Eat(',') {
			return false
		}
	}
}

// metaIdempotencyKey is the _meta key of a key caller's idempotency key
// (mcpreplay.go).
const metaIdempotencyKey = "toolgate/idempotency-key"

// parseMeta reads params._meta into mm.
func parseMeta(s *jsonscan.Scanner, mm *mcpMeta) bool {
	if !s.Eat('{') {
		return false
	}
	if s.Eat('}') {
		return true
	}
	for {
		k, ok := s.Str()
		if !ok || !s.Eat(':') {
			return false
		}
		switch string(k) {
		case metaProtocolVersion:
			v, ok := s.Str()
			if !ok || mm.ProtocolVersion != nil {
				return false
			}
			pv := string(v)
			mm.ProtocolVersion = &pv
		case metaClientCapabilities, "x402/payment":
			v, ok := s.Skip(0)
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
			v, ok := s.Skip(0)
			if !ok || mm.IdempotencyKey != nil {
				return false
			}
			mm.IdempotencyKey = json.RawMessage(v)
		default:
			if jsonscan.FoldsTo(k, metaProtocolVersion, metaClientCapabilities, "x402/payment", metaIdempotencyKey) {
				return false
			}
			if _, ok := s.Skip(0); !ok {
				return false
			}
		}
		if s.Eat('}') {
			return true
		}
		if !s.Eat(',') {
			return false
		}
	}
}
