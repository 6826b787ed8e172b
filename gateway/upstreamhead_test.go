package gateway

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
)

// TestAppendUpstreamHead_SameAsFasthttp: the REST upstream request written
// in one pass (appendUpstreamHead and the body) is byte for byte what
// prepareUpstreamRequest and fasthttp's Request.Write send, for requests
// parsed the way the server parses them: with and without a body, a
// type, a user agent, a query; hop-by-hop, identity, underscore and
// Connection-named headers; repeated headers; a retry's Connection: close;
// TLS and an IPv6 source.
func TestAppendUpstreamHead_SameAsFasthttp(t *testing.T) {
	env := newBenchEnv(t, ledger.SyncInterval)
	defer env.close()
	st := env.g.state.Load()
	rt := st.routes[0]
	if !rt.rawUp {
		t.Fatalf("route %s: upstream head not written directly", rt.tool.ID)
	}
	key := "X-Api-Key: " + env.secret + "\r\n"
	cases := []struct {
		name, raw string
		tls       bool
		src       string
	}{
		{name: "post json", raw: "POST /tools/x?lang=en HTTP/1.1\r\nHost: gw\r\n" + key +
			"Content-Type: application/json\r\nUser-Agent: agent/1.0\r\nAccept: */*\r\nContent-Length: 11\r\n\r\n{\"a\":\"b c\"}"},
		{name: "post without type or agent", raw: "POST /tools/x HTTP/1.1\r\nHost: gw\r\n" + key + "Content-Length: 3\r\n\r\nabc"},
		{name: "post empty", raw: "POST /tools/x HTTP/1.1\r\nHost: gw\r\n" + key + "Content-Length: 0\r\n\r\n"},
		{name: "get with query", raw: "GET /tools/x?q=a%20b&r=1 HTTP/1.1\r\nHost: gw\r\n" + key + "Accept-Encoding: gzip\r\n\r\n", tls: true},
		{name: "head", raw: "HEAD /tools/x HTTP/1.1\r\nHost: gw\r\n" + key + "\r\n", src: "2001:db8::7"},
		{name: "stripped and named", raw: "POST /tools/x HTTP/1.0\r\nHost: gw\r\nAuthorization: Bearer " + env.secret + "\r\n" +
			"Cookie: a=b\r\nConnection: keep-alive, X-Trace, User-Agent\r\nX-Trace: t\r\nUser-Agent: ua\r\nX_Under: u\r\n" +
			"X-Forwarded-For: 6.6.6.6\r\nX-Toolgate-Principal: evil\r\nX-Request-Id: mine\r\nTe: trailers\r\nKeep-Alive: 5\r\n" +
			"Upgrade: h2c\r\nX-Payment: p\r\nContent-Length: 2\r\n\r\nhi"},
		{name: "repeated", raw: "PUT /tools/x HTTP/1.1\r\nHost: gw\r\n" + key + "X-A: 1\r\nx-a: 2\r\nAccept: a\r\nContent-Type: text/plain\r\n" +
			"Content-Length: 1\r\n\r\nz"},
	}
	for _, tc := range cases {
		for _, close := range []bool{false, true} {
			var ctx fasthttp.RequestCtx
			src := "192.0.2.1"
			if tc.src != "" {
				src = tc.src
			}
			var parsed fasthttp.Request
			if err := parsed.Read(bufio.NewReader(strings.NewReader(tc.raw))); err != nil {
				t.Fatalf("%s: parse: %v", tc.name, err)
			}
			ctx.Init(&parsed, &net.TCPAddr{IP: net.ParseIP(src), Port: 4000}, nil)
			c := acquireCall()
			c.start = env.g.now()
			c.st, c.rt = st, rt
			c.reqID = env.g.appendRequestID(c.reqID)
			env.g.restRequest(&ctx, &c.req)
			c.req.tls = tc.tls
			if d := env.g.identify(c); d != nil {
				t.Fatalf("%s: not identified: %s", tc.name, d.Reason)
			}

			req := fasthttp.AcquireRequest()
			env.g.prepareUpstreamRequest(c, req)
			if len(req.Header.UserAgent()) == 0 {
				req.Header.SetUserAgentBytes(strToolgate) // as exchange does
			}
			if close {
				req.SetConnectionClose()
			}
			var want bytes.Buffer
			bw := bufio.NewWriter(&want)
			if err := req.Write(bw); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			fasthttp.ReleaseRequest(req)

			got := append(env.g.appendUpstreamHead(nil, c, close), c.req.body...)
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("%s (close %v):\n got %q\nwant %q", tc.name, close, got, want.Bytes())
			}
			releaseCall(c)
		}
	}
}

