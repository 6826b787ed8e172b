package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/semaphore"
)

// Upstream connections.
//
// The gateway keeps idle keep-alive connections to each upstream for
// reuse, shorter than common upstream idle timeouts (catalog
// DefaultIdleTimeout, per tool idle_timeout_ms). An upstream may still
// close an idle connection just as the gateway picks it up; a request sent
// on it fails before any response byte, and the upstream never saw it. Two
// things make that case safe:
//
//   - before writing a request on a connection that has been idle for a
//     while, the gateway checks (a non-blocking peek) whether the peer has
//     closed it; a closed connection fails with errStaleConn without a byte
//     written;
//   - a request on a reused connection that ends before the first response
//     byte (EOF, reset) is sent once more, on a fresh connection
//     (Connection: close, so the retry client never pools).
//
// Nothing else is retried: a fresh connection that fails, a timeout, or a
// response cut after its first byte reach the caller as 502/504, unbilled.

// errStaleConn: a pooled connection was found closed by the upstream
// before the request was written.
var errStaleConn = errors.New("gateway: pooled upstream connection closed by the peer")

// probeIdle is how long a pooled connection must have been idle before it
// is checked for a peer close ahead of a request: a busy connection was
// used microseconds ago and cannot have hit an idle timeout.
const probeIdle = 100 * time.Millisecond

// upstreamConn wraps a connection to an upstream to know whether it has
// served before (reused) and whether the current exchange has read any
// response byte. It is used by one exchange at a time (fasthttp's pool
// hands a connection to one caller), except for Close from fasthttp's idle
// cleaner, which touches no field.
type upstreamConn struct {
	net.Conn
	exchanges int   // requests begun on this connection, by whoever sent them
	writing   bool  // between a request's first write and its first read
	readBytes int64 // response bytes read since the current request began
	// lastUse is when the previous exchange began: the idle time
	// measured from it is at least the real one, so a connection is
	// probed (peerClosed) at least as often as it should be, and no
	// clock is read per Read.
	lastUse time.Time
}

func (c *upstreamConn) Write(p []byte) (int, error) {
	if !c.writing {
		c.writing, c.readBytes = true, 0
		c.exchanges++
	}
	return c.Conn.Write(p)
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	c.writing = false
	n, err := c.Conn.Read(p)
	c.readBytes += int64(n)
	return n, err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// peerClosed reports whether the peer has closed (or reset) conn, without
// blocking and without consuming data: a MSG_PEEK of one byte answers EOF
// or an error on a dead connection, EAGAIN on a live idle one. Data waiting
// on an idle connection is a protocol error: the connection is not reused.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// n > 0: data on an idle connection; n == 0, no error: EOF.
		closed = err == nil || (err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR)
		_ = n
		return true
	})
	return closed
}

// wrapDial returns a fasthttp dialer producing upstreamConns.
func wrapDial(dial fasthttp.DialFunc, timeout time.Duration) fasthttp.DialFunc {
	return func(addr string) (net.Conn, error) {
		var conn net.Conn
		var err error
		if dial != nil {
			conn, err = dial(addr)
		} else {
			conn, err = fasthttp.DialTimeout(addr, timeout)
		}
		if err != nil {
			return nil, err
		}
		return &upstreamConn{Conn: conn, lastUse: time.Now()}, nil
	}
}

// upstreamClients holds the HostClients of the upstreams, one pooled and
// one fresh-connection client per (address, idle timeout).
type upstreamClients struct {
	mu sync.Mutex
	m  map[string]*upstreamClient
}

// upstreamClient is the pair of clients of one upstream address.
type upstreamClient struct {
	pooled *fasthttp.HostClient // keep-alive, idle connections kept for IdleTimeout
	fresh  *fasthttp.HostClient // retries: Connection: close, never pooled
}

func newHostClient(addr string, tls bool, idle time.Duration, dial fasthttp.DialFunc) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                      addr,
		IsTLS:                     tls,
		Name:                      "toolgate",
		NoDefaultUserAgentHeader:  true,
		MaxConns:                  4096,
		MaxIdemponentCallAttempts: 1, // the proxy decides what may be sent again
		MaxIdleConnDuration:       idle,
		ReadBufferSize:            16 << 10,
		SecureErrorLogMessage:     true, // errors never carry request or response bytes
		Dial:                      wrapDial(dial, 5*time.Second),
	}
}

