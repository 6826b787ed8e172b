package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"

	"github.com/valyala/fasthttp"
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
	hdrToolgateCost, // a metered tool's cost report (metered.go)
}

var (
	strHTTP11    = []byte("HTTP/1.1")
	hdrXFF       = []byte("X-Forwarded-For")
	hdrXFProto   = []byte("X-Forwarded-Proto")
	hdrPrincipal = []byte("X-Toolgate-Principal")
	strHTTP      = []byte("http")
	strHTTPS     = []byte("https")
)

// upstream calls the tool's upstream (stage 7) with c.upResp, which the
// front end provides and releases. It returns nil when an answer came
// (c.upStatus, body in c.upResp or c.body), else the failure's decision.
func (g *Gateway) upstream(c *call) *Decision {
	if c.rt.tool.MCPTool != "" {
		return g.upstreamMCP(c)
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	if c.rt.rawUp && c.req.protocol == "rest" {
		// The head is written from the caller's headers straight into
		// the connection's buffer (appendUpstreamHead); req carries only
		// what the exchange reads: the method and Connection: close.
		c.rawUp = true
		setUpstreamMethod(c, &req.Header)
	} else {
		g.prepareUpstreamRequest(c, req)
	}
	t0 := g.now()
	err := g.exchange(c, req, c.upResp) // c.body, if set, is released with c
	c.upLatency, c.upAt = g.now().Sub(t0), t0.Sub(c.start)
	c.rt.upstreamSeconds.Observe(seconds(c.upLatency))
	if err != nil {
		return g.upstreamFailure(c, err)
	}
	c.upStatus = c.upResp.StatusCode()
	return nil
}

// upstreamFailure is the answer to a call whose upstream exchange failed:
// what happened, in words the caller can act on.
func (g *Gateway) upstreamFailure(c *call, err error) *Decision {
	status, reason, msg := 502, "upstream_closed", "Upstream closed the connection before answering"
	var op *net.OpError
	switch {
	case errors.Is(err, fasthttp.ErrTimeout) || isTimeout(err):
		status, reason, msg = 504, "upstream_timeout", "Upstream timed out"
	case errors.Is(err, errTooLarge):
		g.log.Warn("upstream response too large", "request_id", string(c.reqID), "tool", c.rt.tool.ID, "limit_bytes", c.rt.tool.MaxResponseBytes)
		return c.decide(502, outUpstreamError, "upstream_response_too_large", "Upstream response too large").
			num("limit_bytes", c.rt.tool.MaxResponseBytes)
	case errors.Is(err, errBudgetWait):
		g.log.Warn("response buffer budget exhausted", "request_id", string(c.reqID), "tool", c.rt.tool.ID)
		d := c.decide(503, outUpstreamError, "response_buffer_full", "Gateway response buffers are full; the call was not billed").
			flag("retry", true)
		d.RetryAfter = 1
		return d
	case errors.As(err, &op) && op.Op == "dial", errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, fasthttp.ErrNoFreeConns):
		status, reason, msg = 502, "upstream_unreachable", "Upstream unreachable"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, errStaleConn), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		status, reason, msg = 502, "upstream_bad_response", "Upstream sent an invalid response"
	}
	g.log.Warn("upstream failed", "request_id", string(c.reqID), "tool", c.rt.tool.ID, "reason", reason, "err", err)
	return c.decide(status, outUpstreamError, reason, msg)
}

