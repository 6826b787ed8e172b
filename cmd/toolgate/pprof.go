package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// servePprof serves the Go runtime's profiles on addr, a loopback address
// (--pprof-listen, off by default): /debug/pprof/ (heap, goroutine,
// allocs, mutex, block, ...), /debug/pprof/profile (CPU) and
// /debug/pprof/trace (the runtime execution trace, `go tool trace`), so
// that the real process can be traced under load (BENCHMARKS.md, issue
// 18 tails). Not the command line (/debug/pprof/cmdline): it may hold
// --admin-token. Not authenticated, hence loopback only. It returns the
// server's stop function.
func servePprof(addr string, errc chan<- error) (stop func() error, bound string, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("--pprof-listen %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, "", fmt.Errorf("--pprof-listen %q: want a loopback address (127.0.0.1:port or [::1]:port); the profiles are not authenticated", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/debug/pprof/cmdline" {
			http.NotFound(w, r)
			return
		}
		pprof.Index(w, r)
	})
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			errc <- err
		}
	}()
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}, ln.Addr().String(), nil
}
