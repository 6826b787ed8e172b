package gateway

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// Decision is an answer that ends a request before, or instead of, a
// served upstream answer: denied by policy, over quota or cap, not
// identified, not paid, the upstream failed, a management request refused.
// It is data, rendered late by the front end in its protocol: REST JSON
// bodies (renderREST), JSON-RPC for MCP. A Decision is not an error.
//
// Decisions of a tool call live in the call (pooled, no allocation);
// package-level ones are shared and must not be modified.
type Decision struct {
	Status  int
	Outcome string // ledger outcome (docs/ledger.md)
	Reason  string // ledger reason
	// Message is the body's "error"; Fields follow it, in order.
	Message string
	Fields  []Field
	// RetryAfter, in seconds; 0 = no Retry-After.
	RetryAfter int
	// Problems of a refused management request body (JSON paths).
	Problems []catalog.Problem

	// x402: the payment requirements to answer with (PAYMENT-REQUIRED and
	// the x402 body), with PayReason as their error ("" for an unpaid
	// call); PayResponse is a failed settlement's PAYMENT-RESPONSE value.
	Offer       *x402.Offer
	PayReason   string
	PayResponse []byte

	// Allow is the methods of a 405.
	Allow string
	// Challenge is the WWW-Authenticate value of a refused access token
	// (RFC 6750); "" for none.
	Challenge string

	fields [6]Field // backing store of Fields for decisions built in a call (the most any has)
}

// FieldKind says how a Field's value is written.
type FieldKind uint8

const (
	FieldString FieldKind = iota
	FieldInt
	FieldUSD  // money, as a JSON number of dollars ("0.01")
	FieldTime // RFC 3339 UTC
	FieldBool
)

// Field is one named value of a decision's body: Str for strings; Int
// for integers, booleans (0/1), money (micro-USD) and times (Unix
// nanoseconds).
type Field struct {
	Key  string
	Kind FieldKind
	Str  string
	Int  int64
}

// USD returns a money field's value.
func (f Field) USD() money.Micros { return money.Micros(f.Int) }

// Time returns a time field's value.
func (f Field) Time() time.Time { return time.Unix(0, f.Int).UTC() }

// add appends a field, in the decision's own array while it has room.
func (d *Decision) add(f Field) *Decision {
	if d.Fields == nil {
		d.Fields = d.fields[:0]
	}
	d.Fields = append(d.Fields, f)
	return d
}

func (d *Decision) str(k, v string) *Decision { return d.add(Field{Key: k, Kind: FieldString, Str: v}) }
func (d *Decision) num(k string, v int64) *Decision {
	return d.add(Field{Key: k, Kind: FieldInt, Int: v})
}
func (d *Decision) usd(k string, v money.Micros) *Decision {
	return d.add(Field{Key: k, Kind: FieldUSD, Int: int64(v)})
}
func (d *Decision) at(k string, v time.Time) *Decision {
	return d.add(Field{Key: k, Kind: FieldTime, Int: v.UnixNano()})
}
func (d *Decision) flag(k string, v bool) *Decision {
	i := int64(0)
	if v {
		i = 1
	}
	return d.add(Field{Key: k, Kind: FieldBool, Int: i})
}

// Field returns the named field and whether it is there.
func (d *Decision) Field(key string) (Field, bool) {
	for _, f := range d.Fields {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}

// AppendJSON appends the decision's body as a JSON object:
// {"error": Message, fields…, "problems": […]}. An x402 payment decision's
// REST body is the offer's (x402 v1 body), see appendRESTBody.
func (d *Decision) AppendJSON(b []byte) []byte {
	b = append(b, `{"error":`...)
	b = appendJSONString(b, d.Message)
	for _, f := range d.Fields {
		b = append(b, ',')
		b = appendJSONString(b, f.Key)
		b = append(b, ':')
		b = f.appendJSON(b)
	}
	if len(d.Problems) > 0 {
		p, _ := json.Marshal(d.Problems)
		b = append(b, `,"problems":`...)
		b = append(b, p...)
	}
	return append(b, '}')
}

func (f Field) appendJSON(b []byte) []byte {
	switch f.Kind {
	case FieldInt:
		return strconv.AppendInt(b, f.Int, 10)
	case FieldUSD:
		return f.USD().AppendDecimal(b, 1)
	case FieldTime:
		b = append(b, '"')
		b = f.Time().AppendFormat(b, time.RFC3339)
		return append(b, '"')
	case FieldBool:
		if f.Int != 0 {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	}
	return appendJSONString(b, f.Str)
}

// appendRESTBody appends the body a REST caller gets for d: the x402
// body of the offer for a payment decision, else AppendJSON.
func (d *Decision) appendRESTBody(b []byte) []byte {
	if d.Offer != nil {
		if d.PayReason == "" {
			return append(b, d.Offer.Body402()...)
		}
		_, body := d.Offer.WithError(d.PayReason)
		return append(b, body...)
	}
	return d.AppendJSON(b)
}

// decide builds a call's decision in the call's own storage.
func (c *call) decide(status int, outcome, reason, msg string) *Decision {
	c.dec = Decision{Status: status, Outcome: outcome, Reason: reason, Message: msg}
	return &c.dec
}

// fixed returns a shared, immutable decision.
func fixed(status int, outcome, reason, msg string) *Decision {
	return &Decision{Status: status, Outcome: outcome, Reason: reason, Message: msg}
}
