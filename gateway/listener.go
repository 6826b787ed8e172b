package gateway

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
)

// Listener wraps ln for the gateway's server: the head of the first
// request on each connection is checked for bare-LF line endings, which
// fasthttp would otherwise hold until the read timeout (it waits for a
// CRLF CRLF that never comes). Such a request is answered 400 at once and
// the connection closed. Later requests on a kept-alive connection are
// not checked: a client's line endings do not change mid-connection, and
// an idle connection is bounded by the idle timeout anyway.
func Listener(ln net.Listener) net.Listener { return lfListener{ln} }

type lfListener struct{ net.Listener }

func (l lfListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		return &lfTLSConn{lfConn: lfConn{Conn: c}, tc: tc}, nil
	}
	return &lfConn{Conn: c}, nil
}

// lfConn checks the first request head read from it. Read is called by
// one goroutine at a time (the server's connection loop).
type lfConn struct {
	net.Conn
	done    bool // the first head ended (or the check gave up)
	prev    byte // last byte seen
	lineLen int  // bytes since the last LF
}

var errBareLF = errors.New("gateway: bare LF in request head")

var bareLFAnswer = func() []byte {
	body := `{"error":"Malformed HTTP request","reason":"bare LF line endings"}`
	return []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

func (c *lfConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.done || n == 0 {
		return n, err
	}
	for _, b := range p[:n] {
		if b == '\n' {
			if c.prev != '\r' {
				c.done = true
				c.Conn.Write(bareLFAnswer)
				c.Conn.Close()
				return 0, errBareLF
			}
			if c.lineLen == 1 { // "\r\n" alone: the head ended
				c.done = true
				break
			}
			c.lineLen = 0
		} else {
			c.lineLen++
		}
		c.prev = b
	}
	if c.lineLen > 64<<10 {
		c.done = true // not HTTP we can judge; fasthttp answers it
	}
	return n, err
}

var _ io.Reader = (*lfConn)(nil)
