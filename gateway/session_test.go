package gateway_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
)

const viewerToken = "test-viewer-token"

// signIn exchanges tok for a session: its cookie and CSRF token.
func (h *harness) signIn(tok string, hdr ...string) (*http.Cookie, string) {
	h.t.Helper()
	resp, b := h.do("POST", "/ui/session", `{"token":"`+tok+`"}`, append([]string{"Content-Type", "application/json"}, hdr...)...)
	if resp.StatusCode != 200 {
		h.t.Fatalf("sign in: got %d %s, want 200", resp.StatusCode, b)
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == "toolgate_session" {
			c = k
		}
	}
	if c == nil {
		h.t.Fatalf("sign in: no toolgate_session cookie in %v", resp.Header.Values("Set-Cookie"))
	}
	var v struct {
		CSRF string `json:"csrf_token"`
	}
	json.Unmarshal(b, &v)
	if len(v.CSRF) < 40 {
		h.t.Fatalf("sign in: csrf_token %q too short", v.CSRF)
	}
	return c, v.CSRF
}

func cookieHdr(c *http.Cookie) []string { return []string{"Cookie", c.Name + "=" + c.Value} }

func withViewer(o *gateway.Options) { o.ViewerToken = viewerToken }

// TestSession_SignIn: tokens are exchanged for an HttpOnly, SameSite=Strict
// cookie; a session reads and (admin, with its CSRF token) writes; sign-out
// ends it.
func TestSession_SignIn(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), withViewer)

	t.Run("Refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, body, ctype string
			want              int
		}{
			{"WrongToken", `{"token":"nope"}`, "application/json", 401},
			{"NotJSON", `{"token":"` + adminToken + `"}`, "application/x-www-form-urlencoded", 415},
			{"NoToken", `{}`, "application/json", 400},
			{"ExtraField", `{"token":"` + adminToken + `","x":1}`, "application/json", 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, b := h.do("POST", "/ui/session", tc.body, "Content-Type", tc.ctype)
				if resp.StatusCode != tc.want || len(resp.Cookies()) != 0 {
					t.Fatalf("got %d %s cookies %v, want %d and no cookie", resp.StatusCode, b, resp.Cookies(), tc.want)
				}
			})
		}
		resp, b := h.do("POST", "/ui/session?token="+adminToken, `{"token":"`+adminToken+`"}`, "Content-Type", "application/json")
		if resp.StatusCode != 400 || !strings.Contains(string(b), "never in a URL") {
			t.Fatalf("token in the URL: got %d %s, want 400", resp.StatusCode, b)
		}
	})

	t.Run("CookieFlags", func(t *testing.T) {
		resp, _ := h.do("POST", "/ui/session", `{"token":"`+adminToken+`"}`, "Content-Type", "application/json")
		sc := resp.Header.Get("Set-Cookie")
		for _, want := range []string{"HttpOnly", "SameSite=Strict", "path=/", "max-age=28800"} {
			if !strings.Contains(sc, want) {
				t.Errorf("Set-Cookie %q lacks %s", sc, want)
			}
		}
		if strings.Contains(sc, "Secure") {
			t.Errorf("Set-Cookie %q: Secure over plain HTTP would never be sent back", sc)
		}
		if strings.Contains(sc, adminToken) {
			t.Errorf("Set-Cookie %q holds the admin token", sc)
		}
	})

	c, csrf := h.signIn(adminToken)
	ck := cookieHdr(c)

	t.Run("Reads", func(t *testing.T) {
		if resp, b := h.do("GET", "/credits/keys", "", ck...); resp.StatusCode != 200 {
			t.Fatalf("GET /credits/keys with the session: got %d %s, want 200", resp.StatusCode, b)
		}
		resp, b := h.do("GET", "/ui/session", "", ck...)
		if m := decode(t, b); resp.StatusCode != 200 || m["role"] != "admin" || m["csrf_token"] != csrf {
			t.Fatalf("GET /ui/session: got %d %s, want role admin and the csrf token", resp.StatusCode, b)
		}
	})

	t.Run("WriteNeedsCSRF", func(t *testing.T) {
		before := len(h.keys(t))
		for _, hdr := range [][]string{ck, append(ck, "X-CSRF-Token", "wrong"), append(ck, "X-CSRF-Token", "")} {
			resp, b := h.do("POST", "/credits/keys", `{"name":"x"}`, hdr...)
			if resp.StatusCode != 403 || !strings.Contains(string(b), "CSRF") {
				t.Fatalf("POST without the CSRF token: got %d %s, want 403", resp.StatusCode, b)
			}
		}
		if n := len(h.keys(t)); n != before {
			t.Fatalf("keys: got %d, want %d (nothing created)", n, before)
		}
		resp, b := h.do("POST", "/credits/keys", `{"name":"by-session"}`, append(ck, "X-CSRF-Token", csrf)...)
		if resp.StatusCode != 201 {
			t.Fatalf("POST with the CSRF token: got %d %s, want 201", resp.StatusCode, b)
		}
	})

	t.Run("SignOut", func(t *testing.T) {
		if resp, b := h.do("DELETE", "/ui/session", "", ck...); resp.StatusCode != 403 {
			t.Fatalf("sign-out without CSRF: got %d %s, want 403", resp.StatusCode, b)
		}
		resp, b := h.do("DELETE", "/ui/session", "", append(ck, "X-CSRF-Token", csrf)...)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Set-Cookie"), "toolgate_session=;") {
			t.Fatalf("sign-out: got %d %s %q, want 200 clearing the cookie", resp.StatusCode, b, resp.Header.Get("Set-Cookie"))
		}
		if resp, b := h.do("GET", "/credits/keys", "", ck...); resp.StatusCode != 401 {
			t.Fatalf("after sign-out: got %d %s, want 401", resp.StatusCode, b)
		}
		if resp, _ := h.do("GET", "/ui/session", "", ck...); resp.StatusCode != 401 {
			t.Fatalf("GET /ui/session after sign-out: got %d, want 401", resp.StatusCode)
		}
	})
}

