package gateway_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/gateway"
)

// bodyBytes returns a reader of n deterministic pseudo-random bytes for
// seed: the same (seed, n) always gives the same body, and no two parts of
// a body repeat, so a reordered or truncated copy has another hash.
func bodyBytes(seed uint64, n int64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// bodySum is the SHA-256 of bodyBytes(seed, n).
func bodySum(seed uint64, n int64) [32]byte {
	h := sha256.New()
	io.Copy(h, bodyBytes(seed, n))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// bodyUpstream is a real net/http upstream answering ?n=N&seed=S with
// bodyBytes(S, N): with a Content-Length, or with &chunked=1 without one,
// written and flushed in pieces (Transfer-Encoding: chunked). It never
// holds a whole body in memory.
func bodyUpstream(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		chunked := r.URL.Query().Get("chunked") == "1"
		w.Header().Set("Content-Type", "application/octet-stream")
		if !chunked {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		}
		piece := int64(32 << 10)
		if n < 64<<10 {
			piece = 256 // small chunked bodies still come in several chunks
		}
		buf := make([]byte, piece)
		src := bodyBytes(seed, n)
		for {
			m, err := io.ReadFull(src, buf)
			if m > 0 {
				if _, werr := w.Write(buf[:m]); werr != nil {
					return
				}
				if chunked {
					w.(http.Flusher).Flush()
				}
			}
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// responseCatalog has a priced tool limited to 1 KiB, one with the
// default limit (32 MiB) and a paid after_upstream tool limited to 1 KiB.
func responseCatalog(up string) string {
	return `{"tools":[
 {"id":"small","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/small","max_response_bytes":1024},
 {"id":"big","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/big"},
 {"id":"paid","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/paid","max_response_bytes":1024}]}`
}

func query(n int64, seed uint64, chunked bool) string {
	q := fmt.Sprintf("?n=%d&seed=%d", n, seed)
	if chunked {
		q += "&chunked=1"
	}
	return q
}

// TestResponse_TooLarge: a response over the tool's max_response_bytes,
// announced by its Content-Length or found while reading a chunked body,
// answers 502 naming the limit, is not billed, and is recorded as
// upstream_error / upstream_response_too_large. The connection it came on
// is not reused half-read: the next call is served intact.
func TestResponse_TooLarge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chunked bool
	}{{"ContentLength", false}, {"Chunked", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessWith(t, nil, responseCatalog(bodyUpstream(t)), nil)
			k := h.createKey(`{}`)
			resp, b := h.call(k.Secret, "small"+query(4096, 1, tc.chunked), `{}`)
			if resp.StatusCode != 502 || resp.Header.Get("X-Cost-Usd") != "0.000" {
				t.Fatalf("got %d %s cost %s, want 502 cost 0.000", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
			}
			wantJSON(t, b, `{"error":"Upstream response too large","limit_bytes":1024}`)
			if st := h.status("key_id=" + k.KeyID); st["spend_today_usd"] != 0.0 {
				t.Fatalf("spend_today_usd: got %v, want 0", st["spend_today_usd"])
			}
			recs := h.records("key:" + k.KeyID)
			if len(recs) != 1 {
				t.Fatalf("records: got %d, want 1: %+v", len(recs), recs)
			}
			if r := recs[0]; r.Outcome != "upstream_error" || r.Reason != "upstream_response_too_large" || r.Status != 502 || r.Cost != 0 {
				t.Fatalf("record: got outcome %q reason %q status %d cost %d, want upstream_error, upstream_response_too_large, 502, 0",
					r.Outcome, r.Reason, r.Status, r.Cost)
			}
			resp, b = h.call(k.Secret, "small"+query(100, 2, tc.chunked), `{}`)
			if resp.StatusCode != 200 || sha256.Sum256(b) != bodySum(2, 100) {
				t.Fatalf("next call: got %d, %d bytes, want 200 and the upstream's 100 bytes", resp.StatusCode, len(b))
			}
		})
	}
}

// TestResponse_PassedIntact: a response exactly at the tool's limit and a
// large one (5 MiB, handed to the caller as a stream) reach the caller
// byte for byte, billed, and give the whole buffer budget back.
func TestResponse_PassedIntact(t *testing.T) {
	h := newHarnessWith(t, nil, responseCatalog(bodyUpstream(t)), nil)
	k := h.createKey(`{}`)
	for _, tc := range []struct {
		name    string
		tool    string
		n       int64
		chunked bool
	}{
		{"AtLimit/ContentLength", "small", 1024, false},
		{"AtLimit/Chunked", "small", 1024, true},
		{"Large/ContentLength", "big", 5 << 20, false},
		{"Large/Chunked", "big", 5 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := h.call(k.Secret, tc.tool+query(tc.n, uint64(tc.n), tc.chunked), `{}`)
			if resp.StatusCode != 200 || resp.Header.Get("X-Cost-Usd") != "0.010" {
				t.Fatalf("got %d cost %s (%.200s), want 200 cost 0.010", resp.StatusCode, resp.Header.Get("X-Cost-Usd"), b)
			}
			if int64(len(b)) != tc.n || sha256.Sum256(b) != bodySum(uint64(tc.n), tc.n) {
				t.Fatalf("body: got %d bytes sha256 %x, want the upstream's %d bytes", len(b), sha256.Sum256(b), tc.n)
			}
			waitBufferFree(t, h.gw)
		})
	}
}

// waitBufferFree waits until no response budget is held: the gateway
// gives a streamed body's budget back once it has written the body out,
// which may be just after the caller has read its last byte.
func waitBufferFree(t *testing.T, g *gateway.Gateway) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for gateway.ResponseBufferInUse(g) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("response buffer in use: got %d bytes, want 0", gateway.ResponseBufferInUse(g))
		}
		runtime.Gosched()
	}
}

