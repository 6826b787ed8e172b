package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/toolgate/toolgate/money"
)

// Record types.
const (
	TypeCall = "call" // a tool call decision (tool_metrics)
	TypeTxn  = "txn"  // a money movement (transactions)
	// TypeAdmin is a management change: a key created, revoked or
	// expired, an override put or deleted. Principal is its subject,
	// Kind what happened, Actor who did it and State the subject's state
	// after it (never a secret).
	TypeAdmin = "admin"
)

// Call outcomes (Record.Outcome for TypeCall).
const (
	OutcomeAllowed             = "allowed"
	OutcomeDenied              = "denied"
	OutcomeQuotaExceeded       = "quota_exceeded"
	OutcomeSpendCapExceeded    = "spend_cap_exceeded"
	OutcomeInsufficientCredits = "insufficient_credits"
	OutcomeUnauthenticated     = "unauthenticated"
	OutcomePaymentRequired     = "payment_required"
	OutcomePaymentInvalid      = "payment_invalid"
	OutcomeSettleFailed        = "settle_failed"
	OutcomeUpstreamError       = "upstream_error"
	OutcomeUnknownTool         = "unknown_tool"
	OutcomeMethodNotAllowed    = "method_not_allowed"
	OutcomeStoreUnavailable    = "store_unavailable"
	OutcomePaymentUnavailable  = "payment_unavailable"
)

// Transaction kinds (Record.Kind for TypeTxn).
const (
	KindDebit          = "debit"
	KindTopup          = "topup"
	KindX402Settlement = "x402_settlement"
)

// Admin change kinds (Record.Kind for TypeAdmin).
const (
	KindKeyCreated    = "key_created"
	KindKeyRevoked    = "key_revoked"
	KindKeyExpired    = "key_expired"
	KindPolicyPut     = "policy_put"
	KindPolicyDeleted = "policy_deleted"
)

