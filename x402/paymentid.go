package x402

import (
	"bytes"
	"encoding/json"
	"errors"
)

// The payment-identifier extension (x402 specs/extensions/
// payment_identifier.md): the server declares it in PAYMENT-REQUIRED
// extensions; a client echoes it with info.id, an idempotency key for the
// payment. The same id with the same payment gets the recorded answer; the
// same id with another payment gets 409.
const (
	ExtPaymentIdentifier = "payment-identifier"
	PaymentIDMin         = 16
	PaymentIDMax         = 128
)

// paymentIdentifierDecl is the extension's declaration: optional ids.
const paymentIdentifierDecl = `{"info":{"required":false},"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"required":{"type":"boolean"},"id":{"type":"string","minLength":16,"maxLength":128,"pattern":"^[a-zA-Z0-9_-]+$"}},"required":["required"]}}`

// ErrPaymentID is returned by PaymentID for an id that breaks the
// extension's format (16–128 characters of A–Z, a–z, 0–9, '-', '_').
var ErrPaymentID = errors.New("x402: payment-identifier id must be 16-128 characters of A-Z, a-z, 0-9, '-' and '_'")

// PaymentID returns the payment-identifier id a v2 payload carries in
// extensions["payment-identifier"].info.id, "" when it carries none.
func (p *Payment) PaymentID() (string, error) {
	if p.Version != 2 || !bytes.Contains(p.Raw, []byte(ExtPaymentIdentifier)) {
		return "", nil
	}
	var w struct {
		Extensions map[string]struct {
			Info struct {
				ID *string `json:"id"`
			} `json:"info"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(p.Raw, &w); err != nil {
		return "", nil // decoded before: only an extensions shape we do not know
	}
	ext, ok := w.Extensions[ExtPaymentIdentifier]
	if !ok || ext.Info.ID == nil {
		return "", nil
	}
	id := *ext.Info.ID
	if !validPaymentID(id) {
		return "", ErrPaymentID
	}
	return id, nil
}

func validPaymentID(id string) bool {
	if len(id) < PaymentIDMin || len(id) > PaymentIDMax {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
