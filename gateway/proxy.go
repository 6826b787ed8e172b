package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/x402"
)

// Request headers never forwarded upstream: hop-by-hop headers (RFC 9110
// section 7.6.1), the caller's identity and payment, and client-supplied
// forwarding headers, which the gateway sets itself.
var strippedRequestHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"X-Api-Key", "Authorization", "Cookie",
	"Payment-Signature", "X-Payment",
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip",
	"X-Request-Id", "X-Toolgate-Principal", "X-Toolgate-Tool",
}

// Response headers never passed back: hop-by-hop headers and anything the
// gateway itself sets.
var strippedResponseHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade", "Set-Cookie",
	"X-Policy-Allowed", "X-Tool", "X-Cost-Usd", "X-Request-Id",
	"Payment-Response", "X-Payment-Response", "Payment-Required",
}

var (
	strHTTP11    = []byte("HTTP/1.1")
	hdrXFF       = []byte("X-Forwarded-For")
	hdrXFProto   = []byte("X-Forwarded-Proto")
	hdrPrincipal = []byte("X-Toolgate-Principal")
	strHTTP      = []byte("http")
	strHTTPS     = []byte("https")
)

// forward sends an allowed call upstream (stage 7), settles an x402
// payment in after_upstream mode, records the call and answers (stage 8).
// It owns the call's quota slot, spend reservation and nonce lock.
func (g *Gateway) forward(ctx *fasthttp.RequestCtx, c *call) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	g.prepareUpstreamRequest(ctx, req, c)
	t0 := g.now()
	err := g.exchange(c, req, resp) // c.body, if set, is released with c
	c.upLatency = g.now().Sub(t0)
	c.rt.upstreamSeconds.Observe(seconds(c.upLatency))

	paidAhead := c.settled != nil // before_upstream: the money has moved
	var upFail *denial
	if err != nil {
		upFail = g.upstreamFailure(c, err)
	} else {
		c.upStatus = resp.StatusCode()
	}

	// Bill only a served call: the upstream answered < 400.
	billable := c.reserved && upFail == nil && c.upStatus < 400
	sr := c.settled
	if billable && c.pay != nil && !paidAhead {
		res, paid, d := g.settle(c) // after_upstream: settle now, body withheld until paid
		if !paid {
			g.releaseHolds(c)
			g.deny(ctx, c, d)
			return
		}
		sr = &res
	}
	if !billable && c.pay != nil && !paidAhead {
		g.releaseNonce(c) // not served: the authorization stays unspent
	}
	if upFail != nil && !paidAhead {
		if c.reserved {
			g.spend.Release(c.res)
			c.reserved = false
		}
		g.deny(ctx, c, upFail)
		return
	}

	outcome, reason, status := outAllowed, "", c.upStatus
	if upFail != nil {
		outcome, reason, status = upFail.outcome, upFail.reason, upFail.status
	} else if c.upStatus >= 400 && !billable {
		reason = "upstream_status_not_billed"
	}
	if sr != nil && sr.Pending {
		reason = "settlement_pending"
	}

	var rec *ledger.Record
	var ticket ledger.Ticket
	switch {
	case billable:
		c.cost = c.rt.tool.Price
		rec = g.callRecord(c, outcome, reason, status)
		g.spend.Commit(c.res, func(cm meter.Committed) {
			switch {
			case sr != nil && sr.Success:
				ticket = g.append(c, rec, settlementRecord(c, sr))
			case cm.HasBalance:
				bal := cm.BalanceAfter
				ticket = g.append(c, rec, &ledger.Record{
					Type: "txn", At: c.start, RequestID: rec.RequestID, Principal: c.principal,
					Tool: rec.Tool, Kind: "debit", Amount: c.cost, BalanceAfter: &bal,
				})
			default:
				ticket = g.append(c, rec)
			}
		})
		c.reserved = false
	case paidAhead:
		// before_upstream: settled, then not served. The payer's money
		// moved for nothing: the call is not billed, and the amount is
		// owed back to the payer (ledger, metric, status).
		if c.reserved {
			g.spend.Release(c.res)
			c.reserved = false
		}
		rec = g.callRecord(c, outcome, reason, status)
		recs := []*ledger.Record{rec}
		if sr.Success {
			recs = append(recs, settlementRecord(c, sr))
		}
		recs = append(recs, g.owe(c))
		ticket = g.append(c, recs...)
	default:
		if c.reserved {
			g.spend.Release(c.res)
			c.reserved = false
		}
		rec = g.callRecord(c, outcome, reason, status)
		ticket = g.append(c, rec)
	}
	if err := g.wait(ticket); err != nil {
		g.ledgerFailed(ctx, c, err)
		return
	}
	g.observe(rec)

	h := &ctx.Response.Header
	if upFail != nil {
		writeJSON(ctx, upFail.status, upFail.body)
	} else {
		// Answer with the upstream's response.
		copyResponseHeaders(h, &resp.Header)
		ctx.Response.SetStatusCode(c.upStatus)
		switch {
		case c.body == nil:
			ctx.Response.SetBody(resp.Body())
		case len(c.body.b) > smallBody:
			ctx.Response.SetBodyStream(c.body, len(c.body.b)) // released once written out
			c.body = nil
		default:
			ctx.Response.SetBody(c.body.b)
		}
	}
	h.SetBytesKV(hdrPolicyAllowed, strTrue)
	h.SetBytesKV(hdrRequestID, c.reqID)
	h.SetBytesK(hdrTool, c.rt.tool.ID)
	h.SetBytesKV(hdrACAO, strStar)
	h.SetBytesKV(hdrACEH, strExposeHeader)
	var cb [24]byte
	h.SetBytesKV(hdrCost, c.cost.AppendDecimal(cb[:0], 3))
	if sr != nil {
		h.SetBytesKV(c.paymentResponseHeader(), x402.AppendSettleResponse(nil, sr.Response()))
	}
}