// TestResponse_BudgetBurst: 16 concurrent 8 MiB responses (half with a
// Content-Length, half chunked) through a 24 MiB buffer budget all reach
// their callers byte for byte: calls whose response does not fit wait for
// budget instead of failing or deadlocking, at most three bodies are held
// at once, and after the burst the budget is whole again and the heap
// back near where it started.
func TestResponse_BudgetBurst(t *testing.T) {
	const (
		n      = 16
		size   = 8 << 20
		budget = 24 << 20
	)
	up := bodyUpstream(t)
	cat := `{"tools":[{"id":"burst","rate_class":"light","upstream":"` + up + `/burst","max_response_bytes":` +
		strconv.Itoa(size) + `,"timeout_ms":120000}]}`
	h := newHarnessWith(t, nil, cat, func(o *gateway.Options) { o.ResponseBufferBytes = budget })
	k := h.createKey(`{}`)

	// Callers with a small receive buffer: the gateway cannot finish
	// writing an 8 MiB body to a caller that is not reading, so a body
	// whose headers arrived is still held when the heap is measured.
	client := smallWindowClient(n)
	defer client.CloseIdleConnections()
	get := func(seed uint64, chunked bool) (*http.Response, error) {
		req, _ := http.NewRequest("POST", h.url+"/tools/burst"+query(size, seed, chunked), nil)
		req.Header.Set("X-API-Key", k.Secret)
		return client.Do(req)
	}
	// Warm up connections and pools, then measure the baseline.
	if resp, err := get(99, false); err != nil || resp.StatusCode != 200 {
		t.Fatalf("warm-up: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	waitBufferFree(t, h.gw)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapInuse

	headers := make(chan struct{}, n)
	gate := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := get(uint64(i), i%2 == 1)
			headers <- struct{}{}
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			<-gate
			sum := sha256.New()
			got, err := io.Copy(sum, resp.Body)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("reading body: %w", err)
			case resp.StatusCode != 200:
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
			case got != size || [32]byte(sum.Sum(nil)) != bodySum(uint64(i), size):
				errs[i] = fmt.Errorf("body: got %d bytes with another hash, want the upstream's %d", got, size)
			}
		}()
	}
	// Three bodies fit the budget; their callers have headers and do not
	// read. The fourth waits for budget.
	for range 3 {
		<-headers
	}
	held := gateway.ResponseBufferInUse(h.gw)
	runtime.ReadMemStats(&ms)
	peak := ms.HeapInuse
	if want := int64(3 * (size - 64<<10)); held != want {
		t.Errorf("budget held with three bodies out: got %d, want %d", held, want)
	}
	close(gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	waitBufferFree(t, h.gw)
	client.CloseIdleConnections()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	after := ms.HeapInuse
	t.Logf("heap in use: baseline %d MiB, three bodies held %d MiB, after %d MiB", baseline>>20, peak>>20, after>>20)
	if peak < baseline+20<<20 {
		t.Errorf("heap with three 8 MiB bodies held: got %d MiB over the baseline, want at least 20 (the measure is blind)", (int64(peak)-int64(baseline))>>20)
	}
	if after > baseline+32<<20 {
		t.Errorf("heap after the burst: got %d MiB over the baseline, want under 32 (the burst moved %d MiB)", (after-baseline)>>20, n*size>>20)
	}
}

// smallWindowClient is an HTTP client whose connections have a 64 KiB
// receive buffer (no autotuning): a body of several MiB that it does not
// read cannot be written out to it in full, so the gateway keeps holding
// that body's budget until the client reads.
func smallWindowClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns,
		DialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
			})
		}}).DialContext,
	}}
}

