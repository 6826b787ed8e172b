package gateway

import (
	"bytes"
	"errors"
	"net/netip"

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

	prepareUpstreamRequest(ctx, req, c)
	t0 := g.now()
	err := c.rt.client.DoTimeout(req, resp, c.rt.tool.Timeout)
	c.upLatency = g.now().Sub(t0)
	c.rt.upstreamSeconds.Observe(seconds(c.upLatency))

	paidAhead := c.settled != nil // before_upstream: the money has moved
	var upFail *denial
	if err != nil {
		status, reason, msg := 502, "upstream_unreachable", "Upstream unreachable"
		if errors.Is(err, fasthttp.ErrTimeout) {
			status, reason, msg = 504, "upstream_timeout", "Upstream timed out"
		}
		g.log.Warn("upstream failed", "request_id", string(c.reqID), "tool", c.rt.tool.ID, "err", err)
		upFail = &denial{status: status, outcome: outUpstreamError, reason: reason, body: errorBody(msg)}
		if !paidAhead {
			if c.reserved {
				g.spend.Release(c.res)
				c.reserved = false
			}
			g.deny(ctx, c, upFail)
			return
		}
	} else {
		c.upStatus = resp.StatusCode()
	}

	// Bill only a served call (upstream < 400), or one already settled.
	billable := c.reserved && (paidAhead || c.upStatus < 400)
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
	if !billable && c.pay != nil {
		g.releaseNonce(c) // not served: the authorization stays unspent
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
	if billable {
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
	} else {
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
		h.SetBytesKV(hdrPolicyAllowed, strTrue)
	} else {
		// Answer with the upstream's response.
		resp.Header.CopyTo(h)
		for _, name := range strippedResponseHeaders {
			h.Del(name)
		}
		delConnectionTokens(h, resp.Header.Peek("Connection"))
		ctx.Response.SetBody(resp.Body())
		h.SetBytesKV(hdrPolicyAllowed, strTrue)
	}
	h.SetBytesKV(hdrRequestID, c.reqID)
	h.SetBytesKV(hdrTool, s2b(c.rt.tool.ID))
	h.SetBytesKV(hdrACAO, strStar)
	h.SetBytesKV(hdrACEH, strExposeHeader)
	var cb [24]byte
	h.SetBytesKV(hdrCost, c.cost.AppendDecimal(cb[:0], 3))
	if sr != nil {
		h.SetBytesKV(c.paymentResponseHeader(), x402.AppendSettleResponse(nil, sr.Response()))
	}
}

func prepareUpstreamRequest(ctx *fasthttp.RequestCtx, req *fasthttp.Request, c *call) {
	in := &ctx.Request.Header
	in.CopyTo(&req.Header)
	for _, name := range strippedRequestHeaders {
		req.Header.Del(name)
	}
	delConnectionTokens(&req.Header, in.Peek("Connection"))
	req.Header.SetMethodBytes(ctx.Method())
	uri := req.URI()
	uri.Update(c.rt.uri)
	if q := ctx.URI().QueryString(); len(q) > 0 {
		uri.SetQueryStringBytes(q)
	}
	req.Header.SetHostBytes(uri.Host())
	req.UseHostHeader = false
	req.SetBodyRaw(ctx.Request.Body())

	var ipb [64]byte
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		req.Header.SetBytesKV(hdrXFF, ip.Unmap().AppendTo(ipb[:0]))
	}
	if ctx.IsTLS() {
		req.Header.SetBytesKV(hdrXFProto, strHTTPS)
	} else {
		req.Header.SetBytesKV(hdrXFProto, strHTTP)
	}
	req.Header.SetBytesKV(hdrRequestID, c.reqID)
	req.Header.SetBytesKV(hdrPrincipal, s2b(c.principal))
}

// headerDeleter is implemented by fasthttp's request and response headers.
type headerDeleter interface{ DelBytes(key []byte) }

// delConnectionTokens deletes the headers named in a Connection header:
// they are hop-by-hop too (RFC 9110 section 7.6.1).
func delConnectionTokens(h headerDeleter, conn []byte) {
	for len(conn) > 0 {
		var tok []byte
		if i := bytes.IndexByte(conn, ','); i >= 0 {
			tok, conn = conn[:i], conn[i+1:]
		} else {
			tok, conn = conn, nil
		}
		if tok = bytes.TrimSpace(tok); len(tok) > 0 {
			h.DelBytes(tok)
		}
	}
}