func (h *harness) keys(t *testing.T) []any {
	t.Helper()
	_, b := h.admin("GET", "/credits/keys", "")
	ks, _ := decode(t, b)["keys"].([]any)
	return ks
}

// TestSession_Expiry: a session ends at its TTL.
func TestSession_Expiry(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.Now = func() time.Time { return time.Unix(0, now.Load()) }
		o.SessionTTL = time.Hour
	})
	c, _ := h.signIn(adminToken)
	if c.MaxAge != 3600 {
		t.Fatalf("Max-Age: got %d, want 3600", c.MaxAge)
	}
	now.Add(int64(59 * time.Minute))
	if resp, b := h.do("GET", "/credits/keys", "", cookieHdr(c)...); resp.StatusCode != 200 {
		t.Fatalf("before expiry: got %d %s, want 200", resp.StatusCode, b)
	}
	now.Add(int64(time.Minute))
	if resp, b := h.do("GET", "/credits/keys", "", cookieHdr(c)...); resp.StatusCode != 401 {
		t.Fatalf("at expiry: got %d %s, want 401", resp.StatusCode, b)
	}
}

// TestSession_Secure: the cookie is Secure over TLS (here: through a
// trusted proxy saying https) and with an https public URL.
func TestSession_Secure(t *testing.T) {
	up := newUpstream(t)
	t.Run("PublicURL", func(t *testing.T) {
		h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { o.SecureCookies = true })
		if c, _ := h.signIn(adminToken); !c.Secure {
			t.Fatal("cookie not Secure with an https public URL")
		}
	})
	t.Run("TLSProxy", func(t *testing.T) {
		h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
			o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})
		if c, _ := h.signIn(adminToken, "X-Forwarded-Proto", "https", "X-Forwarded-For", "203.0.113.9"); !c.Secure {
			t.Fatal("cookie not Secure behind a TLS-terminating trusted proxy")
		}
		if c, _ := h.signIn(adminToken); c.Secure {
			t.Fatal("cookie Secure over plain HTTP")
		}
	})
}