// upstreamFailure is the answer to a call whose upstream exchange failed:
// what happened, in words the caller can act on.
func (g *Gateway) upstreamFailure(c *call, err error) *denial {
	status, reason, msg := 502, "upstream_closed", "Upstream closed the connection before answering"
	var op *net.OpError
	switch {
	case errors.Is(err, fasthttp.ErrTimeout) || isTimeout(err):
		status, reason, msg = 504, "upstream_timeout", "Upstream timed out"
	case errors.Is(err, errTooLarge):
		b := append([]byte(`{"error":"Upstream response too large","limit_bytes":`), strconv.AppendInt(nil, c.rt.tool.MaxResponseBytes, 10)...)
		g.log.Warn("upstream response too large", "request_id", string(c.reqID), "tool", c.rt.tool.ID, "limit_bytes", c.rt.tool.MaxResponseBytes)
		return &denial{status: 502, outcome: outUpstreamError, reason: "upstream_response_too_large", body: append(b, '}')}
	case errors.Is(err, errBudgetWait):
		g.log.Warn("response buffer budget exhausted", "request_id", string(c.reqID), "tool", c.rt.tool.ID)
		return &denial{status: 503, outcome: outUpstreamError, reason: "response_buffer_full", retryAfter: 1,
			body: []byte(`{"error":"Gateway response buffers are full; the call was not billed","retry":true}`)}
	case errors.As(err, &op) && op.Op == "dial", errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, fasthttp.ErrNoFreeConns):
		status, reason, msg = 502, "upstream_unreachable", "Upstream unreachable"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, errStaleConn), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		status, reason, msg = 502, "upstream_bad_response", "Upstream sent an invalid response"
	}
	g.log.Warn("upstream failed", "request_id", string(c.reqID), "tool", c.rt.tool.ID, "reason", reason, "err", err)
	return &denial{status: status, outcome: outUpstreamError, reason: reason, body: errorBody(msg)}
}