// prepareUpstreamRequest builds the upstream request in one pass over the
// caller's headers: HTTP/1.1 always (a caller's HTTP/1.0 or Connection:
// close must not end a pooled upstream connection unannounced), without
// the headers of dropRequestHeader, with the gateway's own forwarding,
// request id and principal headers.
func (g *Gateway) prepareUpstreamRequest(c *call, req *fasthttp.Request) {
	out := &req.Header
	if in := c.req.header; in != nil {
		hc := headerCopies.Get().(*headerCopy)
		hc.g, hc.out, hc.conn = g, out, in.Peek("Connection")
		in.All()(hc.yield)
		*hc = headerCopy{yield: hc.yield}
		headerCopies.Put(hc)
	}
	setUpstreamMethod(c, out)
	out.SetProtocolBytes(strHTTP11)
	uri := req.URI()
	if c.rt.upURI != nil {
		c.rt.upURI.CopyTo(uri) // parsed once per route
	} else {
		uri.Update(c.rt.uri)
	}
	if len(c.req.query) > 0 {
		uri.SetQueryStringBytes(c.req.query)
	}
	out.SetHostBytes(uri.Host())
	req.UseHostHeader = false
	req.SetBodyRaw(c.req.body)

	var ipb [64]byte
	if c.req.source.IsValid() {
		out.SetBytesKV(hdrXFF, c.req.source.AppendTo(ipb[:0]))
	}
	if c.req.tls {
		out.SetBytesKV(hdrXFProto, strHTTPS)
	} else {
		out.SetBytesKV(hdrXFProto, strHTTP)
	}
	out.SetBytesKV(hdrRequestID, c.reqID)
	out.SetBytesK(hdrPrincipal, c.principal())
}

func setUpstreamMethod(c *call, h *fasthttp.RequestHeader) {
	if len(c.req.method) > 0 {
		h.SetMethodBytes(c.req.method)
	} else {
		h.SetMethod(fasthttp.MethodPost)
	}
}

// appendUpstreamHead appends the head of a REST call's upstream request:
// the bytes prepareUpstreamRequest and fasthttp's Request.Write produce
// (TestAppendUpstreamHead_SameAsFasthttp), written in one pass over the
// caller's parsed headers without building a fasthttp.Request (no
// per-header copy into it, no second serialization). close adds
// Connection: close (a retry on a fresh connection).
func (g *Gateway) appendUpstreamHead(dst []byte, c *call, close bool) []byte {
	method := c.req.method
	if len(method) == 0 {
		method = strPOST
	}
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, c.rt.upPath...)
	if len(c.req.query) > 0 {
		dst = append(dst, '?')
		dst = append(dst, c.req.query...)
	}
	dst = append(dst, " HTTP/1.1\r\n"...)

	in := c.req.header
	var conn, ua, ct []byte
	if in != nil {
		conn = in.Peek("Connection")
		if rh, ok := in.(*fasthttp.RequestHeader); ok {
			ua, ct = rh.UserAgent(), rh.ContentType()
		} else {
			ua, ct = in.Peek("User-Agent"), in.Peek("Content-Type")
		}
		if len(ua) > 0 && g.dropRequestHeader(strUserAgent, conn) {
			ua = nil
		}
		if len(ct) > 0 && g.dropRequestHeader(strContentType, conn) {
			ct = nil
		}
	}
	if len(ua) == 0 {
		ua = strToolgate // exchange's default for a caller without one
	}
	dst = appendHeaderLine(dst, strUserAgent, ua)
	dst = appendHeaderLine(dst, strHost, c.rt.upHost)
	body := c.req.body
	hasBody := len(body) > 0 || !(bytes.Equal(method, strGET) || bytes.Equal(method, strHEAD))
	if len(ct) == 0 && len(body) > 0 {
		ct = strOctetStream // fasthttp's default for a body without a type
	}
	if len(ct) > 0 {
		dst = appendHeaderLine(dst, strContentType, ct)
	}
	if hasBody {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
		dst = append(dst, '\r', '\n')
	}
	if in != nil {
		hw := headWriters.Get().(*headWriter)
		hw.g, hw.dst, hw.conn = g, dst, conn
		in.All()(hw.yield)
		dst = hw.dst
		*hw = headWriter{yield: hw.yield}
		headWriters.Put(hw)
	}
	if c.req.source.IsValid() {
		dst = append(dst, hdrXFF...)
		dst = append(dst, ':', ' ')
		dst = c.req.source.AppendTo(dst)
		dst = append(dst, '\r', '\n')
	}
	if c.req.tls {
		dst = appendHeaderLine(dst, hdrXFProto, strHTTPS)
	} else {
		dst = appendHeaderLine(dst, hdrXFProto, strHTTP)
	}
	dst = appendHeaderLine(dst, hdrRequestID, c.reqID)
	dst = append(dst, hdrPrincipal...)
	dst = append(dst, ':', ' ')
	dst = appendHeaderValue(dst, c.principal())
	dst = append(dst, '\r', '\n')
	if close {
		dst = append(dst, "Connection: close\r\n"...)
	}
	return append(dst, '\r', '\n')
}