// Record is one ledger entry: a tool call (Type "call"), a money movement
// (Type "txn") or a management change (Type "admin"). Append assigns Seq, Prev and Hash, and At when it is zero;
// after Append the record belongs to the ledger and must not be modified.
//
// A Record has no field for secrets: API keys, admin tokens and payment
// signatures must never be put in any of its strings (Reason included),
// because every record is kept forever and exported.
//
// Amounts are integer micro-USD. In JSON they are written as integers
// (cost_micros, amount_micros, balance_after_micros), never in dollars.
type Record struct {
	Seq               uint64       `json:"seq"`
	Type              string       `json:"type"`
	At                time.Time    `json:"at"`
	RequestID         string       `json:"request_id,omitempty"`
	Principal         string       `json:"principal,omitempty"` // "key:<id>", "wallet:0x…", "" when unidentified
	Tier              string       `json:"tier,omitempty"`
	Tool              string       `json:"tool,omitempty"`
	RateClass         string       `json:"rate_class,omitempty"`
	Outcome           string       `json:"outcome,omitempty"`
	Reason            string       `json:"reason,omitempty"`
	Status            int          `json:"status,omitempty"`
	Cost              money.Micros `json:"cost_micros"`
	SpendDay          string       `json:"spend_day,omitempty"` // civil date the cost counts toward, "2026-11-26"
	LatencyUS         int64        `json:"latency_us,omitempty"`
	UpstreamStatus    int          `json:"upstream_status,omitempty"`
	UpstreamLatencyUS int64        `json:"upstream_latency_us,omitempty"`
	Payment           *Payment     `json:"payment,omitempty"`

	// Transaction fields.
	Kind         string        `json:"kind,omitempty"` // debit, topup, x402_settlement
	Amount       money.Micros  `json:"amount_micros,omitempty"`
	BalanceAfter *money.Micros `json:"balance_after_micros,omitempty"`
	Payer        string        `json:"payer,omitempty"`
	Network      string        `json:"network,omitempty"`
	TxHash       string        `json:"tx_hash,omitempty"`

	// Actor says who made a management change or top-up ("admin@<addr>",
	// "toolgate audit rebuild-state", …).
	Actor string `json:"actor,omitempty"`
	// State is, for admin records, the subject's state after the change:
	// one compact JSON object (valid UTF-8, no insignificant whitespace).
	State json.RawMessage `json:"state,omitempty"`
	// Protocol is the front end a call came through when it is not REST
	// ("mcp"); "" for REST.
	Protocol string `json:"protocol,omitempty"`
	// TokenID and ClientID are, for a call made with an OAuth access
	// token, its "jti" and "client_id" (or "azp") claims; never the token.
	TokenID  string `json:"jti,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	// Node names the cluster node that wrote the record ("" in single-node
	// mode); it is part of the hashed bytes, so a record cannot be moved
	// to another node's chain unnoticed.
	Node string `json:"node,omitempty"`

	Prev string `json:"prev"` // hex SHA-256 of the previous record; 64 zeros for seq 1
	Hash string `json:"hash"` // hex SHA-256(prev bytes || canonical bytes)
}

// Payment is the summary of an x402 payment kept with a call record. It
// deliberately has no field for the signature.
type Payment struct {
	Version int          `json:"version"`
	Scheme  string       `json:"scheme,omitempty"`
	Network string       `json:"network,omitempty"`
	Payer   string       `json:"payer,omitempty"`
	Amount  money.Micros `json:"amount_micros"`
	Nonce   string       `json:"nonce,omitempty"`
}

// ErrInvalidRecord is returned (through Ticket.Wait) for a record Append
// cannot store: unknown Type, an At outside the years 1678–2261, a NUL
// byte in Principal, Outcome or Tool (they are index key parts), or a
// State that is not one compact JSON object.
var ErrInvalidRecord = errors.New("ledger: invalid record")

var zeroHash [32]byte

// normalize prepares r for hashing: At in UTC without monotonic reading,
// strings valid UTF-8 (so the JSON round trip is exact).
func (r *Record) normalize() error {
	if r.Type != TypeCall && r.Type != TypeTxn && r.Type != TypeAdmin {
		return fmt.Errorf("%w: type %q", ErrInvalidRecord, r.Type)
	}
	if len(r.State) > 0 && !compactObject(r.State) {
		return fmt.Errorf("%w: state is not one compact JSON object", ErrInvalidRecord)
	}
	if strings.IndexByte(r.Principal, 0) >= 0 || strings.IndexByte(r.Outcome, 0) >= 0 || strings.IndexByte(r.Tool, 0) >= 0 {
		return fmt.Errorf("%w: NUL byte in principal, outcome or tool", ErrInvalidRecord)
	}
	r.At = r.At.UTC()
	if !time.Unix(0, r.At.UnixNano()).Equal(r.At) {
		return fmt.Errorf("%w: at %s out of range", ErrInvalidRecord, r.At)
	}
	for _, s := range []*string{&r.RequestID, &r.Principal, &r.Tier, &r.Tool, &r.RateClass,
		&r.Outcome, &r.Reason, &r.SpendDay, &r.Kind, &r.Payer, &r.Network, &r.TxHash, &r.Actor, &r.Protocol, &r.TokenID, &r.ClientID, &r.Node} {
		if !utf8.ValidString(*s) {
			*s = strings.ToValidUTF8(*s, "\uFFFD")
		}
	}
	if p := r.Payment; p != nil {
		for _, s := range []*string{&p.Scheme, &p.Network, &p.Payer, &p.Nonce} {
			if !utf8.ValidString(*s) {
				*s = strings.ToValidUTF8(*s, "\uFFFD")
			}
		}
	}
	return nil
}

// appendCanonical appends the canonical bytes of r: a JSON object with the
// fields in declaration order, zero-valued optional fields omitted, amounts
// as integer micros, At as RFC 3339 UTC with nanoseconds (trailing zeros
// trimmed), and without prev and hash. It is the byte string the hash
// covers.
func (r *Record) appendCanonical(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = appendStr(b, `,"type":`, r.Type)
	b = append(b, `,"at":"`...)
	b = r.At.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendOptStr(b, `,"request_id":`, r.RequestID)
	b = appendOptStr(b, `,"principal":`, r.Principal)
	b = appendOptStr(b, `,"tier":`, r.Tier)
	b = appendOptStr(b, `,"tool":`, r.Tool)
	b = appendOptStr(b, `,"rate_class":`, r.RateClass)
	b = appendOptStr(b, `,"outcome":`, r.Outcome)
	b = appendOptStr(b, `,"reason":`, r.Reason)
	b = appendOptInt(b, `,"status":`, int64(r.Status))
	b = append(b, `,"cost_micros":`...)
	b = strconv.AppendInt(b, int64(r.Cost), 10)
	b = appendOptStr(b, `,"spend_day":`, r.SpendDay)
	b = appendOptInt(b, `,"latency_us":`, r.LatencyUS)
	b = appendOptInt(b, `,"upstream_status":`, int64(r.UpstreamStatus))
	b = appendOptInt(b, `,"upstream_latency_us":`, r.UpstreamLatencyUS)
	if p := r.Payment; p != nil {
		b = append(b, `,"payment":{"version":`...)
		b = strconv.AppendInt(b, int64(p.Version), 10)
		b = appendOptStr(b, `,"scheme":`, p.Scheme)
		b = appendOptStr(b, `,"network":`, p.Network)
		b = appendOptStr(b, `,"payer":`, p.Payer)
		b = append(b, `,"amount_micros":`...)
		b = strconv.AppendInt(b, int64(p.Amount), 10)
		b = appendOptStr(b, `,"nonce":`, p.Nonce)
		b = append(b, '}')
	}
	b = appendOptStr(b, `,"kind":`, r.Kind)
	b = appendOptInt(b, `,"amount_micros":`, int64(r.Amount))
	if r.BalanceAfter != nil {
		b = append(b, `,"balance_after_micros":`...)
		b = strconv.AppendInt(b, int64(*r.BalanceAfter), 10)
	}
	b = appendOptStr(b, `,"payer":`, r.Payer)
	b = appendOptStr(b, `,"network":`, r.Network)
	b = appendOptStr(b, `,"tx_hash":`, r.TxHash)
	b = appendOptStr(b, `,"actor":`, r.Actor)
	if len(r.State) > 0 {
		b = append(b, `,"state":`...)
		b = append(b, r.State...)
	}
	b = appendOptStr(b, `,"protocol":`, r.Protocol)
	b = appendOptStr(b, `,"jti":`, r.TokenID)
	b = appendOptStr(b, `,"client_id":`, r.ClientID)
	b = appendOptStr(b, `,"node":`, r.Node)
	return append(b, '}')
}