// TestViewer_ReadOnly: the viewer token (bearer or session) reads every
// management route and changes none: 403, and nothing changed.
func TestViewer_ReadOnly(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), withViewer)
	k := h.createKey(`{"name":"victim"}`)
	c, csrf := h.signIn(viewerToken)
	bearer := []string{"Authorization", "Bearer " + viewerToken}
	session := append(cookieHdr(c), "X-CSRF-Token", csrf)
	if _, b := h.do("GET", "/ui/session", "", cookieHdr(c)...); decode(t, b)["role"] != "viewer" {
		t.Fatalf("GET /ui/session: got %s, want role viewer", b)
	}
	for name, hdr := range map[string][]string{"Bearer": bearer, "Session": session} {
		t.Run(name, func(t *testing.T) {
			for _, p := range []string{"/credits/keys", "/credits/keys/" + k.KeyID, "/credits/keys/" + k.KeyID + "/policy",
				"/audit?limit=5", "/audit/verify", "/stats?since=1h", "/catalog", "/metrics",
				"/authorization/status?key_id=" + k.KeyID} {
				if resp, b := h.do("GET", p, "", hdr...); resp.StatusCode != 200 {
					t.Errorf("GET %s: got %d %s, want 200", p, resp.StatusCode, b)
				}
			}
			for _, w := range []struct{ method, path, body string }{
				{"POST", "/credits/keys", `{"name":"viewer-made"}`},
				{"DELETE", "/credits/keys/" + k.KeyID, ""},
				{"PUT", "/credits/keys/" + k.KeyID + "/policy", `{"deny_tools":["*"]}`},
				{"DELETE", "/credits/keys/" + k.KeyID + "/policy", ""},
				{"POST", "/credits/keys/" + k.KeyID + "/credits", `{"amount_usd":5}`},
				{"PUT", "/wallets/0x00000000000000000000000000000000000000aa/policy", `{}`},
			} {
				resp, b := h.do(w.method, w.path, w.body, hdr...)
				if resp.StatusCode != 403 || !strings.Contains(string(b), "Read-only") {
					t.Errorf("%s %s: got %d %s, want 403", w.method, w.path, resp.StatusCode, b)
				}
			}
		})
	}
	_, b := h.admin("GET", "/credits/keys/"+k.KeyID, "")
	if m := decode(t, b); m["status"] != "active" || m["policy"] != nil || m["balance_usd"] != nil {
		t.Fatalf("key after the viewer's attempts: %s, want active, no policy, no balance", b)
	}
	if n := len(h.keys(t)); n != 1 {
		t.Fatalf("keys: got %d, want 1", n)
	}
	// The viewer token is not the admin token's equal anywhere else.
	if resp, _ := h.call(viewerToken, "search/web", `{}`); resp.StatusCode != 401 && resp.StatusCode != 402 {
		t.Fatalf("viewer token as a tool credential: got %d, want 401/402", resp.StatusCode)
	}
}

// TestUI_Static: the dashboard's files are served from the binary with a
// strict content security policy.
func TestUI_Static(t *testing.T) {
	h := newHarness(t)
	resp, b := h.do("GET", "/ui/", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(b), "toolgate") {
		t.Fatalf("GET /ui/: got %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP: got %q", csp)
	}
	for _, f := range []string{"app.js", "app.css"} {
		if resp, _ := h.do("GET", "/ui/"+f, ""); resp.StatusCode != 200 {
			t.Errorf("GET /ui/%s: got %d, want 200", f, resp.StatusCode)
		}
	}
	if resp, _ := h.do("GET", "/ui/missing.js", ""); resp.StatusCode != 404 {
		t.Errorf("GET /ui/missing.js: got %d, want 404", resp.StatusCode)
	}
	if resp, _ := h.do("POST", "/ui/", "x"); resp.StatusCode != 405 {
		t.Errorf("POST /ui/: got %d, want 405", resp.StatusCode)
	}
}

