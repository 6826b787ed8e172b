package x402

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// ErrFacilitator wraps facilitator answers that carry no decision
// (transport errors, 5xx, undecodable or incomplete bodies).
var ErrFacilitator = errors.New("x402: facilitator")

// maxFacilitatorBody bounds how much of a facilitator response is read.
const maxFacilitatorBody = 1 << 20

// Facilitator is an x402 facilitator HTTP client (POST /verify, POST
// /settle, GET /supported). The zero value is unusable: URL is required.
// It is safe for concurrent use; do not change fields after first use.
type Facilitator struct {
	// URL is the base URL, e.g. "https://x402.org/facilitator" or
	// "https://api.cdp.coinbase.com/platform/v2/x402".
	URL string
	// HTTP is the client used; nil means a client with a 30 s timeout.
	// Deadlines should come from the ctx of each call.
	HTTP *http.Client
	// Auth, when set, returns a bearer token for one request (for CDP see
	// CDPAuth); it is called once per request.
	Auth func(method, host, path string) (string, error)
}

var _ Settler = (*Facilitator)(nil)

var defaultFacilitatorHTTP = &http.Client{Timeout: 30 * time.Second}

// Verify posts p with the offer's own requirements to /verify. A response
// carrying isValid is a decision whatever its HTTP status; isValid:false
// is never success.
func (f *Facilitator) Verify(ctx context.Context, p *Payment, o *Offer) (VerifyResult, error) {
	status, body, hdr, err := f.post(ctx, "verify", p, o)
	if err != nil {
		return VerifyResult{}, err
	}
	var r struct {
		IsValid        *bool  `json:"isValid"`
		InvalidReason  string `json:"invalidReason"`
		InvalidMessage string `json:"invalidMessage"`
		Payer          string `json:"payer"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.IsValid == nil {
		return VerifyResult{}, fmt.Errorf("%w: verify: HTTP %d: no isValid in %q", ErrFacilitator, status, snippet(body))
	}
	res := VerifyResult{Valid: *r.IsValid, Reason: r.InvalidReason, Message: r.InvalidMessage, Payer: r.Payer,
		Extensions: extensionResponses(hdr)}
	if res.Valid && status/100 != 2 {
		return VerifyResult{}, fmt.Errorf("%w: verify: HTTP %d with isValid:true", ErrFacilitator, status)
	}
	if !res.Valid && res.Reason == "" {
		res.Reason = "invalid_payment"
	}
	return res, nil
}

// Settle posts p with the offer's own requirements to /settle. A response
// carrying success is a decision whatever its HTTP status. A 4xx answer
// without one (bad credentials, rate limit) is a plain error: nothing was
// executed. Other errors after the request may have reached the
// facilitator wrap ErrOutcomeUnknown.
func (f *Facilitator) Settle(ctx context.Context, p *Payment, o *Offer) (SettleResult, error) {
	status, body, hdr, err := f.post(ctx, "settle", p, o)
	if err != nil {
		return SettleResult{}, err
	}
	var r struct {
		Success      *bool  `json:"success"`
		ErrorReason  string `json:"errorReason"`
		ErrorMessage string `json:"errorMessage"`
		Payer        string `json:"payer"`
		Transaction  string `json:"transaction"`
		Network      string `json:"network"`
		Amount       string `json:"amount"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Success == nil {
		if status/100 == 4 {
			// Refused before settling (bad credentials, rate limit, bad
			// request): nothing was executed.
			return SettleResult{}, fmt.Errorf("%w: settle: HTTP %d: no success in %q", ErrFacilitator, status, snippet(body))
		}
		return SettleResult{}, fmt.Errorf("%w: %w: settle: HTTP %d: no success in %q", ErrFacilitator, ErrOutcomeUnknown, status, snippet(body))
	}
	res := SettleResult{Success: *r.Success, Reason: r.ErrorReason, Message: r.ErrorMessage,
		Payer: r.Payer, Transaction: r.Transaction, Network: r.Network, Amount: r.Amount, Extensions: extensionResponses(hdr)}
	if res.Network == "" {
		res.Network = o.Network(p.Version)
	}
	switch {
	case res.Success && (status/100 != 2 || res.Transaction == ""):
		return SettleResult{}, fmt.Errorf("%w: %w: settle: HTTP %d success without transaction", ErrFacilitator, ErrOutcomeUnknown, status)
	case !res.Success && res.Reason == ReasonSettlementPending:
		res.Pending = true
	case !res.Success && res.Reason == "":
		res.Reason = "settle_failed"
	}
	return res, nil
}

// SupportedKind is one entry of GET /supported.
type SupportedKind struct {
	X402Version int             `json:"x402Version"`
	Scheme      string          `json:"scheme"`
	Network     string          `json:"network"`
	Extra       json.RawMessage `json:"extra,omitempty"`
}

// Supported is the answer of GET /supported.
type Supported struct {
	Kinds      []SupportedKind     `json:"kinds"`
	Extensions []string            `json:"extensions,omitempty"`
	Signers    map[string][]string `json:"signers,omitempty"`
}

// Supports reports whether the facilitator lists (version, scheme, network).
func (s Supported) Supports(version int, scheme, network string) bool {
	for _, k := range s.Kinds {
		if k.X402Version == version && k.Scheme == scheme && k.Network == network {
			return true
		}
	}
	return false
}

// Supported fetches GET /supported.
func (f *Facilitator) Supported(ctx context.Context) (Supported, error) {
	status, body, _, err := f.do(ctx, http.MethodGet, "supported", nil)
	if err != nil {
		return Supported{}, err
	}
	var s Supported
	if status/100 != 2 {
		return Supported{}, fmt.Errorf("%w: supported: HTTP %d: %q", ErrFacilitator, status, snippet(body))
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return Supported{}, fmt.Errorf("%w: supported: %v", ErrFacilitator, err)
	}
	return s, nil
}

func (f *Facilitator) post(ctx context.Context, op string, p *Payment, o *Offer) (int, []byte, http.Header, error) {
	if p == nil || len(p.Raw) == 0 {
		return 0, nil, nil, fmt.Errorf("%w: %s: payment without raw payload", ErrFacilitator, op)
	}
	req := o.RequirementsFor(p)
	if req == nil {
		return 0, nil, nil, fmt.Errorf("%w: %s: no v%d %s requirements for %s", ErrFacilitator, op, p.Version, p.Scheme, o.cfg.Network)
	}
	body := make([]byte, 0, 80+len(p.Raw)+len(req))
	body = append(body, `{"x402Version":`...)
	body = append(body, byte('0'+p.Version))
	body = append(body, `,"paymentPayload":`...)
	body = append(body, p.Raw...)
	body = append(body, `,"paymentRequirements":`...)
	body = append(body, req...)
	body = append(body, '}')
	status, resp, hdr, err := f.do(ctx, http.MethodPost, op, body)
	if err != nil && op == "settle" && mayHaveSent(err) {
		err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return status, resp, hdr, err
}

func (f *Facilitator) do(ctx context.Context, method, op string, body []byte) (int, []byte, http.Header, error) {
	endpoint := strings.TrimRight(f.URL, "/") + "/" + op
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return 0, nil, nil, fmt.Errorf("%w: bad URL %q", ErrFacilitator, f.URL)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: %s: %v", ErrFacilitator, op, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if f.Auth != nil {
		tok, err := f.Auth(method, u.Host, u.Path)
		if err != nil {
			return 0, nil, nil, fmt.Errorf("%w: %s: auth: %v", ErrFacilitator, op, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := f.HTTP
	if hc == nil {
		hc = defaultFacilitatorHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: %s: %w", ErrFacilitator, op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxFacilitatorBody))
	if err != nil {
		return resp.StatusCode, nil, nil, fmt.Errorf("%w: %s: read: %w", ErrFacilitator, op, err)
	}
	return resp.StatusCode, b, resp.Header, nil
}

// mayHaveSent reports whether a request error may have happened after the
// server received the request (anything but a failed dial).
func mayHaveSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	return true
}

func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// HeaderExtensionResponses is the facilitator's report on the payload's
// extensions (base64 JSON {"bazaar":{"status":"success"|"processing"|
// "rejected","rejectedReason":…}}): server-internal, never forwarded.
const HeaderExtensionResponses = "EXTENSION-RESPONSES"

// extensionResponses returns the decoded EXTENSION-RESPONSES JSON, "" when
// absent or undecodable.
func extensionResponses(h http.Header) string {
	v := h.Get(HeaderExtensionResponses)
	if v == "" {
		return ""
	}
	raw, err := decodeBase64([]byte(strings.TrimSpace(v)))
	if err != nil || !json.Valid(raw) {
		return ""
	}
	return string(raw)
}

// ExtensionStatus is one extension's entry in EXTENSION-RESPONSES.
type ExtensionStatus struct {
	Extension, Status, Reason string
}

// ParseExtensionResponses lists the entries of an EXTENSION-RESPONSES
// object (VerifyResult.Extensions, SettleResult.Extensions), sorted by
// extension name.
func ParseExtensionResponses(raw string) []ExtensionStatus {
	var m map[string]struct {
		Status         string `json:"status"`
		RejectedReason string `json:"rejectedReason"`
	}
	if raw == "" || json.Unmarshal([]byte(raw), &m) != nil {
		return nil
	}
	out := make([]ExtensionStatus, 0, len(m))
	for k, v := range m {
		out = append(out, ExtensionStatus{Extension: k, Status: v.Status, Reason: v.RejectedReason})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Extension < out[j].Extension })
	return out
}

// UptoFacilitator returns the address the facilitator settles upto
// payments on network from (the extra.facilitatorAddress of its v2 upto
// kind), which payers name in their witness.
func (s Supported) UptoFacilitator(network string) (common.Address, bool) {
	for _, k := range s.Kinds {
		if k.X402Version != 2 || k.Scheme != SchemeUpto || k.Network != network {
			continue
		}
		var extra struct {
			FacilitatorAddress string `json:"facilitatorAddress"`
		}
		if json.Unmarshal(k.Extra, &extra) != nil {
			continue
		}
		if a, ok := parseAddress(extra.FacilitatorAddress); ok && a != (common.Address{}) {
			return a, true
		}
	}
	return common.Address{}, false
}

// ResolveUptoFacilitator turns the --x402-upto setting into the address
// upto payments must name: "auto" asks f (GET /supported) which address it
// settles upto payments on network from; a 0x address is taken as given.
// It fails when f does not offer upto on network (Permit2 or its upto
// proxy is then missing from the facilitator's setup).
func ResolveUptoFacilitator(ctx context.Context, setting string, f *Facilitator, network string) (common.Address, error) {
	if setting != "auto" {
		a, ok := parseAddress(setting)
		if !ok || a == (common.Address{}) {
			return common.Address{}, fmt.Errorf("%w: --x402-upto %q: want auto or the facilitator's 0x address", ErrConfig, setting)
		}
		return a, nil
	}
	s, err := f.Supported(ctx)
	if err != nil {
		return common.Address{}, fmt.Errorf("--x402-upto auto: %w", err)
	}
	a, ok := s.UptoFacilitator(network)
	if !ok {
		return common.Address{}, fmt.Errorf("%w: --x402-upto auto: facilitator %s lists no v2 upto scheme with a facilitatorAddress for %s", ErrConfig, f.URL, network)
	}
	return a, nil
}
