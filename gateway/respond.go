package gateway

import (
	"strconv"

	"github.com/valyala/fasthttp"
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

// denial is a decision that ends a tool call before (or instead of) the
// upstream: the status, the ledger outcome and reason, and the JSON body.
// A denial is not an error: it is an answer.
type denial struct {
	status     int
	outcome    string
	reason     string
	retryAfter int // seconds; 0 = no Retry-After
	body       []byte

	payRequired []byte // PAYMENT-REQUIRED header value (x402)
	payResponse []byte // PAYMENT-RESPONSE / X-PAYMENT-RESPONSE value (x402)
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
