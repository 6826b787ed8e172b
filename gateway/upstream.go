package gateway

import (
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

// upstreamConn wraps a connection to an upstream to tell, after a failed
// exchange, whether a reused connection was closed by the peer before it
// answered. It is used by one exchange at a time (fasthttp's pool hands a
// connection to one caller), except for Close from fasthttp's idle
// cleaner, which touches no field.
type upstreamConn struct {
	net.Conn
	laddr connAddr

	exchanges int       // requests begun on this connection
	writing   bool      // between a request's first write and its first read
	readBytes int64     // response bytes read since the request was written
	lastUse   time.Time // end of the previous exchange's last read
	stale     atomic.Bool
}

// connAddr is the LocalAddr of an upstreamConn. fasthttp keeps a
// connection's LocalAddr in the response (Response.LocalAddr), which is how
// the proxy finds the connection of a failed exchange.
type connAddr struct {
	net.Addr
	c *upstreamConn
}

func (c *upstreamConn) LocalAddr() net.Addr { return &c.laddr }

func (c *upstreamConn) Write(p []byte) (int, error) {
	if !c.writing {
		c.writing, c.readBytes = true, 0
		c.exchanges++
		if c.exchanges > 1 && time.Since(c.lastUse) >= probeIdle && peerClosed(c.Conn) {
			c.stale.Store(true)
			return 0, errStaleConn
		}
	}
	return c.Conn.Write(p)
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	c.writing = false
	n, err := c.Conn.Read(p)
	c.readBytes += int64(n)
	if err != nil && c.readBytes == 0 && c.exchanges > 1 && !isTimeout(err) {
		c.stale.Store(true) // reused, closed before the first response byte
	}
	c.lastUse = time.Now()
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
		uc := &upstreamConn{Conn: conn, lastUse: time.Now()}
		uc.laddr = connAddr{Addr: conn.LocalAddr(), c: uc}
		return uc, nil
	}
}

// staleExchange reports whether resp's failed exchange ran on a reused
// connection that the upstream closed before answering.
func staleExchange(resp *fasthttp.Response) bool {
	a, ok := resp.LocalAddr().(*connAddr)
	return ok && a.c.stale.Load()
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

// bodyBuf is an upstream response body read under the budget.
type bodyBuf struct {
	b      []byte
	held   int64 // budget held
	budget *responseBudget
	pooled bool
}

var smallBodies = sync.Pool{New: func() any { b := make([]byte, 0, smallBody); return &b }}

// release gives back the budget and, for a small body, its buffer. The
// body must not be used after.
func (bb *bodyBuf) release() {
	if bb.held > 0 {
		bb.budget.release(bb.held)
		bb.held = 0
	}
	if bb.pooled {
		b := bb.b[:0]
		smallBodies.Put(&b)
		bb.pooled = false
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

// readBody reads resp's streamed body, at most limit bytes, under the
// budget, waiting for budget until deadline. The caller releases the
// returned body once it has been copied or written out, also on error.
func (b *responseBudget) readBody(resp *fasthttp.Response, limit int64, deadline time.Time) (*bodyBuf, error) {
	bb := &bodyBuf{budget: b}
	acquire := func(n int64) error {
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
	r := resp.BodyStream()
	if r == nil {
		bb.b = resp.Body()
		return bb, nil
	}
	n := int64(resp.Header.ContentLength())
	if n > limit {
		return bb, errTooLarge
	}
	if n > smallBody {
		if err := acquire(n - smallBody); err != nil {
			return bb, err
		}
		bb.b = make([]byte, n)
		_, err := io.ReadFull(r, bb.b)
		return bb, err
	}
	bb.b, bb.pooled = (*smallBodies.Get().(*[]byte))[:0], true
	if n >= 0 {
		bb.b = bb.b[:n]
		_, err := io.ReadFull(r, bb.b)
		return bb, err
	}
	// Unknown length (chunked, or until close): read into the small
	// buffer, then reserve the rest of the limit at once (never piecemeal,
	// so that two readers cannot deadlock holding halves) and give back
	// what is unused.
	for {
		if int64(len(bb.b)) >= limit {
			var one [1]byte
			if m, err := io.ReadFull(r, one[:]); m > 0 {
				return bb, errTooLarge
			} else if !errors.Is(err, io.EOF) {
				return bb, err
			}
			return bb, nil
		}
		if len(bb.b) == cap(bb.b) {
			if bb.held == 0 {
				if err := acquire(limit - smallBody); err != nil {
					return bb, err
				}
			}
			grown := make([]byte, len(bb.b), min(int64(cap(bb.b))*2, limit))
			copy(grown, bb.b)
			if bb.pooled {
				old := bb.b[:0]
				smallBodies.Put(&old)
				bb.pooled = false
			}
			bb.b = grown
		}
		m, err := r.Read(bb.b[len(bb.b):min(int64(cap(bb.b)), limit)])
		bb.b = bb.b[:len(bb.b)+m]
		if errors.Is(err, io.EOF) {
			if over := bb.held - max(int64(len(bb.b))-smallBody, 0); over > 0 {
				b.release(over)
				bb.held -= over
			}
			return bb, nil
		}
		if err != nil {
			return bb, err
		}
	}
}
