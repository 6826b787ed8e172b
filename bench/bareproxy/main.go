// Command bareproxy is the floor of the end-to-end benchmarks: a fasthttp
// pass-through proxy doing only what any fasthttp gateway must do (read
// the request, copy it to a pooled keep-alive upstream connection, copy
// the answer back). No authentication, no policy, no accounting. It is
// the same handler as the bareProxy baseline of gateway/bench_test.go,
// over real loopback sockets.
//
// With -ledger DIR it is the floor of a gateway that records: each call's
// record (the fields toolgate's call records carry) is appended to a
// toolgate ledger in DIR and journaled before the answer goes back, as
// toolgate does with --sync interval. Still no authentication, policy or
// accounting: what it adds over the bare proxy is the least that "every
// answered call journaled before its answer" costs.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/toolgate/toolgate/ledger"
	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18082", "address to serve on")
	upstream := flag.String("upstream", "127.0.0.1:18081", "upstream host:port")
	path := flag.String("path", "/extract", "upstream request path")
	ledgerDir := flag.String("ledger", "", "journal every call's record in a toolgate ledger in this directory before answering")
	flag.Parse()
	led := openLedger(*ledgerDir)
	var seq, running atomic.Uint64

	uri := "http://" + *upstream + *path
	hc := &fasthttp.HostClient{Addr: *upstream, MaxConns: 4096, ReadBufferSize: 16 << 10}
	handler := func(ctx *fasthttp.RequestCtx) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		ctx.Request.Header.CopyTo(&req.Header)
		req.SetRequestURI(uri)
		req.SetBodyRaw(ctx.Request.Body())
		if led != nil {
			running.Add(1)
			defer running.Add(^uint64(0))
		}
		start := time.Now()
		if err := hc.DoTimeout(req, resp, 30*time.Second); err != nil {
			ctx.SetStatusCode(fasthttp.StatusBadGateway)
		} else {
			resp.Header.CopyTo(&ctx.Response.Header)
			ctx.Response.SetBody(resp.Body())
		}
		if led != nil {
			up := time.Since(start)
			rec := &ledger.Record{
				Type: ledger.TypeCall, At: start, RequestID: "req-" + strconv.FormatUint(seq.Add(1), 36),
				Principal: "key:bench0000001",
				Tool:      "bench/echo", RateClass: "light", Tier: "free", Outcome: ledger.OutcomeAllowed,
				Status: resp.StatusCode(), UpstreamStatus: resp.StatusCode(), Cost: 1000, SpendDay: start.UTC().Format(time.DateOnly),
				LatencyUS: time.Since(start).Microseconds(), UpstreamLatencyUS: up.Microseconds(),
			}
			t := led.Append(rec)
			wait := t.Wait
			if running.Load() >= 3 {
				wait = t.WaitYielding // as toolgate's served calls: ready callers join one write
			}
			if err := wait(); err != nil {
				ctx.ResetBody()
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			}
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
		if led != nil {
			led.Close()
		}
	}()
	log.Printf("bareproxy serving on %s → %s", ln.Addr(), uri)
	if err := srv.Serve(ln); err != nil {
		log.Fatalf("bareproxy: %v", err)
	}
}

// openLedger opens a ledger on a badger store in dir (nil when dir is
// empty), journaling as toolgate serve --sync interval does.
func openLedger(dir string) *ledger.Ledger {
	if dir == "" {
		return nil
	}
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "store")).WithLogger(nil))
	if err != nil {
		log.Fatalf("bareproxy: %v", err)
	}
	led, err := ledger.Open(db, dir, ledger.Options{Sync: ledger.SyncInterval, CheckpointInterval: ledger.DefaultCheckpointInterval})
	if err != nil {
		log.Fatalf("bareproxy: %v", err)
	}
	return led
}