// TestAppendUpstreamHead_Allocs: writing the upstream head allocates at
// most once (fasthttp's header iterator), into the call's kept buffer.
func TestAppendUpstreamHead_Allocs(t *testing.T) {
	env := newBenchEnv(t, ledger.SyncInterval)
	defer env.close()
	var ctx fasthttp.RequestCtx
	raw := "POST /tools/x?lang=en HTTP/1.1\r\nHost: gw\r\nX-Api-Key: " + env.secret +
		"\r\nContent-Type: application/json\r\nUser-Agent: agent/1.0\r\nAccept: */*\r\nContent-Length: 2\r\n\r\n{}"
	if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	st := env.g.state.Load()
	c := acquireCall()
	defer releaseCall(c)
	c.start = env.g.now()
	c.st, c.rt = st, st.routes[0]
	env.g.restRequest(&ctx, &c.req)
	if env.g.identify(c) != nil {
		t.Fatal("not identified")
	}
	run := func() { c.head = env.g.appendUpstreamHead(c.head[:0], c, false) }
	run()
	if n := testing.AllocsPerRun(1000, run); n > 1 {
		t.Fatalf("appendUpstreamHead allocates %v times per call, want at most 1", n)
	}
}

// BenchmarkUpstreamHead: the REST upstream request's head and body, built
// as a fasthttp.Request and serialized (Fasthttp, before) or written in
// one pass (Direct).
func BenchmarkUpstreamHead(b *testing.B) {
	env := newBenchEnv(b, ledger.SyncInterval)
	defer env.close()
	var ctx fasthttp.RequestCtx
	raw := "POST /tools/x HTTP/1.1\r\nHost: 127.0.0.1:18084\r\nX-Api-Key: " + env.secret +
		"\r\nContent-Type: application/json\r\nContent-Length: 43\r\n\r\n{\"text\":\"Invoice 42 from ACME, total $120\"}"
	var parsed fasthttp.Request
	if err := parsed.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	ctx.Init(&parsed, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 4000}, nil)
	st := env.g.state.Load()
	c := acquireCall()
	defer releaseCall(c)
	c.start = env.g.now()
	c.st, c.rt = st, st.routes[0]
	c.reqID = env.g.appendRequestID(c.reqID)
	env.g.restRequest(&ctx, &c.req)
	if env.g.identify(c) != nil {
		b.Fatal("not identified")
	}
	bw := bufio.NewWriterSize(discard{}, 16<<10)
	b.Run("Fasthttp", func(b *testing.B) {
		for b.Loop() {
			req := fasthttp.AcquireRequest()
			env.g.prepareUpstreamRequest(c, req)
			if len(req.Header.UserAgent()) == 0 {
				req.Header.SetUserAgentBytes(strToolgate)
			}
			req.Write(bw)
			bw.Flush()
			fasthttp.ReleaseRequest(req)
		}
	})
	b.Run("Direct", func(b *testing.B) {
		for b.Loop() {
			req := fasthttp.AcquireRequest()
			setUpstreamMethod(c, &req.Header)
			c.head = env.g.appendUpstreamHead(c.head[:0], c, req.ConnectionClose())
			bw.Write(c.head)
			bw.Write(c.req.body)
			bw.Flush()
			fasthttp.ReleaseRequest(req)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