// prepareUpstreamRequest builds the upstream request in one pass over the
// caller's headers: HTTP/1.1 always (a caller's HTTP/1.0 or Connection:
// close must not end a pooled upstream connection unannounced), without
// the headers of dropRequestHeader, with the gateway's own forwarding,
// request id and principal headers.
func (g *Gateway) prepareUpstreamRequest(ctx *fasthttp.RequestCtx, req *fasthttp.Request, c *call) {
	in := &ctx.Request.Header
	out := &req.Header
	conn := in.Peek("Connection")
	for k, v := range in.All() {
		if !g.dropRequestHeader(k, conn) {
			out.AddBytesKV(k, v)
		}
	}
	out.SetMethodBytes(ctx.Method())
	out.SetProtocolBytes(strHTTP11)
	uri := req.URI()
	uri.Update(c.rt.uri)
	if q := ctx.URI().QueryString(); len(q) > 0 {
		uri.SetQueryStringBytes(q)
	}
	out.SetHostBytes(uri.Host())
	req.UseHostHeader = false
	req.SetBodyRaw(ctx.Request.Body())

	var ipb [64]byte
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		out.SetBytesKV(hdrXFF, ip.Unmap().AppendTo(ipb[:0]))
	}
	if ctx.IsTLS() {
		out.SetBytesKV(hdrXFProto, strHTTPS)
	} else {
		out.SetBytesKV(hdrXFProto, strHTTP)
	}
	out.SetBytesKV(hdrRequestID, c.reqID)
	out.SetBytesK(hdrPrincipal, c.principal)
}

// dropRequestHeader reports whether a caller's header stays at the
// gateway: hop-by-hop, identity, payment and forwarding headers
// (strippedRequestHeaders), those the Connection header names, Host and
// Content-Length (set by the gateway), and - unless
// Options.ForwardUnderscoreHeaders - every name with an underscore, as
// nginx does. Names are compared case-insensitively with '_' read as '-',
// so X_Toolgate_Principal is X-Toolgate-Principal: CGI and WSGI upstreams
// map both to HTTP_X_TOOLGATE_PRINCIPAL.
func (g *Gateway) dropRequestHeader(name, conn []byte) bool {
	if bytes.IndexByte(name, '_') >= 0 && !g.opts.ForwardUnderscoreHeaders {
		return true
	}
	var buf [48]byte
	if len(name) <= len(buf) {
		n := foldHeaderName(buf[:0], name)
		if _, ok := droppedHeaderSet[string(n)]; ok {
			return true
		}
	}
	return connectionNames(conn, name)
}

// foldHeaderName appends name lower-cased with '_' as '-'.
func foldHeaderName(dst, name []byte) []byte {
	for _, b := range name {
		dst = append(dst, foldByte(b))
	}
	return dst
}

// sameHeaderName compares header names case-insensitively, '_' as '-'.
func sameHeaderName(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if foldByte(a[i]) != foldByte(b[i]) {
			return false
		}
	}
	return true
}

func foldByte(b byte) byte {
	switch {
	case b == '_':
		return '-'
	case 'A' <= b && b <= 'Z':
		return b + 'a' - 'A'
	}
	return b
}

// droppedHeaderSet holds strippedRequestHeaders folded, plus the headers
// the gateway sets itself.
var droppedHeaderSet = func() map[string]struct{} {
	m := map[string]struct{}{"host": {}, "content-length": {}}
	for _, h := range strippedRequestHeaders {
		m[string(foldHeaderName(nil, []byte(h)))] = struct{}{}
	}
	return m
}()

// copyResponseHeaders copies an upstream's response headers in one pass,
// without hop-by-hop headers, those its Connection header names, and
// those the gateway sets itself (strippedResponseHeaders).
func copyResponseHeaders(dst *fasthttp.ResponseHeader, src *fasthttp.ResponseHeader) {
	conn := src.Peek("Connection")
	for k, v := range src.All() {
		var buf [48]byte
		if len(k) <= len(buf) {
			if _, ok := droppedResponseSet[string(foldHeaderName(buf[:0], k))]; ok {
				continue
			}
		}
		if connectionNames(conn, k) {
			continue
		}
		dst.AddBytesKV(k, v)
	}
}

// connectionNames reports whether a Connection header value names name.
func connectionNames(conn, name []byte) bool {
	for len(conn) > 0 {
		var tok []byte
		if i := bytes.IndexByte(conn, ','); i >= 0 {
			tok, conn = conn[:i], conn[i+1:]
		} else {
			tok, conn = conn, nil
		}
		if tok = bytes.TrimSpace(tok); len(tok) > 0 && sameHeaderName(tok, name) {
			return true
		}
	}
	return false
}

var droppedResponseSet = func() map[string]struct{} {
	m := map[string]struct{}{"content-length": {}}
	for _, h := range strippedResponseHeaders {
		m[string(foldHeaderName(nil, []byte(h)))] = struct{}{}
	}
	return m
}()