// compactObject reports whether s is one JSON object, valid UTF-8,
// without insignificant whitespace: the only form State may take, so
// that the canonical bytes are what any reader re-derives.
func compactObject(s []byte) bool {
	if len(s) < 2 || s[0] != '{' || !utf8.Valid(s) || !json.Valid(s) {
		return false
	}
	var b bytes.Buffer
	if err := json.Compact(&b, s); err != nil {
		return false
	}
	return bytes.Equal(b.Bytes(), s)
}

// AppendJSON appends r as one JSON object: the canonical bytes with prev
// and hash added at the end. It is the form stored, exported and served.
func (r *Record) AppendJSON(b []byte) []byte {
	b = r.appendCanonical(b)
	b = b[:len(b)-1]
	b = appendStr(b, `,"prev":`, r.Prev)
	b = appendStr(b, `,"hash":`, r.Hash)
	return append(b, '}')
}

// appendJSONHashes is AppendJSON with prev and hash given in binary.
func (r *Record) appendJSONHashes(b []byte, prev, hash *[32]byte) []byte {
	b = r.appendCanonical(b)
	b = append(b[:len(b)-1], `,"prev":"`...)
	b = hex.AppendEncode(b, prev[:])
	b = append(b, `","hash":"`...)
	b = hex.AppendEncode(b, hash[:])
	return append(b, `"}`...)
}

// MarshalJSON writes r as AppendJSON does.
func (r *Record) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil), nil }