// TestResponse_BudgetWaitTimeout: a call whose response cannot get
// buffer budget within its tool's timeout answers 503 with Retry-After 1,
// unbilled and recorded as response_buffer_full; the call holding the
// budget is unaffected.
func TestResponse_BudgetWaitTimeout(t *testing.T) {
	const size = 8 << 20
	up := bodyUpstream(t)
	cat := `{"tools":[{"id":"held","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/held","max_response_bytes":` +
		strconv.Itoa(size) + `,"timeout_ms":500}]}`
	h := newHarnessWith(t, nil, cat, func(o *gateway.Options) { o.ResponseBufferBytes = size })
	k := h.createKey(`{}`)

	client := smallWindowClient(1)
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("POST", h.url+"/tools/held"+query(size, 1, false), nil)
	req.Header.Set("X-API-Key", k.Secret)
	holder, err := client.Do(req) // headers only: its body stays in the budget
	if err != nil || holder.StatusCode != 200 {
		t.Fatalf("holding call: %v %v", holder, err)
	}
	defer holder.Body.Close()
	if got, want := gateway.ResponseBufferInUse(h.gw), int64(size-64<<10); got != want {
		t.Fatalf("budget held: got %d, want %d", got, want)
	}

	resp, b := h.call(k.Secret, "held"+query(size, 2, false), `{}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("X-Cost-Usd") != "0.000" {
		t.Fatalf("waiting call: got %d Retry-After %q cost %s, want 503, 1, 0.000", resp.StatusCode,
			resp.Header.Get("Retry-After"), resp.Header.Get("X-Cost-Usd"))
	}
	wantJSON(t, b, `{"error":"Gateway response buffers are full; the call was not billed","retry":true}`)

	sum := sha256.New()
	if n, err := io.Copy(sum, holder.Body); err != nil || n != size || [32]byte(sum.Sum(nil)) != bodySum(1, size) {
		t.Fatalf("holding call's body: %d bytes, %v; want the upstream's %d bytes", n, err, size)
	}
	waitBufferFree(t, h.gw)
	var reasons []string
	for _, r := range h.records("key:" + k.KeyID) {
		reasons = append(reasons, r.Outcome+"/"+r.Reason)
	}
	if len(reasons) != 2 || reasons[0] != "allowed/" || reasons[1] != "upstream_error/response_buffer_full" {
		t.Fatalf("records: got %v, want [allowed/ upstream_error/response_buffer_full]", reasons)
	}
	if st := h.status("key_id=" + k.KeyID); st["spend_today_usd"] != 0.01 {
		t.Fatalf("spend_today_usd: got %v, want 0.01 (the holding call only)", st["spend_today_usd"])
	}
}

// TestResponse_TooLargePaid: for a paid after_upstream tool, an oversized
// response is not settled, and the payment stays unspent: the same
// authorization then pays for a call that is served.
func TestResponse_TooLargePaid(t *testing.T) {
	settler := &fakeSettler{}
	h := newHarnessWith(t, nil, responseCatalog(bodyUpstream(t)), withX402(t, settler))
	payer := chain.Accounts[3]
	sig := h.pay(payer, "paid", 10000)

	resp, b := h.do("POST", "/tools/paid"+query(4096, 1, true), `{}`, "PAYMENT-SIGNATURE", sig)
	if resp.StatusCode != 502 || resp.Header.Get("X-Cost-Usd") != "0.000" {
		t.Fatalf("oversized: got %d %s cost %s, want 502 cost 0.000", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
	}
	wantJSON(t, b, `{"error":"Upstream response too large","limit_bytes":1024}`)
	if got := settler.settles.Load(); got != 0 {
		t.Fatalf("settlements after the oversized response: got %d, want 0", got)
	}
	if h := resp.Header.Get("PAYMENT-RESPONSE"); h != "" {
		t.Fatalf("PAYMENT-RESPONSE on an unsettled call: got %q, want none", h)
	}

	resp, b = h.do("POST", "/tools/paid"+query(512, 2, false), `{}`, "PAYMENT-SIGNATURE", sig)
	if resp.StatusCode != 200 || sha256.Sum256(b) != bodySum(2, 512) {
		t.Fatalf("same payment again: got %d %.200s, want 200 with the upstream's body", resp.StatusCode, b)
	}
	if got := settler.settles.Load(); got != 1 {
		t.Fatalf("settlements: got %d, want 1", got)
	}
	if st := h.status("wallet=" + payer.Address.Hex()); st["spend_today_usd"] != 0.01 {
		t.Fatalf("spend_today_usd: got %v, want 0.01 (the served call only)", st["spend_today_usd"])
	}
}
