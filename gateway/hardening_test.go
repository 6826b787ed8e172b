package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/ledger"
)

// idleClosingUpstream is a real net/http server that closes keep-alive
// connections idle for more than idle, as many WSGI servers and load
// balancers do. It counts requests and closed connections.
type idleClosingUpstream struct {
	url            string
	hits, closed   atomic.Int64
	mu             sync.Mutex
	protos         []string
	closedNotifier chan struct{}
}

func newIdleClosingUpstream(t *testing.T, idle time.Duration) *idleClosingUpstream {
	u := &idleClosingUpstream{closedNotifier: make(chan struct{}, 64)}
	srv := &http.Server{
		IdleTimeout: idle,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.hits.Add(1)
			u.mu.Lock()
			u.protos = append(u.protos, r.Proto)
			u.mu.Unlock()
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"ok":true}`))
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				u.closed.Add(1)
				u.closedNotifier <- struct{}{}
			}
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u.url = "http://" + ln.Addr().String()
	return u
}

// waitClosed waits until the upstream has closed n connections in all.
func (u *idleClosingUpstream) waitClosed(t *testing.T, n int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for u.closed.Load() < n {
		select {
		case <-u.closedNotifier:
		case <-deadline:
			t.Fatalf("upstream closed %d connections, want %d", u.closed.Load(), n)
		}
	}
}

// TestUpstream_IdleClosedConnections: an upstream that closes idle
// keep-alive connections sooner than the gateway drops them never turns a
// call into a 502, for API keys and for x402 in both settle modes; every
// call reaches the upstream once and is billed or settled once.
func TestUpstream_IdleClosedConnections(t *testing.T) {
	up := newIdleClosingUpstream(t, 150*time.Millisecond)
	settler := &fakeSettler{}
	cat := `{"tools":[
 {"id":"free","rate_class":"light","upstream":"` + up.url + `/free","idle_timeout_ms":60000},
 {"id":"after","rate_class":"light","price_usd":"0.01","upstream":"` + up.url + `/after","idle_timeout_ms":60000},
 {"id":"before","rate_class":"light","price_usd":"0.01","settle":"before_upstream","upstream":"` + up.url + `/before","idle_timeout_ms":60000}]}`
	h := newHarnessWith(t, nil, cat, withX402(t, settler))
	k := h.createKey(`{}`)
	payer := chain.Accounts[3]

	calls := 0
	for _, tc := range []struct{ name, tool string }{{"APIKey", "free"}, {"AfterUpstream", "after"}, {"BeforeUpstream", "before"}} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 3; i++ {
				var resp *http.Response
				var b []byte
				if tc.tool == "free" {
					resp, b = h.call(k.Secret, tc.tool, `{}`)
				} else {
					resp, b = h.do("POST", "/tools/"+tc.tool, `{}`, "PAYMENT-SIGNATURE", h.pay(payer, tc.tool, 10000))
				}
				calls++
				if resp.StatusCode != 200 {
					t.Fatalf("call %d: got %d %s, want 200", i, resp.StatusCode, b)
				}
				// Let the upstream close the pooled connection before the next call.
				up.waitClosed(t, int64(calls))
			}
		})
	}
	if got := up.hits.Load(); got != int64(calls) {
		t.Fatalf("upstream saw %d requests, want %d (one per call)", got, calls)
	}
	if got := settler.settles.Load(); got != 6 {
		t.Fatalf("settlements: got %d, want 6 (one per paid call)", got)
	}
	for _, r := range h.records("wallet:" + payer.Address.Hex()) {
		if r.Kind == "x402_owed" || r.Outcome == "upstream_error" {
			t.Fatalf("record %+v: no paid call may fail or be owed", r)
		}
	}
}

// closingUpstream is a raw TCP server that answers the first request on
// each connection and, per mode, closes the connection on a later one
// without answering (reused) or on the first (fresh) one.
func closingUpstream(t *testing.T, closeFirst bool) (url string, hits *atomic.Int64) {
	hits = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					hits.Add(1)
					if closeFirst || n == 1 {
						return // seen, never answered
					}
					io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), hits
}

// TestUpstream_ClosedBeforeAnswer: a reused connection closed before the
// first response byte is retried once on a fresh connection; a fresh
// connection closed unanswered is not retried (the upstream may have run
// the call) and answers 502 saying what happened, unbilled.
func TestUpstream_ClosedBeforeAnswer(t *testing.T) {
	t.Run("ReusedRetriedOnce", func(t *testing.T) {
		url, hits := closingUpstream(t, false)
		h := newHarnessWith(t, nil, `{"tools":[{"id":"t","rate_class":"light","price_usd":"0.01","upstream":"`+url+`/t"}]}`, nil)
		k := h.createKey(`{}`)
		for i := 0; i < 2; i++ {
			if resp, b := h.call(k.Secret, "t", `{}`); resp.StatusCode != 200 || resp.Header.Get("X-Cost-Usd") != "0.010" {
				t.Fatalf("call %d: got %d %s cost %s, want 200 billed 0.010", i, resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
			}
		}
		// Call 1 on connection A; call 2 first on A (closed unanswered), then on B.
		if got := hits.Load(); got != 3 {
			t.Fatalf("upstream saw %d requests, want 3", got)
		}
		if st := h.status("key_id=" + k.KeyID); st["spend_today_usd"] != 0.02 {
			t.Fatalf("spend: got %v, want 0.02 (each call billed once)", st["spend_today_usd"])
		}
	})
	t.Run("FreshNotRetried", func(t *testing.T) {
		url, hits := closingUpstream(t, true)
		h := newHarnessWith(t, nil, `{"tools":[{"id":"t","rate_class":"light","price_usd":"0.01","upstream":"`+url+`/t"}]}`, nil)
		k := h.createKey(`{}`)
		resp, b := h.call(k.Secret, "t", `{}`)
		if resp.StatusCode != 502 || resp.Header.Get("X-Cost-Usd") != "0.000" {
			t.Fatalf("got %d %s cost %s, want 502 unbilled", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
		}
		wantJSON(t, b, `{"error":"Upstream closed the connection before answering"}`)
		if got := hits.Load(); got != 1 {
			t.Fatalf("upstream saw %d requests, want 1 (no retry on a fresh connection)", got)
		}
	})
}

// TestUpstream_HTTP10Caller: a caller speaking HTTP/1.0 is forwarded as
// HTTP/1.1 on a kept-alive connection, and the next caller is unaffected.
func TestUpstream_HTTP10Caller(t *testing.T) {
	up := newIdleClosingUpstream(t, time.Minute)
	h := newHarnessWith(t, nil, `{"tools":[{"id":"t","rate_class":"light","upstream":"`+up.url+`/t"}]}`, nil)
	a, b := h.createKey(`{}`), h.createKey(`{}`)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /tools/t HTTP/1.0\r\nX-API-Key: %s\r\nContent-Length: 2\r\n\r\n{}", a.Secret)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.0 call: %v %v, want 200", resp, err)
	}
	if r, body := h.call(b.Secret, "t", `{}`); r.StatusCode != 200 {
		t.Fatalf("next caller: got %d %s, want 200", r.StatusCode, body)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for i, p := range up.protos {
		if p != "HTTP/1.1" {
			t.Fatalf("upstream request %d spoke %s, want HTTP/1.1", i, p)
		}
	}
	if got := up.closed.Load(); got != 0 {
		t.Fatalf("upstream connections closed: %d, want 0 (kept alive)", got)
	}
}

// TestUpstream_SettledButUndelivered: a before_upstream payment settled
// for a call whose upstream then fails is not billed, and is recorded and
// shown as owed to the payer; an after_upstream payment is not settled.
func TestUpstream_SettledButUndelivered(t *testing.T) {
	settler := &fakeSettler{}
	cat := `{"tools":[
 {"id":"before","rate_class":"light","price_usd":"0.01","settle":"before_upstream","upstream":"http://127.0.0.1:1/x"},
 {"id":"after","rate_class":"light","price_usd":"0.01","upstream":"http://127.0.0.1:1/x"}]}`
	h := newHarnessWith(t, nil, cat, withX402(t, settler))
	payer := chain.Accounts[4]
	principal := "wallet:" + payer.Address.Hex()

	resp, b := h.do("POST", "/tools/after", `{}`, "PAYMENT-SIGNATURE", h.pay(payer, "after", 10000))
	if resp.StatusCode != 502 || settler.settles.Load() != 0 {
		t.Fatalf("after_upstream: got %d %s with %d settlements, want 502 and none", resp.StatusCode, b, settler.settles.Load())
	}
	resp, b = h.do("POST", "/tools/before", `{}`, "PAYMENT-SIGNATURE", h.pay(payer, "before", 10000))
	if resp.StatusCode != 502 || resp.Header.Get("X-Cost-Usd") != "0.000" {
		t.Fatalf("before_upstream: got %d %s cost %s, want 502 unbilled", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
	}
	wantJSON(t, b, `{"error":"Upstream unreachable"}`)
	if settler.settles.Load() != 1 {
		t.Fatalf("settlements: got %d, want 1", settler.settles.Load())
	}
	var owed, settled int
	for _, r := range h.records(principal) {
		switch {
		case r.Type == ledger.TypeCall && r.Tool == "before":
			if r.Cost != 0 || r.Outcome != "upstream_error" || r.Reason != "upstream_unreachable" {
				t.Fatalf("call record %+v: want upstream_error, upstream_unreachable, cost 0", r)
			}
		case r.Kind == "x402_settlement":
			settled++
		case r.Kind == "x402_owed":
			owed++
			if r.Amount != 10000 || r.BalanceAfter == nil || *r.BalanceAfter != 10000 {
				t.Fatalf("owed record %+v: want amount 10000, balance_after 10000", r)
			}
		}
	}
	if owed != 1 || settled != 1 {
		t.Fatalf("records: %d x402_owed and %d x402_settlement, want 1 each", owed, settled)
	}
	if st := h.status("wallet=" + payer.Address.Hex()); st["owed_usd"] != 0.01 || st["spend_today_usd"] != 0.0 {
		t.Fatalf("status: owed_usd %v spend_today_usd %v, want 0.01 and 0", st["owed_usd"], st["spend_today_usd"])
	}
}

// wsgiUpstream runs Python's wsgiref server (a real CGI-style upstream
// that maps '-' and '_' in header names to the same HTTP_* variable) and
// returns its URL. It answers with the identity variables it saw.
func wsgiUpstream(t *testing.T) string {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed: the wsgiref upstream needs it")
	}
	script := filepath.Join(t.TempDir(), "app.py")
	src := `import json, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_message(self, *a): pass
def app(environ, start):
    keys = ["HTTP_X_TOOLGATE_PRINCIPAL", "HTTP_X_FORWARDED_FOR", "HTTP_X_REQUEST_ID", "HTTP_X_API_KEY", "HTTP_X_TOOLGATE_TOOL", "HTTP_X_CUSTOM"]
    body = json.dumps({k: environ.get(k) for k in keys}).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
srv = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(srv.server_port, flush=True)
srv.serve_forever()
`
	if err := os.WriteFile(script, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "python3", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	var port int
	if _, err := fmt.Fscan(bufio.NewReader(out), &port); err != nil {
		t.Fatalf("wsgiref upstream did not start: %v", err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// TestUpstream_UnderscoreHeaders: header names that a CGI/WSGI upstream
// reads as the gateway's identity headers never pass: the principal,
// forwarded-for and request id it sees are the gateway's alone.
func TestUpstream_UnderscoreHeaders(t *testing.T) {
	url := wsgiUpstream(t)
	h := newHarnessWith(t, nil, `{"tools":[{"id":"t","rate_class":"light","upstream":"`+url+`/t"}]}`, nil)
	k := h.createKey(`{}`)
	resp, b := h.call(k.Secret, "t", `{}`,
		"X_Toolgate_Principal", "key:spoofed",
		"X_Forwarded_For", "6.6.6.6",
		"X_Request_Id", "spoofed-id",
		"X_API_KEY", "it-spoofed",
		"X_Toolgate_Tool", "other",
		"X-Custom", "kept")
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, b)
	}
	seen := decode(t, b)
	want := map[string]any{
		"HTTP_X_TOOLGATE_PRINCIPAL": "key:" + k.KeyID,
		"HTTP_X_FORWARDED_FOR":      "127.0.0.1",
		"HTTP_X_REQUEST_ID":         resp.Header.Get("X-Request-Id"),
		"HTTP_X_API_KEY":            nil,
		"HTTP_X_TOOLGATE_TOOL":      nil,
		"HTTP_X_CUSTOM":             "kept",
	}
	for name, w := range want {
		if seen[name] != w {
			t.Errorf("upstream saw %s = %v, want %v", name, seen[name], w)
		}
	}
}