// wireRecord decodes a Record with amounts as plain integers.
type wireRecord struct {
	Seq               uint64          `json:"seq"`
	Type              string          `json:"type"`
	At                time.Time       `json:"at"`
	RequestID         string          `json:"request_id"`
	Principal         string          `json:"principal"`
	Tier              string          `json:"tier"`
	Tool              string          `json:"tool"`
	RateClass         string          `json:"rate_class"`
	Outcome           string          `json:"outcome"`
	Reason            string          `json:"reason"`
	Status            int             `json:"status"`
	Cost              int64           `json:"cost_micros"`
	SpendDay          string          `json:"spend_day"`
	LatencyUS         int64           `json:"latency_us"`
	UpstreamStatus    int             `json:"upstream_status"`
	UpstreamLatencyUS int64           `json:"upstream_latency_us"`
	Payment           *wirePayment    `json:"payment"`
	Kind              string          `json:"kind"`
	Amount            int64           `json:"amount_micros"`
	BalanceAfter      *int64          `json:"balance_after_micros"`
	Payer             string          `json:"payer"`
	Network           string          `json:"network"`
	TxHash            string          `json:"tx_hash"`
	Actor             string          `json:"actor"`
	State             json.RawMessage `json:"state"`
	Protocol          string          `json:"protocol"`
	TokenID           string          `json:"jti"`
	ClientID          string          `json:"client_id"`
	Node              string          `json:"node"`
	Prev              string          `json:"prev"`
	Hash              string          `json:"hash"`
}

type wirePayment struct {
	Version int    `json:"version"`
	Scheme  string `json:"scheme"`
	Network string `json:"network"`
	Payer   string `json:"payer"`
	Amount  int64  `json:"amount_micros"`
	Nonce   string `json:"nonce"`
}

// UnmarshalJSON reads the form MarshalJSON writes (amounts as integer
// micros).
func (r *Record) UnmarshalJSON(data []byte) error {
	var w wireRecord
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*r = Record{
		Seq: w.Seq, Type: w.Type, At: w.At.UTC(), RequestID: w.RequestID, Principal: w.Principal,
		Tier: w.Tier, Tool: w.Tool, RateClass: w.RateClass, Outcome: w.Outcome, Reason: w.Reason,
		Status: w.Status, Cost: money.Micros(w.Cost), SpendDay: w.SpendDay, LatencyUS: w.LatencyUS,
		UpstreamStatus: w.UpstreamStatus, UpstreamLatencyUS: w.UpstreamLatencyUS,
		Kind: w.Kind, Amount: money.Micros(w.Amount), Payer: w.Payer, Network: w.Network,
		TxHash: w.TxHash, Actor: w.Actor, Protocol: w.Protocol, TokenID: w.TokenID, ClientID: w.ClientID, Node: w.Node, Prev: w.Prev, Hash: w.Hash,
	}
	if len(w.State) > 0 && string(w.State) != "null" {
		r.State = append(json.RawMessage(nil), w.State...)
	}
	if p := w.Payment; p != nil {
		r.Payment = &Payment{Version: p.Version, Scheme: p.Scheme, Network: p.Network,
			Payer: p.Payer, Amount: money.Micros(p.Amount), Nonce: p.Nonce}
	}
	if w.BalanceAfter != nil {
		m := money.Micros(*w.BalanceAfter)
		r.BalanceAfter = &m
	}
	return nil
}

// chainHash returns SHA-256(prev || canonical).
func chainHash(prev [32]byte, canonical []byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canonical)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// hashRecord writes prev followed by r's canonical bytes into buf (reused)
// and returns it with SHA-256 over it, the record's hash. The canonical
// bytes are buf[32:].
func hashRecord(buf []byte, prev *[32]byte, r *Record) ([]byte, [32]byte) {
	buf = append(buf[:0], prev[:]...)
	buf = r.appendCanonical(buf)
	return buf, sha256.Sum256(buf)
}

func parseHash(s string) ([32]byte, bool) {
	var h [32]byte
	if len(s) != 64 {
		return h, false
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, false
	}
	return h, hex.EncodeToString(h[:]) == s // lowercase only
}

func appendStr(b []byte, key, s string) []byte {
	b = append(b, key...)
	return appendQuoted(b, s)
}

func appendOptStr(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendStr(b, key, s)
}

func appendOptInt(b []byte, key string, n int64) []byte {
	if n == 0 {
		return b
	}
	b = append(b, key...)
	return strconv.AppendInt(b, n, 10)
}

const hexDigits = "0123456789abcdef"

// appendQuoted writes s as a JSON string: '"' and '\' escaped with a
// backslash, bytes below 0x20 as \u00xx, everything else (valid UTF-8)
// verbatim.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
