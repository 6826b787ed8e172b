package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
)

const adminToken = "test-admin-token"

// seedPolicies is DESIGN.md's policies.json.
const seedPolicies = `{
  "version": 1,
  "fail_mode": "open",
  "defaults": { "rate_class_quota": { "light": 120, "medium": 30, "heavy": 10 } },
  "tiers": {
    "api_key":        { "daily_spend_cap_usd": 50 },
    "wallet":         { "daily_spend_cap_usd": 20 },
    "unknown_wallet": { "deny_tools": ["code_execute"], "daily_spend_cap_usd": 2 }
  },
  "enforced": { "deny_tools": [] }
}`

// seedOverride is the per-key policy body.
const seedOverride = `{"allow_tools":["whatsapp/send","email/send","extract/structured","image/generate"],"deny_tools":["code_execute","browser/act"],"rate_class_quota":{"light":120,"medium":30,"heavy":5}}`

// upstream is a real loopback HTTP server standing in for the tools. It
// records what it received.
type upstream struct {
	srv  *httptest.Server
	hits atomic.Int64

	mu   sync.Mutex
	last *http.Request
	body []byte

	delay atomic.Int64 // nanoseconds to sleep before answering
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if r.URL.Path == "/reset" { // drop the connection without answering
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
			return
		}
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.last, u.body = r, b
		u.mu.Unlock()
		if d := u.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if r.URL.Query().Get("fail") == "1" {
			w.WriteHeader(500)
			w.Write([]byte(`{"error":"upstream broke"}`))
			return
		}
		if cost := r.URL.Query().Get("cost"); cost != "" { // a metered tool's cost report
			w.Header().Set("X-Toolgate-Cost-Usd", cost)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "keep-alive, X-Hop")
		w.Header().Set("X-Hop", "must not pass")
		w.Header().Set("X-Upstream", "yes")
		fmt.Fprintf(w, `{"path":%q,"query":%q,"echo":%s}`, r.URL.Path, r.URL.RawQuery, orNull(b))
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func orNull(b []byte) string {
	if len(b) == 0 || !json.Valid(b) {
		return "null"
	}
	return string(b)
}

func (u *upstream) lastRequest() (*http.Request, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.body
}

// testCatalog is the catalog used by the gateway tests, pointed at up.
func testCatalog(up string) string {
	return `{"tools":[
 {"id":"extract/structured","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/extract","packs":["research"]},
 {"id":"search/web","rate_class":"light","price_usd":0.002,"upstream":"` + up + `/search","packs":["research"]},
 {"id":"email/send","rate_class":"medium","price_usd":"0.005","upstream":"` + up + `/email","packs":["comms"]},
 {"id":"whatsapp/send","rate_class":"medium","price_usd":"0.005","upstream":"` + up + `/whatsapp","packs":["comms"]},
 {"id":"image/generate","rate_class":"heavy","price_usd":"0.04","upstream":"` + up + `/image"},
 {"id":"code_execute","rate_class":"heavy","price_usd":"0.02","upstream":"` + up + `/code"},
 {"id":"browser/act","rate_class":"heavy","price_usd":"0.03","upstream":"` + up + `/browser"},
 {"id":"time/now","rate_class":"light","upstream":"` + up + `/time","methods":["GET","POST"]},
 {"id":"slow","rate_class":"light","upstream":"` + up + `/slow","timeout_ms":150},
 {"id":"dead","rate_class":"light","upstream":"http://127.0.0.1:1/dead"},
 {"id":"reset","rate_class":"light","price_usd":"0.01","upstream":"` + up + `/reset"}
]}`
}

// harness runs a real gateway on a loopback port over a badger store on disk.
type harness struct {
	t    testing.TB
	url  string
	up   *upstream
	gw   *gateway.Gateway
	led  *ledger.Ledger
	db   *badger.DB
	http *http.Client
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	up := newUpstream(t)
	return newHarnessWith(t, up, testCatalog(up.srv.URL), nil)
}

// newHarnessWith runs a gateway over the catalog JSON cat; opts, if not
// nil, adjusts the gateway's options before it is built.
func newHarnessWith(t testing.TB, up *upstream, catJSON string, opts func(*gateway.Options)) *harness {
	t.Helper()
	return newHarnessOn(t, up, catJSON, opts, nil, nil)
}

// newHarnessOn is newHarnessWith serving HTTPS when srvTLS is set (the
// client trusting roots).
func newHarnessOn(t testing.TB, up *upstream, catJSON string, opts func(*gateway.Options), srvTLS *tls.Config, roots *x509.CertPool) *harness {
	t.Helper()
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir + "/store").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(db, dir, ledger.Options{Sync: ledger.SyncInterval})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := identity.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Decode([]byte(catJSON))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := policy.DecodeDocument([]byte(seedPolicies))
	if err != nil {
		t.Fatal(err)
	}
	o := gateway.Options{DB: db, Keys: keys, Ledger: led, Catalog: cat, Policies: doc, AdminToken: adminToken}
	if opts != nil {
		opts(&o)
	}
	gw, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gw.Server()
	scheme, tr := "http", &http.Transport{MaxIdleConnsPerHost: 256}
	if srvTLS != nil {
		go srv.Serve(gateway.TLSListener(ln, srvTLS))
		scheme, tr.TLSClientConfig = "https", &tls.Config{RootCAs: roots, ServerName: "localhost"}
	} else {
		go srv.Serve(gateway.Listener(ln))
	}
	h := &harness{t: t, url: scheme + "://" + ln.Addr().String(), up: up, gw: gw, led: led, db: db,
		http: &http.Client{Timeout: 10 * time.Second, Transport: tr}}
	t.Cleanup(func() {
		srv.Shutdown()
		gw.Close()
		led.Close()
		db.Close()
	})
	return h
}

// do sends a request; hdr pairs are name, value.
func (h *harness) do(method, path, body string, hdr ...string) (*http.Response, []byte) {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, b
}

func (h *harness) admin(method, path, body string) (*http.Response, []byte) {
	h.t.Helper()
	return h.do(method, path, body, "Authorization", "Bearer "+adminToken)
}

type createdKey struct {
	Secret string `json:"secret"`
	KeyID  string `json:"key_id"`
	Key    string `json:"key"`
	Status string `json:"status"`
}

// createKey makes a key through the API and returns it.
func (h *harness) createKey(body string) createdKey {
	h.t.Helper()
	resp, b := h.admin("POST", "/credits/keys", body)
	if resp.StatusCode != 201 {
		h.t.Fatalf("create key: got %d %s, want 201", resp.StatusCode, b)
	}
	var k createdKey
	if err := json.Unmarshal(b, &k); err != nil {
		h.t.Fatal(err)
	}
	return k
}

// call invokes a tool with an API key.
func (h *harness) call(key, tool, body string, hdr ...string) (*http.Response, []byte) {
	h.t.Helper()
	return h.do("POST", "/tools/"+tool, body, append([]string{"X-API-Key", key, "Content-Type", "application/json"}, hdr...)...)
}

// wantJSON checks that body is exactly the JSON object want (field order ignored).
func wantJSON(t testing.TB, body []byte, want string) {
	t.Helper()
	var got, exp any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	e, _ := json.Marshal(exp)
	if string(g) != string(e) {
		t.Fatalf("body\n got %s\nwant %s", g, e)
	}
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return m
}
