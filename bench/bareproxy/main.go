// Command bareproxy is the floor of the end-to-end benchmarks: a fasthttp
// pass-through proxy doing only what any fasthttp gateway must do (read
// the request, copy it to a pooled keep-alive upstream connection, copy
// the answer back). No authentication, no policy, no accounting. It is
// the same handler as the bareProxy baseline of gateway/bench_test.go,
// over real loopback sockets.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18082", "address to serve on")
	upstream := flag.String("upstream", "127.0.0.1:18081", "upstream host:port")
	path := flag.String("path", "/extract", "upstream request path")
	flag.Parse()

	uri := "http://" + *upstream + *path
	hc := &fasthttp.HostClient{Addr: *upstream, MaxConns: 4096, ReadBufferSize: 16 << 10}
	handler := func(ctx *fasthttp.RequestCtx) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		ctx.Request.Header.CopyTo(&req.Header)
		req.SetRequestURI(uri)
		req.SetBodyRaw(ctx.Request.Body())
		if err := hc.DoTimeout(req, resp, 30*time.Second); err != nil {
			ctx.SetStatusCode(fasthttp.StatusBadGateway)
		} else {
			resp.Header.CopyTo(&ctx.Response.Header)
			ctx.Response.SetBody(resp.Body())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("bareproxy: %v", err)
	}
	srv := &fasthttp.Server{Handler: handler, Name: "bareproxy", ReadBufferSize: 16 << 10}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		<-sigs
		srv.Shutdown()
	}()
	log.Printf("bareproxy serving on %s → %s", ln.Addr(), uri)
	if err := srv.Serve(ln); err != nil {
		log.Fatalf("bareproxy: %v", err)
	}
}
