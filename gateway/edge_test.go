package gateway_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers (the log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rawExchange sends raw bytes to the gateway and returns what it answers
// (until it closes or a second passes without data).
func rawExchange(t *testing.T, h *harness, raw string) string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to %q: %v", raw[:min(len(raw), 60)], err)
	}
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// TestEdge_NoSecretInDebugLog: malformed requests carrying the admin token
// and an API key leave neither in the log, at debug level.
func TestEdge_NoSecretInDebugLog(t *testing.T) {
	var logBuf syncBuffer
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o.AccessLog = true
	})
	k := h.createKey(`{}`)
	secrets := "Authorization: Bearer " + adminToken + "\r\nX-API-Key: " + k.Secret + "\r\nPAYMENT-SIGNATURE: c2VjcmV0LXBheW1lbnQ=\r\n"
	for _, raw := range []string{
		"POST /tools/extract/structured HTTP/1.1\r\nHost: gw\r\n" + secrets + "Content-Length: abc\r\n\r\n",
		"POST /tools/extract/structured HTTP/1.1\r\nHost: gw\r\n" + secrets + "Bad header line\r\n\r\n",
		"POST /tools/extract/structured HTTP/1.1\r\nHost: gw\r\n" + secrets + "X-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n",
		"GARBAGE " + secrets + "\r\n\r\n",
		"POST /credits/keys HTTP/1.1\r\nHost: gw\r\n" + secrets + "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
	} {
		got := rawExchange(t, h, raw)
		if !strings.HasPrefix(got, "4") {
			t.Errorf("malformed request answered %s, want a 4xx", got)
		}
	}
	// A well-formed call too: the access log line must not carry the key.
	h.call(k.Secret, "extract/structured", `{}`, "Authorization", "Bearer "+adminToken)
	log := logBuf.String()
	if !strings.Contains(log, "level=DEBUG") {
		t.Fatalf("no debug line was logged at all; the test proves nothing:\n%s", log)
	}
	for _, s := range []string{adminToken, k.Secret, "c2VjcmV0LXBheW1lbnQ="} {
		if strings.Contains(log, s) {
			t.Fatalf("log contains the secret %q:\n%s", s, log)
		}
	}
}

// TestEdge_NULInPath: a NUL byte in the path is a recorded 404 with the
// path sanitised, never a 503.
func TestEdge_NULInPath(t *testing.T) {
	h := newHarness(t)
	resp, b := h.do("POST", "/x%00y", `{}`)
	if resp.StatusCode != 404 {
		t.Fatalf("got %d %s, want 404", resp.StatusCode, b)
	}
	if m := decode(t, b); m["path"] != "/x\uFFFDy" {
		t.Fatalf("path %q, want the NUL replaced", m["path"])
	}
	n := 0
	h.led.Query(ledgerQueryUnknownTool, func(r *ledgerRecord) error {
		if r.Tool == "/x\uFFFDy" {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("records of the NUL path: %d, want 1", n)
	}
}

// TestEdge_BareLF: a request with bare-LF line endings is answered at
// once, not held until the read timeout.
func TestEdge_BareLF(t *testing.T) {
	h := newHarness(t)
	k := h.createKey(`{}`)
	start := time.Now()
	got := rawExchange(t, h, "POST /tools/time/now HTTP/1.1\nHost: gw\nX-API-Key: "+k.Secret+"\nContent-Length: 2\n\n{}")
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("answered after %v (%s), want at once", el, got)
	}
	if got != `400 {"error":"Malformed HTTP request","reason":"bare LF line endings"}` {
		t.Fatalf("got %s, want 400 naming the bare LF", got)
	}
	// A CRLF request on a fresh connection is unaffected.
	if got := rawExchange(t, h, "POST /tools/time/now HTTP/1.1\r\nHost: gw\r\nX-API-Key: "+k.Secret+"\r\nContent-Length: 2\r\n\r\n{}"); !strings.HasPrefix(got, "200") {
		t.Fatalf("CRLF request: got %s, want 200", got)
	}
}

type ledgerRecord = ledger.Record

var ledgerQueryUnknownTool = ledger.Query{Outcome: "unknown_tool"}
