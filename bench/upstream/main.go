// Command upstream is the tool upstream of the end-to-end benchmarks: a
// fasthttp server that answers every request with the same ~200-byte JSON
// body, as a fast tool would. It does nothing else, so that whatever a
// proxy in front of it costs shows in the ratios of bench/run.sh.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/valyala/fasthttp"
)

// body is the answer: 200 bytes of JSON, the size of a small tool result.
var body = []byte(`{"id":"r-1","result":{"words":6,"chars":32,"language":"en","entities":[{"type":"org","text":"ACME"},{"type":"amount","text":"$120"}]},"model":"demo","latency_ms":3,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)

var contentType = []byte("application/json")

func main() {
	listen := flag.String("listen", "127.0.0.1:18081", "address to serve on")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("upstream: %v", err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.SetContentTypeBytes(contentType)
			ctx.Response.SetBodyRaw(body)
		},
		Name:             "upstream",
		ReadBufferSize:   16 << 10,
		DisableKeepalive: false,
	}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		<-sigs
		srv.Shutdown()
	}()
	log.Printf("upstream serving on %s (%d-byte body)", ln.Addr(), len(body))
	if err := srv.Serve(ln); err != nil {
		log.Fatalf("upstream: %v", err)
	}
}