// TestKeys_ListFilter: GET /credits/keys?q=&limit=&order= finds keys by
// id or name without sending every key.
func TestKeys_ListFilter(t *testing.T) {
	h := newHarness(t)
	for _, n := range []string{"alpha-bot", "beta-bot", "Gamma"} {
		h.createKey(`{"name":"` + n + `"}`)
	}
	list := func(q string) (names []string, total float64) {
		resp, b := h.admin("GET", "/credits/keys"+q, "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET /credits/keys%s: %d %s", q, resp.StatusCode, b)
		}
		m := decode(t, b)
		for _, k := range m["keys"].([]any) {
			names = append(names, k.(map[string]any)["name"].(string))
		}
		return names, m["total"].(float64)
	}
	sorted := func(v []string) string { v = slices.Clone(v); slices.Sort(v); return strings.Join(v, ",") }
	for _, tc := range []struct {
		q, want string
		total   float64
	}{
		{"", "Gamma,alpha-bot,beta-bot", 3},
		{"?q=BOT", "alpha-bot,beta-bot", 2},
		{"?q=gam", "Gamma", 1},
		{"?q=nothing", "", 0},
	} {
		names, total := list(tc.q)
		if sorted(names) != tc.want || total != tc.total {
			t.Errorf("%s: got %v (total %v), want %s (total %v)", tc.q, names, total, tc.want, tc.total)
		}
	}
	asc, _ := list("")
	desc, total := list("?order=desc&limit=2")
	if total != 3 || len(desc) != 2 || desc[0] != asc[2] || desc[1] != asc[1] {
		t.Errorf("?order=desc&limit=2: got %v (total %v), want the last two of %v, newest first", desc, total, asc)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?order=up"} {
		if resp, _ := h.admin("GET", "/credits/keys"+q, ""); resp.StatusCode != 400 {
			t.Errorf("GET /credits/keys%s: got %d, want 400", q, resp.StatusCode)
		}
	}
}

// TestSession_SignInThrottle: past 10 wrong tokens in a minute from one
// address, sign-in is refused (429), the right token too, until the next
// minute.
func TestSession_SignInThrottle(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 1, 10, 0, 5, 0, time.UTC).UnixNano())
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.Now = func() time.Time { return time.Unix(0, now.Load()) }
	})
	try := func(tok string) int {
		resp, _ := h.do("POST", "/ui/session", `{"token":"`+tok+`"}`, "Content-Type", "application/json")
		return resp.StatusCode
	}
	for i := range 10 {
		if got := try("guess-" + strconv.Itoa(i)); got != 401 {
			t.Fatalf("wrong token %d: got %d, want 401", i, got)
		}
	}
	if got := try(adminToken); got != 429 {
		t.Fatalf("right token after 10 wrong ones: got %d, want 429", got)
	}
	now.Add(int64(time.Minute))
	if got := try(adminToken); got != 200 {
		t.Fatalf("next minute: got %d, want 200", got)
	}
}

// failingAnswers is a real answer store that fails while down is set, as
// a cluster's store does when Redis does not answer.
type failingAnswers struct {
	gateway.AnswerStore
	down atomic.Bool
}

var errStoreDown = errors.New("store down")

// newSharedStore is a session store on its own badger, as the nodes of a
// cluster share one.
func newSharedStore(t *testing.T) (*failingAnswers, *badger.DB) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &failingAnswers{AnswerStore: gateway.BadgerAnswers{DB: db}}, db
}

func (f *failingAnswers) GetAnswer(k string) ([]byte, bool, error) {
	if f.down.Load() {
		return nil, false, errStoreDown
	}
	return f.AnswerStore.GetAnswer(k)
}

func (f *failingAnswers) PutAnswer(k string, v []byte, ttl time.Duration) error {
	if f.down.Load() {
		return errStoreDown
	}
	return f.AnswerStore.PutAnswer(k, v, ttl)
}

