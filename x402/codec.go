package x402

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum/common"
)

// MaxHeaderSize is the largest payment header Decode accepts, in bytes of
// base64 text.
const MaxHeaderSize = 16 << 10

// ErrMalformed is wrapped by every Decode error: the header is not an x402
// payment at all (the gateway answers 400). The wrapping text says why.
var ErrMalformed = errors.New("x402: malformed payment header")

// MalformedReason returns what Decode found wrong, in words fit for the
// payer ("not base64", "x402Version missing"): the error without its
// package prefix. Decode's errors never quote internal error text.
func MalformedReason(err error) string {
	s := err.Error()
	if r, ok := strings.CutPrefix(s, ErrMalformed.Error()+": "); ok {
		return r
	}
	return "malformed payment header"
}

// Payment is a decoded payment header. It is a plain value owned by the
// caller; Decode never retains the input slice.
type Payment struct {
	// Version is the payload's x402Version (1 or 2).
	Version int
	// Scheme and Network are what the client says it paid with: the
	// top-level fields in v1, accepted.scheme and accepted.network in v2.
	Scheme, Network string
	// Accepted is the v2 `accepted` requirements echoed by the client
	// (zero in v1).
	Accepted Requirements
	// Authorization is the EIP-3009 message of an exact payment, Permit2
	// that of an upto payment (scheme "upto"), and Signature the payer's
	// signature of the one the scheme uses.
	Authorization Authorization
	Permit2       Permit2Authorization
	Signature     []byte
	// Raw is the decoded JSON payload verbatim, forwarded to a facilitator
	// as paymentPayload.
	Raw json.RawMessage

	// problem is the first defect of the exact-EVM payload, reported by
	// Verify as an invalid payment (402) rather than a malformed header.
	problem string
}

// Decode decodes a PAYMENT-SIGNATURE (version 2) or X-PAYMENT (version 1)
// header value; version 0 accepts either. The value is standard base64
// (raw standard and URL alphabets are tolerated) of a JSON payload of at
// most MaxHeaderSize bytes. JSON syntax and field types are strict;
// unknown fields are ignored. Defects in the header's shape return an error
// wrapping ErrMalformed; defects in the authorization's contents (bad
// nonce length, bad address, missing signature) decode fine and make Verify
// return an invalid result. Decode is safe for concurrent use.
func Decode(header []byte, version int) (*Payment, error) {
	header = bytes.TrimSpace(header)
	if len(header) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(header) > MaxHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(header), MaxHeaderSize)
	}
	raw, err := decodeBase64(header)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrMalformed)
	}
	return DecodeJSON(raw, version)
}

// DecodeJSON decodes a payment payload given as JSON rather than as a
// header (x402 over MCP carries it in params._meta["x402/payment"]); the
// rules are Decode's. raw is kept (Payment.Raw) and must not be modified.
func DecodeJSON(raw []byte, version int) (*Payment, error) {
	if len(raw) > MaxHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(raw), MaxHeaderSize)
	}
	var w wirePayment
	if err := decodeWire(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: payload is not valid json", ErrMalformed)
	}
	if w.X402Version == nil {
		return nil, fmt.Errorf("%w: x402Version missing", ErrMalformed)
	}
	p := &Payment{Version: *w.X402Version, Raw: raw}
	switch p.Version {
	case 1:
		if w.Scheme == "" || w.Network == "" {
			return nil, fmt.Errorf("%w: v1 payload needs scheme and network", ErrMalformed)
		}
		p.Scheme, p.Network = w.Scheme, w.Network
	case 2:
		if w.Accepted == nil {
			return nil, fmt.Errorf("%w: v2 payload needs accepted", ErrMalformed)
		}
		p.Accepted = *w.Accepted
		p.Scheme, p.Network = w.Accepted.Scheme, w.Accepted.Network
	default:
		return nil, fmt.Errorf("%w: unsupported x402Version %d", ErrMalformed, p.Version)
	}
	if version != 0 && version != p.Version {
		return nil, fmt.Errorf("%w: x402Version %d payload in a v%d header", ErrMalformed, p.Version, version)
	}
	if w.Payload == nil {
		return nil, fmt.Errorf("%w: payload missing", ErrMalformed)
	}
	if p.Scheme == SchemeUpto {
		p.problem = p.decodeUpto(w.Payload)
	} else {
		p.problem = p.decodeExact(w.Payload)
	}
	return p, nil
}