// responseBudget bounds the bytes of upstream responses held in memory at
// once across all calls. A response reserves its Content-Length (or, when
// the length is unknown and the body outgrows smallBody, the rest of its
// tool's limit) before it is read; a caller whose response does not fit
// waits, within its tool's timeout, while its upstream connection holds the
// data. The first smallBody bytes of each response are outside the budget.
type responseBudget struct {
	sem   *semaphore.Weighted
	total int64
	held  atomic.Int64 // bytes acquired now (metric toolgate_response_buffer_bytes)
}

// release gives n bytes back to the budget.
func (b *responseBudget) release(n int64) {
	b.held.Add(-n)
	b.sem.Release(n)
}

const smallBody = 64 << 10

var (
	errTooLarge   = errors.New("gateway: upstream response larger than the tool's max_response_bytes")
	errBudgetWait = errors.New("gateway: response buffer budget not available in time")
)

// bodyBuf is an upstream response body that outlives the upstream
// response: a large one (held under the budget until written out), or one
// of unknown length read from the stream. Small bodies of known length stay
// in fasthttp's response buffer and need none.
type bodyBuf struct {
	b      []byte
	held   int64 // budget held
	budget *responseBudget
	pooled *[]byte // the small buffer b came from, returned on release
}

var smallBodies = sync.Pool{New: func() any { b := make([]byte, 0, smallBody); return &b }}

// release gives back the budget and a pooled buffer. The body must not be
// used after. Safe on nil.
func (bb *bodyBuf) release() {
	if bb == nil {
		return
	}
	if bb.held > 0 {
		bb.budget.release(bb.held)
		bb.held = 0
	}
	if bb.pooled != nil {
		*bb.pooled = (*bb.pooled)[:0]
		smallBodies.Put(bb.pooled)
		bb.pooled = nil
	}
	bb.b = nil
}

// Read and Close let a large body be written out as a body stream that
// gives its budget back once fasthttp has sent it.
func (bb *bodyBuf) Read(p []byte) (int, error) {
	if len(bb.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, bb.b)
	bb.b = bb.b[n:]
	return n, nil
}

func (bb *bodyBuf) Close() error { bb.release(); return nil }

// acquire takes n bytes of budget for bb, waiting until deadline.
func (bb *bodyBuf) acquire(n int64, deadline time.Time) error {
	b := bb.budget
	n = min(n, b.total)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := b.sem.Acquire(ctx, n); err != nil {
		return errBudgetWait
	}
	b.held.Add(n)
	bb.held += n
	return nil
}

// exchange sends req to the tool's upstream and reads the answer into
// resp (and c.body when the body outlives resp). A request found to go on
// a pooled connection the upstream had closed is sent on another (nothing
// was written), and a request on a reused connection that ended before the
// first response byte is sent once more on a fresh connection (see the top
// of this file); nothing else is retried.
func (g *Gateway) exchange(c *call, req *fasthttp.Request, resp *fasthttp.Response) error {
	now := time.Now()
	deadline := now.Add(c.rt.tool.Timeout)
	if !c.rawUp && len(req.Header.UserAgent()) == 0 {
		req.Header.SetUserAgentBytes(strToolgate)
	}
	hc := c.rt.client.pooled
	for probes := 0; ; now = time.Now() {
		retry, err := g.roundTrip(c, hc, req, resp, now, deadline)
		switch {
		case err == nil:
			return nil
		case !retry || hc == c.rt.client.fresh:
			return err
		case errors.Is(err, errStaleConn) && probes < 3:
			probes++ // nothing was written: the next pooled connection
			continue
		}
		g.metrics.upstreamRetries.Inc()
		req.SetConnectionClose()
		hc = c.rt.client.fresh
	}
}

var strToolgate = []byte("toolgate")

// roundTrip is one exchange on one connection of hc, begun at now. retry
// reports that the upstream cannot have received the request, so it may
// be sent again.
func (g *Gateway) roundTrip(c *call, hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, now, deadline time.Time) (retry bool, err error) {
	resp.Reset()
	c.body.release()
	c.body = nil
	cc, err := hc.AcquireConn(deadline.Sub(now), req.ConnectionClose())
	if err != nil {
		return false, err
	}
	uc, _ := cc.Conn().(*upstreamConn)
	reused := uc != nil && uc.exchanges > 0
	if reused && now.Sub(uc.lastUse) >= probeIdle && peerClosed(uc.Conn) {
		hc.CloseConn(cc)
		return true, errStaleConn
	}
	if uc != nil {
		uc.lastUse = now
	}
	conn := cc.Conn()
	if err := conn.SetDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return false, err
	}
	bw := hc.AcquireWriter(conn)
	if c.rawUp {
		c.head = g.appendUpstreamHead(c.head[:0], c, req.ConnectionClose())
		_, err = bw.Write(c.head)
		if err == nil {
			_, err = bw.Write(c.req.body)
		}
	} else {
		err = req.Write(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		return reused && !isTimeout(err), err
	}
	br := hc.AcquireReader(conn)
	if err := readHead(resp, br); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return reused && uc.readBytes == 0 && !isTimeout(err), err
	}
	keep, err := g.readBody(c, req, resp, br, deadline)
	hc.ReleaseReader(br)
	if err != nil || !keep || req.ConnectionClose() || resp.ConnectionClose() {
		hc.CloseConn(cc)
		return false, err
	}
	hc.ReleaseConn(cc)
	return false, nil
}

