package x402

import "encoding/json"

// Header names of both protocol versions. Header names are
// case-insensitive on the wire.
const (
	HeaderPaymentRequired   = "PAYMENT-REQUIRED"   // v2, server → client, base64 PaymentRequired
	HeaderPaymentSignature  = "PAYMENT-SIGNATURE"  // v2, client → server, base64 payload
	HeaderPaymentResponse   = "PAYMENT-RESPONSE"   // v2, server → client, base64 settle response
	HeaderXPayment          = "X-PAYMENT"          // v1, client → server
	HeaderXPaymentResponse  = "X-PAYMENT-RESPONSE" // v1, server → client
	SchemeExact             = "exact"
	defaultPaymentRequired  = "Payment required"
	defaultV1PaymentMissing = "X-PAYMENT header is required"
)

// Requirements is a v2 PaymentRequirements object (one `accepts` entry).
// Addresses and amounts stay strings as on the wire.
type Requirements struct {
	Scheme            string          `json:"scheme"`
	Network           string          `json:"network"`
	Amount            string          `json:"amount"`
	Asset             string          `json:"asset"`
	PayTo             string          `json:"payTo"`
	MaxTimeoutSeconds int             `json:"maxTimeoutSeconds"`
	Extra             json.RawMessage `json:"extra,omitempty"`
}

// RequirementsV1 is a v1 PaymentRequirements object. Every field the legacy
// x402-fetch schema requires is always present; OutputSchema is omitted
// when empty (a null fails that schema).
type RequirementsV1 struct {
	Scheme            string          `json:"scheme"`
	Network           string          `json:"network"`
	MaxAmountRequired string          `json:"maxAmountRequired"`
	Resource          string          `json:"resource"`
	Description       string          `json:"description"`
	MimeType          string          `json:"mimeType"`
	OutputSchema      json.RawMessage `json:"outputSchema,omitempty"`
	PayTo             string          `json:"payTo"`
	MaxTimeoutSeconds int             `json:"maxTimeoutSeconds"`
	Asset             string          `json:"asset"`
	Extra             json.RawMessage `json:"extra,omitempty"`
}

// ResourceInfo is the v2 `resource` object.
type ResourceInfo struct {
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	MimeType    string `json:"mimeType,omitempty"`
}

// PaymentRequired is the v2 object carried base64-encoded in the
// PAYMENT-REQUIRED header.
type PaymentRequired struct {
	X402Version int                        `json:"x402Version"`
	Error       string                     `json:"error,omitempty"`
	Resource    *ResourceInfo              `json:"resource,omitempty"`
	Accepts     []Requirements             `json:"accepts"`
	Extensions  map[string]json.RawMessage `json:"extensions,omitempty"`
}

// SettleResponse is the object carried base64-encoded in PAYMENT-RESPONSE
// (v2) and X-PAYMENT-RESPONSE (v1).
type SettleResponse struct {
	Success     bool   `json:"success"`
	ErrorReason string `json:"errorReason,omitempty"`
	Payer       string `json:"payer,omitempty"`
	Transaction string `json:"transaction"`
	Network     string `json:"network"`
	// Amount is what was charged, in atomic units (upto: the actual
	// cost, possibly "0"); omitted for exact payments.
	Amount string `json:"amount,omitempty"`
}

// wire shapes for decoding payment payloads (v1 and v2 share them).
type wirePayment struct {
	X402Version *int          `json:"x402Version"`
	Scheme      string        `json:"scheme"`   // v1
	Network     string        `json:"network"`  // v1
	Accepted    *Requirements `json:"accepted"` // v2
	Payload     *wireExact    `json:"payload"`
}

type wireExact struct {
	Signature     string     `json:"signature"`
	Authorization *wireAuthz `json:"authorization"`
	// Permit2Authorization is the upto scheme's message (permit2.go).
	Permit2Authorization *wirePermit2 `json:"permit2Authorization"`
}

type wirePermit2 struct {
	From      string `json:"from"`
	Permitted *struct {
		Token  string `json:"token"`
		Amount string `json:"amount"`
	} `json:"permitted"`
	Spender  string `json:"spender"`
	Nonce    string `json:"nonce"`
	Deadline string `json:"deadline"`
	Witness  *struct {
		To          string `json:"to"`
		Facilitator string `json:"facilitator"`
		ValidAfter  string `json:"validAfter"`
	} `json:"witness"`
}

type wireAuthz struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Value       string `json:"value"`
	ValidAfter  string `json:"validAfter"`
	ValidBefore string `json:"validBefore"`
	Nonce       string `json:"nonce"`
}