func decodeBase64(src []byte) ([]byte, error) {
	dst := make([]byte, base64.RawStdEncoding.DecodedLen(len(src))+3)
	for _, enc := range [...]*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if n, err := enc.Strict().Decode(dst, src); err == nil {
			return dst[:n], nil
		}
	}
	return nil, errors.New("base64")
}

// decodeExact fills the EIP-3009 fields and returns the x402 reason of the
// first defect, or "".
func (p *Payment) decodeExact(w *wireExact) string {
	if w.Authorization == nil {
		return ReasonInvalidPayload
	}
	a := w.Authorization
	var ok bool
	if p.Authorization.From, ok = parseAddress(a.From); !ok {
		return ReasonInvalidPayload
	}
	if p.Authorization.To, ok = parseAddress(a.To); !ok {
		return ReasonInvalidPayload
	}
	if !parseUint256(&p.Authorization.Value, a.Value) ||
		!parseUint256(&p.Authorization.ValidAfter, a.ValidAfter) ||
		!parseUint256(&p.Authorization.ValidBefore, a.ValidBefore) {
		return ReasonInvalidPayload
	}
	n, ok := parseHex(a.Nonce)
	if !ok || len(n) != 32 {
		return ReasonInvalidPayload
	}
	copy(p.Authorization.Nonce[:], n)
	if w.Signature == "" {
		return ReasonMissingSignature
	}
	if p.Signature, ok = parseHex(w.Signature); !ok || len(p.Signature) == 0 {
		return ReasonSignatureFormat
	}
	return ""
}

// decodeUpto fills the Permit2 fields of an upto payload and returns the
// x402 reason of the first defect, or "".
func (p *Payment) decodeUpto(w *wireExact) string {
	a := w.Permit2Authorization
	if a == nil || a.Permitted == nil || a.Witness == nil {
		return ReasonUptoPayload
	}
	m := &p.Permit2
	var ok bool
	for _, f := range [...]struct {
		dst *common.Address
		s   string
	}{{&m.From, a.From}, {&m.Token, a.Permitted.Token}, {&m.Spender, a.Spender}, {&m.To, a.Witness.To}, {&m.Facilitator, a.Witness.Facilitator}} {
		if *f.dst, ok = parseAddress(f.s); !ok {
			return ReasonUptoPayload
		}
	}
	if !parseUint256(&m.Amount, a.Permitted.Amount) || !parseUint256(&m.Deadline, a.Deadline) ||
		!parseUint256(&m.ValidAfter, a.Witness.ValidAfter) {
		return ReasonUptoPayload
	}
	if strings.HasPrefix(a.Nonce, "0x") || strings.HasPrefix(a.Nonce, "0X") {
		// The spec's examples write the nonce in hex; the reference client in decimal.
		n, ok := parseHex(a.Nonce)
		if !ok || len(n) == 0 || len(n) > 32 {
			return ReasonUptoPayload
		}
		m.Nonce.SetBytes(n)
	} else if !parseUint256(&m.Nonce, a.Nonce) {
		return ReasonUptoPayload
	}
	if w.Signature == "" {
		return ReasonMissingSignature
	}
	if p.Signature, ok = parseHex(w.Signature); !ok || len(p.Signature) == 0 {
		return ReasonSignatureFormat
	}
	return ""
}

func parseAddress(s string) (common.Address, bool) {
	if len(s) != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return common.Address{}, false
	}
	var a common.Address
	if _, err := hex.Decode(a[:], []byte(s[2:])); err != nil {
		return common.Address{}, false
	}
	return a, true
}

func parseHex(s string) ([]byte, bool) {
	if len(s) < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') || len(s)%2 != 0 {
		return nil, false
	}
	b, err := hex.DecodeString(s[2:])
	return b, err == nil
}

// parseUint256 reads a canonical decimal uint256 ("0" or no leading zero).
func parseUint256(z interface{ SetFromDecimal(string) error }, s string) bool {
	if s == "" || len(s) > 78 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return z.SetFromDecimal(s) == nil
}

// AppendSettleResponse appends the base64 PAYMENT-RESPONSE (v2) or
// X-PAYMENT-RESPONSE (v1) header value for r.
func AppendSettleResponse(dst []byte, r SettleResponse) []byte {
	raw := mustJSON(r)
	return base64.StdEncoding.AppendEncode(dst, raw)
}
