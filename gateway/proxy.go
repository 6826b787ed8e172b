package gateway

import (
	"bytes"
	"errors"
	"net/netip"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
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

// forward sends an allowed call upstream (stage 7), records it and
// answers (stage 8). It owns the call's quota slot and reservation.
func (g *Gateway) forward(ctx *fasthttp.RequestCtx, c *call) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	prepareUpstreamRequest(ctx, req, c)
	t0 := g.now()
	err := c.rt.client.DoTimeout(req, resp, c.rt.tool.Timeout)
	c.upLatency = g.now().Sub(t0)

	if err != nil {
		status, reason, msg := 502, "upstream_unreachable", "Upstream unreachable"
		if errors.Is(err, fasthttp.ErrTimeout) {
			status, reason, msg = 504, "upstream_timeout", "Upstream timed out"
		}
		g.log.Warn("upstream failed", "request_id", string(c.reqID), "tool", c.rt.tool.ID, "err", err)
		if c.reserved {
			g.spend.Release(c.res)
			c.reserved = false
		}
		g.deny(ctx, c, &denial{status: status, outcome: outUpstreamError, reason: reason, body: errorBody(msg)})
		return
	}
	c.upStatus = resp.StatusCode()

	var rec *ledger.Record
	var ticket ledger.Ticket
	if c.reserved && c.upStatus < 400 {
		c.cost = c.rt.tool.Price
		rec = g.callRecord(c, outAllowed, "", c.upStatus)
		g.spend.Commit(c.res, func(cm meter.Committed) {
			if cm.HasBalance {
				bal := cm.BalanceAfter
				ticket = g.led.Append(rec, &ledger.Record{
					Type: "txn", At: c.start, RequestID: rec.RequestID, Principal: c.principal,
					Tool: rec.Tool, Kind: "debit", Amount: c.cost, BalanceAfter: &bal,
				})
				return
			}
			ticket = g.led.Append(rec)
		})
		c.reserved = false
	} else {
		if c.reserved {
			g.spend.Release(c.res)
			c.reserved = false
		}
		reason := ""
		if c.upStatus >= 400 {
			reason = "upstream_status_not_billed"
		}
		rec = g.callRecord(c, outAllowed, reason, c.upStatus)
		ticket = g.led.Append(rec)
	}
	if err := ticket.Wait(); err != nil {
		g.ledgerFailed(ctx, c, err)
		return
	}

	// Answer with the upstream's response.
	resp.Header.CopyTo(&ctx.Response.Header)
	for _, name := range strippedResponseHeaders {
		ctx.Response.Header.Del(name)
	}
	delConnectionTokens(&ctx.Response.Header, resp.Header.Peek("Connection"))
	ctx.Response.SetBody(resp.Body())
	h := &ctx.Response.Header
	h.SetBytesKV(hdrRequestID, c.reqID)
	h.SetBytesKV(hdrTool, s2b(c.rt.tool.ID))
	h.SetBytesKV(hdrACAO, strStar)
	h.SetBytesKV(hdrACEH, strExposeHeader)
	h.SetBytesKV(hdrPolicyAllowed, strTrue)
	var cb [24]byte
	h.SetBytesKV(hdrCost, c.cost.AppendDecimal(cb[:0], 3))
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