var errInterim = errors.New("gateway: too many interim (1xx) responses")

// readHead reads the response head, skipping interim 1xx answers.
func readHead(resp *fasthttp.Response, br *bufio.Reader) error {
	for i := 0; ; i++ {
		if err := resp.Header.Read(br); err != nil {
			return err
		}
		if sc := resp.Header.StatusCode(); sc >= 200 || sc < 100 || sc == fasthttp.StatusSwitchingProtocols {
			return nil
		}
		if i >= 8 {
			return errInterim
		}
	}
}

// readBody reads the response body, at most the tool's max_response_bytes,
// under the budget. A body of known length goes into resp (and, past
// smallBody, is moved to c.body so that it outlives resp); one of unknown
// length is read from the stream into c.body. keep reports whether the
// connection can serve another request.
func (g *Gateway) readBody(c *call, req *fasthttp.Request, resp *fasthttp.Response, br *bufio.Reader, deadline time.Time) (keep bool, err error) {
	sc := resp.Header.StatusCode()
	if req.Header.IsHead() || sc == fasthttp.StatusNoContent || sc == fasthttp.StatusNotModified || sc < 200 {
		return true, nil
	}
	limit := c.rt.tool.MaxResponseBytes
	n := int64(resp.Header.ContentLength())
	switch {
	case n > limit:
		return false, errTooLarge
	case n > smallBody:
		c.body = &bodyBuf{budget: g.budget}
		if err := c.body.acquire(n-smallBody, deadline); err != nil {
			return false, err
		}
		if err := resp.ReadBody(br, int(limit)); err != nil {
			return false, err
		}
		c.body.b = resp.SwapBody(nil) // outlives resp; its buffer is not pooled
		return true, nil
	case n >= 0:
		return true, resp.ReadBody(br, int(limit))
	}
	// Unknown length: chunked (-1) or until close (-2).
	resp.StreamBody = true
	if err := resp.ReadBody(br, int(limit)); err != nil {
		return false, err
	}
	c.body = &bodyBuf{budget: g.budget}
	err = c.body.readStream(resp.BodyStream(), limit, deadline)
	resp.CloseBodyStream()
	return n == -1 && err == nil, err
}

// readStream reads a body of unknown length: into a small pooled buffer,
// then, past it, under a reservation of the rest of the limit taken at
// once (never piecemeal, so that two readers cannot deadlock holding
// halves), giving back what turns out unused.
func (bb *bodyBuf) readStream(r io.Reader, limit int64, deadline time.Time) error {
	bb.pooled = smallBodies.Get().(*[]byte)
	bb.b = (*bb.pooled)[:0]
	for {
		if int64(len(bb.b)) >= limit {
			var one [1]byte
			if m, err := io.ReadFull(r, one[:]); m > 0 {
				return errTooLarge
			} else if !errors.Is(err, io.EOF) {
				return err
			}
			return nil
		}
		if len(bb.b) == cap(bb.b) {
			if bb.held == 0 {
				if err := bb.acquire(limit-smallBody, deadline); err != nil {
					return err
				}
			}
			grown := make([]byte, len(bb.b), min(int64(cap(bb.b))*2, limit))
			copy(grown, bb.b)
			if bb.pooled != nil {
				*bb.pooled = (*bb.pooled)[:0]
				smallBodies.Put(bb.pooled)
				bb.pooled = nil
			}
			bb.b = grown
		}
		m, err := r.Read(bb.b[len(bb.b):min(int64(cap(bb.b)), limit)])
		bb.b = bb.b[:len(bb.b)+m]
		if errors.Is(err, io.EOF) {
			if over := bb.held - max(int64(len(bb.b))-smallBody, 0); over > 0 {
				bb.budget.release(over)
				bb.held -= over
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}