// headWriter is the header pass of appendUpstreamHead, pooled with its
// yield bound once like headerCopy. Host, Content-Length, Content-Type
// and User-Agent are written before it (fasthttp's order).
type headWriter struct {
	g     *Gateway
	dst   []byte
	conn  []byte
	yield func(k, v []byte) bool
}

var headWriters = sync.Pool{New: func() any {
	hw := &headWriter{}
	hw.yield = hw.add
	return hw
}}

func (hw *headWriter) add(k, v []byte) bool {
	if bytes.Equal(k, strContentType) || bytes.Equal(k, strUserAgent) || hw.g.dropRequestHeader(k, hw.conn) {
		return true
	}
	hw.dst = append(hw.dst, k...)
	hw.dst = append(hw.dst, ':', ' ')
	hw.dst = appendHeaderValue(hw.dst, v)
	hw.dst = append(hw.dst, '\r', '\n')
	return true
}

func appendHeaderLine(dst, k, v []byte) []byte {
	dst = append(dst, k...)
	dst = append(dst, ':', ' ')
	dst = appendHeaderValue(dst, v)
	return append(dst, '\r', '\n')
}

// appendHeaderValue appends a header value with CR and LF as spaces, as
// fasthttp's header setters store them: a value never ends the line.
func appendHeaderValue[T []byte | string](dst []byte, v T) []byte {
	n := len(dst)
	dst = append(dst, v...)
	for i := n; i < len(dst); i++ {
		if dst[i] == '\r' || dst[i] == '\n' {
			dst[i] = ' '
		}
	}
	return dst
}

var (
	strPOST        = []byte(fasthttp.MethodPost)
	strGET         = []byte(fasthttp.MethodGet)
	strHEAD        = []byte(fasthttp.MethodHead)
	strHost        = []byte("Host")
	strUserAgent   = []byte("User-Agent")
	strContentType = []byte("Content-Type")
	strOctetStream = []byte("application/octet-stream")
)

// headerCopy is one pass of prepareUpstreamRequest over a caller's
// headers. It is pooled with its yield function bound once, so that the
// pass allocates nothing (a range-over-func loop body capturing the
// request would be allocated on every call).
type headerCopy struct {
	g     *Gateway
	out   *fasthttp.RequestHeader
	conn  []byte // the caller's Connection header
	yield func(k, v []byte) bool
}

var headerCopies = sync.Pool{New: func() any {
	hc := &headerCopy{}
	hc.yield = hc.add
	return hc
}}

func (hc *headerCopy) add(k, v []byte) bool {
	if !hc.g.dropRequestHeader(k, hc.conn) {
		hc.out.AddBytesKV(k, v)
	}
	return true
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
	rc := responseCopies.Get().(*responseCopy)
	rc.dst, rc.conn = dst, src.Peek("Connection")
	src.All()(rc.yield)
	*rc = responseCopy{yield: rc.yield}
	responseCopies.Put(rc)
}

// responseCopy is one pass of copyResponseHeaders, pooled like headerCopy.
type responseCopy struct {
	dst   *fasthttp.ResponseHeader
	conn  []byte
	yield func(k, v []byte) bool
}

var responseCopies = sync.Pool{New: func() any {
	rc := &responseCopy{}
	rc.yield = rc.add
	return rc
}}

func (rc *responseCopy) add(k, v []byte) bool {
	var buf [48]byte
	if len(k) <= len(buf) {
		if _, ok := droppedResponseSet[string(foldHeaderName(buf[:0], k))]; ok {
			return true
		}
	}
	if !connectionNames(rc.conn, k) {
		rc.dst.AddBytesKV(k, v)
	}
	return true
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