// TestSession_Shared: two gateways sharing a session store (as a
// cluster's nodes share Redis) serve one dashboard: a session opened on
// one reads and writes on the other, a sign-out on either ends it on
// both; the store holds no cookie value; a store that does not answer
// gives a 503 naming the problem, not a sign-out.
func TestSession_Shared(t *testing.T) {
	store, db := newSharedStore(t)
	shared := func(o *gateway.Options) { withViewer(o); o.Sessions = store }
	up := newUpstream(t)
	a := newHarnessWith(t, up, testCatalog(up.srv.URL), shared)
	b := newHarnessWith(t, up, testCatalog(up.srv.URL), shared)

	c, csrf := a.signIn(adminToken)
	ck := cookieHdr(c)
	resp, body := b.do("GET", "/ui/session", "", ck...)
	if m := decode(t, body); resp.StatusCode != 200 || m["role"] != "admin" || m["csrf_token"] != csrf {
		t.Fatalf("GET /ui/session on the other node: got %d %s, want role admin and the same csrf token", resp.StatusCode, body)
	}
	if resp, body := b.do("POST", "/credits/keys", `{"name":"from-b"}`, append(ck, "X-CSRF-Token", csrf)...); resp.StatusCode != 201 {
		t.Fatalf("write on the other node with the session: got %d %s, want 201", resp.StatusCode, body)
	}
	if resp, body := b.do("POST", "/credits/keys", `{"name":"from-b"}`, append(ck, "X-CSRF-Token", "wrong")...); resp.StatusCode != 403 {
		t.Fatalf("write on the other node, wrong CSRF: got %d %s, want 403", resp.StatusCode, body)
	}
	vc, _ := b.signIn(viewerToken)
	if resp, _ := a.do("GET", "/credits/keys", "", cookieHdr(vc)...); resp.StatusCode != 200 {
		t.Fatalf("viewer session from the other node reads: got %d, want 200", resp.StatusCode)
	}
	if resp, body := a.do("POST", "/credits/keys", `{"name":"v"}`, cookieHdr(vc)...); resp.StatusCode != 403 {
		t.Fatalf("viewer session from the other node writes: got %d %s, want 403", resp.StatusCode, body)
	}

	// A node given another admin token (rotated after a leak) takes no
	// session granted by the old one; its own sign-ins work.
	rotated := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { shared(o); o.AdminToken = "rotated-admin-token" })
	if resp, body := rotated.do("GET", "/ui/session", "", ck...); resp.StatusCode != 401 {
		t.Fatalf("session of the old admin token on a node with a new one: got %d %s, want 401", resp.StatusCode, body)
	}
	rc, _ := rotated.signIn("rotated-admin-token")
	if resp, body := rotated.do("GET", "/credits/keys", "", cookieHdr(rc)...); resp.StatusCode != 200 {
		t.Fatalf("session of the new admin token: got %d %s, want 200", resp.StatusCode, body)
	}

	// The store keeps a digest of the cookie, never the cookie itself.
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		n := 0
		for it.Rewind(); it.Valid(); it.Next() {
			k := string(it.Item().Key())
			v, _ := it.Item().ValueCopy(nil)
			if strings.Contains(k, c.Value) || strings.Contains(string(v), c.Value) || strings.Contains(string(v), adminToken) {
				t.Errorf("store entry %q holds the cookie or the token", k)
			}
			n++
		}
		if n != 3 {
			t.Errorf("store entries: got %d, want 3 (three sessions)", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Down: a 503 that says so, and the session is still there after.
	store.down.Store(true)
	resp, body = b.do("GET", "/credits/keys", "", ck...)
	if resp.StatusCode != 503 || !strings.Contains(string(body), "sessions are unavailable") {
		t.Fatalf("store down: got %d %s, want 503 naming the session store", resp.StatusCode, body)
	}
	if resp, body := a.do("POST", "/ui/session", `{"token":"`+adminToken+`"}`, "Content-Type", "application/json"); resp.StatusCode != 503 || len(resp.Cookies()) != 0 {
		t.Fatalf("sign-in while the store is down: got %d %s, want 503 and no cookie", resp.StatusCode, body)
	}
	if resp, _ := b.admin("GET", "/credits/keys", ""); resp.StatusCode != 200 {
		t.Fatalf("bearer token while the session store is down: got %d, want 200", resp.StatusCode)
	}
	store.down.Store(false)
	if resp, _ := a.do("GET", "/credits/keys", "", ck...); resp.StatusCode != 200 {
		t.Fatalf("session after the store is back: got %d, want 200", resp.StatusCode)
	}

	// Sign-out on b ends the session on a.
	if resp, body := b.do("DELETE", "/ui/session", "", append(ck, "X-CSRF-Token", csrf)...); resp.StatusCode != 200 {
		t.Fatalf("sign-out on b: got %d %s", resp.StatusCode, body)
	}
	for _, h := range []*harness{a, b} {
		if resp, body := h.do("GET", "/credits/keys", "", ck...); resp.StatusCode != 401 {
			t.Fatalf("after sign-out on the other node: got %d %s, want 401", resp.StatusCode, body)
		}
	}
}

// TestMCP_SharedSessions: gateways sharing a session store (a cluster's
// nodes) share the MCP sessions of the stateful revisions: opened on one,
// used on the other, still bound to its principal; a DELETE on one ends
// it on the other within a second; while the store does not answer, each
// node keeps the sessions it holds.
func TestMCP_SharedSessions(t *testing.T) {
	store, db := newSharedStore(t)
	// Both nodes hold the same keys, as a cluster's do.
	keys, err := identity.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	shared := func(o *gateway.Options) { o.Sessions, o.Keys = store, keys }
	up := newUpstream(t)
	a := newHarnessWith(t, up, testCatalog(up.srv.URL), shared)
	b := newHarnessWith(t, up, testCatalog(up.srv.URL), shared)
	k := a.createKey(`{"name":"agent"}`)
	other := a.createKey(`{"name":"other"}`)
	const v = "2025-11-25"
	hdr := func(key, sid string) []string {
		h := []string{"X-API-Key", key, "Content-Type", "application/json", "Accept", "application/json, text/event-stream", "MCP-Protocol-Version", v}
		if sid != "" {
			h = append(h, "Mcp-Session-Id", sid)
		}
		return h
	}
	resp, body := a.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+v+`","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, hdr(k.Secret, "")[:6]...)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != 200 || sid == "" {
		t.Fatalf("initialize on a: got %d %s, session %q", resp.StatusCode, body, sid)
	}
	list := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	if resp, body := b.do("POST", "/mcp", list, hdr(k.Secret, sid)...); resp.StatusCode != 200 || !strings.Contains(string(body), `"tools"`) {
		t.Fatalf("tools/list on b with a's session: got %d %s, want 200", resp.StatusCode, body)
	}
	if resp, body := b.do("POST", "/mcp", list, hdr(other.Secret, sid)...); resp.StatusCode != 404 {
		t.Fatalf("another key with the session on b: got %d %s, want 404", resp.StatusCode, body)
	}

	// The store down: each node goes on with the sessions it holds.
	store.down.Store(true)
	for name, h := range map[string]*harness{"a": a, "b": b} {
		if resp, body := h.do("POST", "/mcp", list, hdr(k.Secret, sid)...); resp.StatusCode != 200 {
			t.Fatalf("store down, node %s: got %d %s, want 200 (the session is held)", name, resp.StatusCode, body)
		}
	}
	store.down.Store(false)

	// Closed on b, ended on a within a second.
	if resp, body := b.do("DELETE", "/mcp", "", hdr(k.Secret, sid)...); resp.StatusCode != 204 {
		t.Fatalf("DELETE on b: got %d %s, want 204", resp.StatusCode, body)
	}
	if resp, _ := b.do("POST", "/mcp", list, hdr(k.Secret, sid)...); resp.StatusCode != 404 {
		t.Fatalf("b after its DELETE: got %d, want 404", resp.StatusCode)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		resp, _ := a.do("POST", "/mcp", list, hdr(k.Secret, sid)...)
		if resp.StatusCode == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a still serves the session 3 s after its DELETE on b: %d", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
