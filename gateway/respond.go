package gateway

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/x402"
)

var (
	hdrPaymentRequired  = []byte(x402.HeaderPaymentRequired)
	hdrPaymentResponse  = []byte(x402.HeaderPaymentResponse)
	hdrXPaymentResponse = []byte(x402.HeaderXPaymentResponse)
)

// Header names, shared to avoid per-request conversions.
var (
	hdrPolicyAllowed = []byte("X-Policy-Allowed")
	hdrTool          = []byte("X-Tool")
	hdrCost          = []byte("X-Cost-Usd")
	hdrRequestID     = []byte("X-Request-Id")
	hdrRetryAfter    = []byte("Retry-After")
	hdrCacheControl  = []byte("Cache-Control")
	hdrACAO          = []byte("Access-Control-Allow-Origin")
	hdrACEH          = []byte("Access-Control-Expose-Headers")
	hdrAllow         = []byte("Allow")

	strTrue         = []byte("true")
	strFalse        = []byte("false")
	strNoStore      = []byte("no-store")
	strStar         = []byte("*")
	strJSON         = []byte("application/json")
	strExposeHeader = []byte("PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE, X-Policy-Allowed, X-Tool, X-Cost-Usd, X-Request-Id, Retry-After")
	strAllowHeaders = []byte("Content-Type, Authorization, X-API-Key, PAYMENT-SIGNATURE, X-PAYMENT, Access-Control-Expose-Headers")
)

// renderREST answers a tool call over REST (the respond stage): the
// upstream's answer when d is nil, else d as its JSON body; the gateway's
// headers either way (X-Policy-Allowed, X-Tool, X-Cost-Usd, X-Request-Id,
// CORS, Retry-After, and the x402 headers).
func (g *Gateway) renderREST(ctx *fasthttp.RequestCtx, c *call, d *Decision) {
	h := &ctx.Response.Header
	if d == nil {
		copyResponseHeaders(h, &c.upResp.Header)
		ctx.Response.SetStatusCode(c.upStatus)
		switch {
		case c.body == nil:
			ctx.Response.SetBody(c.upResp.Body())
		case len(c.body.b) > smallBody:
			ctx.Response.SetBodyStream(c.body, len(c.body.b)) // released once written out
			c.body = nil
		default:
			ctx.Response.SetBody(c.body.b)
		}
	} else {
		if d.RetryAfter > 0 {
			setRetryAfter(ctx, d.RetryAfter)
		}
		if d.Allow != "" {
			h.SetBytesK(hdrAllow, d.Allow)
		}
		if d.Challenge != "" {
			h.Set("WWW-Authenticate", d.Challenge)
		}
		if d.Status == 402 {
			h.SetBytesKV(hdrCacheControl, strNoStore)
		}
		if d.Offer != nil {
			if d.PayReason == "" {
				h.SetBytesKV(hdrPaymentRequired, d.Offer.PaymentRequiredHeader())
			} else {
				hdr, _ := d.Offer.WithError(d.PayReason)
				h.SetBytesKV(hdrPaymentRequired, hdr)
			}
		}
		if d.PayResponse != nil {
			h.SetBytesKV(c.paymentResponseHeader(), d.PayResponse)
		}
		c.buf = d.appendRESTBody(c.buf[:0])
		writeJSON(ctx, d.Status, c.buf)
	}
	if c.allowed {
		h.SetBytesKV(hdrPolicyAllowed, strTrue)
	} else {
		h.SetBytesKV(hdrPolicyAllowed, strFalse)
	}
	h.SetBytesKV(hdrRequestID, c.reqID)
	h.SetBytesK(hdrTool, c.rt.tool.ID)
	h.SetBytesKV(hdrACAO, strStar)
	h.SetBytesKV(hdrACEH, strExposeHeader)
	var cb [24]byte
	h.SetBytesKV(hdrCost, c.cost.AppendDecimal(cb[:0], 3))
	if c.pay != nil && c.pay.settled && d != ledgerUnavailable {
		h.SetBytesKV(c.paymentResponseHeader(), x402.AppendSettleResponse(nil, c.pay.result.Response()))
	}
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, `\u00`...)
			dst = append(dst, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

func ceilSeconds(ns int64) int {
	s := ns / 1e9
	if ns%1e9 > 0 {
		s++
	}
	return int(s)
}

func setRetryAfter(ctx *fasthttp.RequestCtx, secs int) {
	if secs <= 0 {
		secs = 1
	}
	var buf [20]byte
	ctx.Response.Header.SetBytesKV(hdrRetryAfter, strconv.AppendInt(buf[:0], int64(secs), 10))
}

// writeJSON answers with status and a JSON body (copied).
func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(strJSON)
	ctx.Response.SetBody(body)
}

// errorBody returns {"error": msg}.
func errorBody(msg string) []byte {
	b := append([]byte(`{"error":`), appendJSONString(nil, msg)...)
	return append(b, '}')
}
