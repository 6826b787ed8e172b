package gateway

import (
	"iter"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// Ledger outcomes (docs/ledger.md).
const (
	outAllowed             = "allowed"
	outDenied              = "denied"
	outQuotaExceeded       = "quota_exceeded"
	outSpendCapExceeded    = "spend_cap_exceeded"
	outInsufficientCredits = "insufficient_credits"
	outUnauthenticated     = "unauthenticated"
	outPaymentRequired     = "payment_required"
	outPaymentInvalid      = "payment_invalid"
	outSettleFailed        = "settle_failed"
	outUpstreamError       = "upstream_error"
	outUnknownTool         = "unknown_tool"
	outMethodNotAllowed    = "method_not_allowed"  // a tool's route, another method (405)
	outStoreUnavailable    = "store_unavailable"   // the data dir is low on space: nothing could be recorded safely (503)
	outPaymentUnavailable  = "payment_unavailable" // the nonce store or the settlement backend could not answer (503)
	outReplayed            = "replayed"            // a retry answered with the first attempt's recorded answer (idempotency.go)
)

// request is one tool call as the stages see it, whatever front end it
// came through: the tool, the caller's credentials, what goes upstream,
// and where it came from. A front end (REST today, MCP next) fills it;
// nothing in it refers to the front end's own objects except the caller's
// headers to forward, behind a read-only interface. Byte slices belong to
// the front end and are valid until the call ends.
type request struct {
	protocol string // "rest", "mcp"
	method   []byte // the caller's method (REST); the upstream gets it
	body     []byte // the upstream's request body
	query    []byte // query string passed to the upstream (REST)
	header   headerSource
	source   netip.Addr
	tls      bool

	// Credentials, as presented; the authenticators decide what they are.
	apiKey         []byte        // X-Api-Key, or Authorization: Bearer it-…
	key            *identity.Key // the key, when the front end authenticated it already (MCP does, per request)
	hasKey         bool
	token          []byte       // Authorization: Bearer of any other form (a JWT access token, or not a credential)
	tok            *oauth.Token // the access token, when the front end verified it already (MCP does, per request)
	payment        []byte       // x402 payment: header value (base64), or JSON when paymentJSON
	paymentVersion int          // 2: PAYMENT-SIGNATURE, 1: X-PAYMENT; 0 for JSON (the payload says)
	paymentJSON    bool         // payment is the payload's JSON (x402 over MCP: params._meta["x402/payment"])
	idemKey        []byte       // Idempotency-Key (REST; key and token callers)
}

// headerSource is a read-only view of a caller's headers.
// *fasthttp.RequestHeader implements it.
type headerSource interface {
	All() iter.Seq2[[]byte, []byte]
	Peek(key string) []byte
}

var _ headerSource = (*fasthttp.RequestHeader)(nil)

// call is the state of one tool call through the stages. Pooled; reset
// before reuse. Every stage reads and writes it; only the front end's
// render step touches the protocol's objects.
type call struct {
	start time.Time
	reqID []byte
	req   request
	st    *state
	rt    *route

	who  identity.Principal
	tier policy.Tier
	eff  *policy.Effective

	quotaHeld       bool
	quotaID         uint64            // the call id the quota slot is counted under
	quotaLocal      bool              // the slot is in localQuotas: the shared store could not decide
	gov             meter.GovHold     // concurrency slot, quota windows, breakers (governance.go)
	groupRes        meter.Reservation // the price held against the group's shared cap (groups.go)
	groupHeld       bool
	groupPre        groupReservation // storage for the group's part of a reservation made with the member's
	approvalID      string           // the approval this call runs under (approval.go)
	shadowSet       bool             // a shadow policy was evaluated (shadow.go):
	shadowPending   bool             // … not all of its checks yet
	shadowQuotaDone bool             // … its rate-class quota was checked
	shadowOutcome   string           // … what it would have decided
	shadowReason    string

	reserved bool
	res      meter.Reservation
	day      meter.Day
	prepaid  bool // the reservation holds prepaid credits: the debit record is written under the account's lock

	token     *oauth.Token // the caller's access token, verified
	tokJTI    string       // its jti and client_id, also of a refused one (for the record)
	tokClient string

	pay        *paidCall // x402 caller's payment; nil for API keys
	claim      *claim    // the idempotency claim this call holds (idempotency.go)
	unrecorded bool      // store low on space: a free call served under fail_mode open
	norecord   bool      // refused before anything could be recorded

	cost      money.Micros // billed amount (0 unless committed)
	upStatus  int
	upLatency time.Duration
	upAt      time.Duration      // when the upstream call began, after start
	upResp    *fasthttp.Response // the upstream's answer, when one came
	body      *bodyBuf           // an upstream body that outlives upResp; released with the call
	allowed   bool               // the answer carries X-Policy-Allowed: true
	mcpResult bool               // c.body is an upstream MCP server's tool result

	dec Decision // storage for the call's decision
	buf []byte   // scratch
	// head is the REST upstream request's head, written by
	// appendUpstreamHead when rawUp (kept across calls like buf).
	head  []byte
	rawUp bool
}

// paidCall is an x402 caller's payment as it moves through the stages.
type paidCall struct {
	p           *x402.Payment
	version     int
	verified    x402.Verified
	nonceHeld   bool          // our lock on the authorization, to release if unspent
	needsRemote bool          // only the settlement backend can check the signature
	digest      [32]byte      // SHA-256 of the header: the remote verification cache key
	settled     bool          // settled (or left pending) ahead of, or after, the call
	reconcile   bool          // left pending: follow it once the call is answered (run)
	extNote     string        // a facilitator's rejection of an extension (the txn record's reason)
	oweOnSettle bool          // settled ahead, pending, not served: owed once reconciled as settled
	verifyDur   time.Duration // time spent verifying remotely (0: not asked, or cached)
	settleDur   time.Duration // time spent settling
	ledgerDur   time.Duration // time the call's records took to commit
	result      x402.SettleResult
	upto        bool         // the upto scheme: settled after the call, at its actual cost
	amount      money.Micros // what is (to be) settled: the price, or an upto call's actual cost
	zero        bool         // an upto call that cost nothing: no settlement was needed, none made

	// When, after the call's start, identification and the decision
	// ended and the verification and settlement began (the "paid call
	// phases" debug line).
	identAt, decideAt, verifyAt, settleAt time.Duration
}

// moved reports whether pc (nil: not a paid call) settled money: a
// successful settlement, not an upto call that cost nothing.
func (pc *paidCall) moved() bool { return pc != nil && pc.result.Success && !pc.zero }

// settlesAfter reports whether pc is settled after the upstream answered:
// in the tool's after_upstream mode, and always for an upto payment (its
// amount is known only then).
func settlesAfter(t *catalog.Tool, pc *paidCall) bool {
	return t.Settle == catalog.AfterUpstream || pc.upto
}

var callPool = sync.Pool{New: func() any { return &call{reqID: make([]byte, 0, 24), buf: make([]byte, 0, 256)} }}

func acquireCall() *call { return callPool.Get().(*call) }

func releaseCall(c *call) {
	c.body.release()
	reqID, buf, head := c.reqID[:0], c.buf[:0], c.head[:0]
	*c = call{reqID: reqID, buf: buf, head: head}
	callPool.Put(c)
}

// principal is the printed principal ("" when not identified).
func (c *call) principal() string { return c.who.String() }

// paymentResponseHeader names the settlement header for c's x402 version.
func (c *call) paymentResponseHeader() []byte {
	if c.pay != nil && c.pay.version == 1 {
		return hdrXPaymentResponse
	}
	return hdrPaymentResponse
}
