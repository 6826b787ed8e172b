package gateway_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
)

// The dashboard in a real browser: headless Chromium (Debian's package;
// scripts/test.sh installs it) driven over the DevTools protocol.

// screenshotDir is where the test writes a screenshot of each view:
// docs/dashboard (the pictures of docs/dashboard.md) when
// TOOLGATE_SCREENSHOTS=1, else the test's own temporary folder, so that
// a run of make test leaves the checkout as it found it.
func screenshotDir(t *testing.T) string {
	if os.Getenv("TOOLGATE_SCREENSHOTS") == "1" {
		return "../docs/dashboard"
	}
	return t.TempDir()
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: apt-get install -y chromium (scripts/test.sh installs it)")
	return ""
}

type browser struct {
	t     *testing.T
	ctx   context.Context
	url   string
	shots string // the folder screenshots go to (screenshotDir)

	mu     sync.Mutex
	errors []string // console errors and uncaught exceptions
}

func newBrowser(t *testing.T, url string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath(t)),
		chromedp.WindowSize(1280, 900), chromedp.Flag("lang", "en-US"))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run its sandbox as root
	}
	// A bound on the whole browser session: a hung Chromium fails the
	// test instead of holding CI.
	tctx, cancelT := context.WithTimeout(context.Background(), 3*time.Minute)
	actx, cancelA := chromedp.NewExecAllocator(tctx, opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA(); cancelT() })
	b := &browser{t: t, ctx: ctx, url: url}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				if m.Source == "network" {
					continue // an answer's status (401 before sign-in, the viewer's 403s) is not a page error
				}
				b.mu.Lock()
				b.errors = append(b.errors, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v\npage: %s", err, b.text("main"))
	}
}

// eval runs js in the page and decodes its value.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

func (b *browser) text(sel string) string {
	v, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(document.querySelector(`+strconv.Quote(sel)+`)||{}).textContent||''`))
	return v
}

// click clicks sel with real input events, looking the element up again
// when the view re-rendered it between the lookup and the click (lists
// and tables refresh every 2 s; chromedp then reports "Could not find
// node with given id" and has dispatched nothing).
func (b *browser) click(sel string) {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := chromedp.Do(b.ctx, chromedp.Click(chromedp.CSS(sel)))
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Could not find node") || time.Now().After(deadline) {
			b.t.Fatalf("browser: clicking %s: %v\npage: %s", sel, err, b.text("main"))
		}
	}
}

// waitFor polls the page until js is truthy (the views refresh every 2 s).
func (b *browser) waitFor(what, js string) {
	b.t.Helper()
	err := chromedp.Do(b.ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v\npage: %s", what, err, b.text("main"))
	}
}

// waitText waits until the element sel holds want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	b.waitFor(sel+" to show "+strconv.Quote(want),
		`(document.querySelector(`+strconv.Quote(sel)+`)||{textContent:''}).textContent.includes(`+strconv.Quote(want)+`)`)
}

func (b *browser) view(name string) {
	b.t.Helper()
	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="` + name + `"]`)))
	b.waitFor("the "+name+" view", `document.querySelector('#nav a[aria-current="page"]').dataset.view === `+strconv.Quote(name))
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	eval[bool](b, `(window.scrollTo(0, 0), true)`)
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		b.t.Fatal(err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		b.t.Fatalf("screenshot %s: not a PNG (%d bytes)", name, len(png))
	}
	if b.shots == "" {
		b.shots = screenshotDir(b.t)
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// checkLabels fails for any visible form control without a label.
func (b *browser) checkLabels(view string) {
	b.t.Helper()
	bad := eval[[]string](b, `[...document.querySelectorAll('input, select, textarea')]
		.filter(e => e.offsetParent !== null && e.type !== 'hidden')
		.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
		.map(e => e.outerHTML.slice(0, 120))`)
	if len(bad) > 0 {
		b.t.Errorf("%s view: controls without a label: %v", view, bad)
	}
}

// signIn types a token and presses Enter: the keyboard path.
func (b *browser) signIn(tok string) {
	b.t.Helper()
	b.do(chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), tok),
		chromedp.KeyEvent(kb.Enter))
	b.waitFor("the signed-in page", `!document.querySelector('#nav').hidden && document.querySelector('#main h1') !== null`)
}

// seedHistory appends 50 minutes of earlier traffic by a few other
// callers to the ledger before the gateway starts (which counts it for
// /stats from the ledger), so that the charts and top lists have
// something to show. Not a full hour: none of it may leave the last-hour
// chart while the test compares the chart's counts before and after.
func seedHistory(t *testing.T, led *ledger.Ledger, now time.Time) {
	t.Helper()
	who := []string{"key:k_RESEARCHBOT01", "key:k_MAILER000002", "key:k_SCRAPER00003", "wallet:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}
	tools := []string{"extract/structured", "search/web", "email/send", "image/generate", "code_execute"}
	var recs []*ledger.Record
	for m := 50; m >= 1; m-- {
		at := now.Add(-time.Duration(m) * time.Minute)
		n := 4 + (60-m)%7 + m%5
		for i := range n {
			r := &ledger.Record{Type: ledger.TypeCall, At: at.Add(time.Duration(i) * time.Second), Principal: who[(m+i)%len(who)],
				Tier: "api_key", Tool: tools[(m*3+i)%len(tools)], RateClass: "light", Outcome: "allowed", Status: 200}
			switch {
			case r.Tool == "code_execute":
				r.Outcome, r.Reason, r.Status = "denied", "deny_tools", 403
			case (m+i)%11 == 0:
				r.Outcome, r.Reason, r.Status = "quota_exceeded", "rate_class_quota", 403
			case (m+i)%17 == 0:
				r.Outcome, r.Reason, r.Status = "spend_cap_exceeded", "daily_spend_cap", 429
			default:
				r.Cost, r.SpendDay = 10_000, now.UTC().Format(time.DateOnly)
			}
			recs = append(recs, r)
		}
	}
	if err := led.Append(recs...).Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestDashboard_Browser drives the dashboard in headless Chromium: sign
// in; create a key with a policy (an invalid one first: the validator's
// problem at its JSON path, nothing created); calls over HTTP change the
// chart, the denials and the quota window without a reload; revoke;
// audit search and chain verification; sign out and be refused; a
// viewer session is refused changes by the server; labels, keyboard, no
// console errors; a screenshot of each view.
func TestDashboard_Browser(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		withViewer(o)
		withX402(t, &fakeSettler{})(o) // wallets pay per call: revenue and the Bazaar listing
		seedHistory(t, o.Ledger, time.Now())
	})
	b := newBrowser(t, h.url)
	run := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			prev := b.t
			b.t = t // the helpers fail the subtest
			defer func() { b.t = prev }()
			fn(t)
		})
	}

	b.do(chromedp.Navigate(h.url + "/ui/"))
	b.waitFor("the sign-in form", `!document.querySelector('#signin').hidden`)
	b.checkLabels("sign-in")
	b.do(chromedp.SendKeys(chromedp.CSS("#token"), "wrong-token"), chromedp.KeyEvent(kb.Enter))
	b.waitText("#signin-error", "Invalid token")
	b.screenshot("signin")
	b.signIn(adminToken)

	run("Keyboard", func(t *testing.T) {
		// The skip link, then the views in order; Enter follows a link.
		eval[bool](b, `(document.querySelector('.skip').focus(), true)`)
		b.do(chromedp.KeyEvent(kb.Tab))
		if got := eval[string](b, `document.activeElement.dataset.view || document.activeElement.outerHTML.slice(0, 80)`); got != "overview" {
			t.Errorf("Tab after the skip link: focus on %q, want the Overview link", got)
		}
		for range 3 {
			b.do(chromedp.KeyEvent(kb.Tab))
		}
		b.do(chromedp.KeyEvent(kb.Enter)) // the Audit link, by keyboard
		b.waitFor("the audit view by keyboard, focused", `document.querySelector('#q-principal') !== null && document.activeElement.id === 'main'`)
		b.do(chromedp.KeyEvent(kb.Tab)) // into the audit form
		if got := eval[string](b, `document.activeElement.id`); got != "q-principal" {
			t.Errorf("Tab in the audit view: focus on %q, want the search form", got)
		}
	})

	run("CreateKey", func(t *testing.T) {
		b.view("keys")
		b.checkLabels("keys")
		b.do(chromedp.SendKeys(chromedp.CSS("#new-name"), "ci-agent"),
			chromedp.SetValue(chromedp.CSS("#new-policy"), `{"deny_tools": ["code_execute"],
  "rate_class_quota": {"light": 3, "medium": 5, "heavy": -1}}`),
			chromedp.Click(chromedp.CSS("#create-key")))
		b.waitText("#new-policy-problems", "policy.rate_class_quota.heavy")
		b.waitText("#new-policy-problems", "line 2")
		if got := eval[string](b, `document.querySelector('#new-policy').getAttribute('aria-invalid')`); got != "true" {
			t.Errorf("aria-invalid: got %q, want true", got)
		}
		b.screenshot("keys-invalid-policy")
		if n := len(h.keys(t)); n != 0 {
			t.Fatalf("keys after an invalid policy: got %d, want 0", n)
		}
		b.do(chromedp.SetValue(chromedp.CSS("#new-policy"), `{"deny_tools": ["code_execute"], "rate_class_quota": {"light": 3, "medium": 5}}`),
			chromedp.Click(chromedp.CSS("#check-policy")))
		b.waitText("#new-policy-problems", "Valid")
		if n := len(h.keys(t)); n != 0 {
			t.Fatalf("keys after Check policy: got %d, want 0", n)
		}
		b.do(chromedp.SetValue(chromedp.CSS("#new-credits"), "1.5"), chromedp.Click(chromedp.CSS("#create-key")))
		b.waitFor("the new secret", `document.querySelector('#secret-value') !== null`)
	})
	secret := b.text("#secret-value")
	if !strings.HasPrefix(secret, "it-") {
		t.Fatalf("secret shown: %q, want it-…", secret)
	}
	keys := h.keys(t)
	if len(keys) != 1 {
		t.Fatalf("keys: got %d, want 1", len(keys))
	}
	keyID := keys[0].(map[string]any)["key_id"].(string)
	b.waitFor("the key in the table", `document.querySelector('tr[data-key-id="`+keyID+`"]') !== null`)
	b.screenshot("keys")
	b.do(chromedp.Click(chromedp.CSS("#secret button")))
	b.waitFor("the secret to leave the page", `document.querySelector('#secret-value') === null`)
	if eval[bool](b, `document.documentElement.outerHTML.includes(`+strconv.Quote(secret)+`) || location.href.includes(`+
		strconv.Quote(secret)+`) || localStorage.length + sessionStorage.length > 0 || document.cookie !== ''`) {
		t.Fatal("the secret (or the session cookie) is still readable by the page, its URL or its storage")
	}

	run("LiveOverview", func(t *testing.T) {
		b.view("overview")
		b.waitFor("the chart", `document.querySelector('#chart svg') !== null`)
		eval[bool](b, `(window.__noReload = true, window.__count = (o) => {
			const m = document.querySelector('#chart svg').getAttribute('aria-label').match(new RegExp('(\\d+) ' + o + '(,|$)'));
			return m ? Number(m[1]) : 0;
		}, window.__reason = (r) => {
			const row = [...document.querySelectorAll('#denials tbody tr')].find(tr => tr.cells[0].textContent === r);
			return row ? Number(row.cells[1].textContent) : 0;
		}, window.__before = Object.fromEntries(['allowed', 'denied', 'quota_exceeded'].map(o => [o, __count(o)])),
		window.__reasons = {deny: __reason('deny_tools'), quota: __reason('rate_class_quota')}, true)`)
		for range 3 {
			if resp, body := h.call(secret, "search/web", `{}`); resp.StatusCode != 200 {
				t.Fatalf("allowed call: %d %s", resp.StatusCode, body)
			}
		}
		h.call(secret, "search/web", `{}`)   // over the light quota of 3
		h.call(secret, "code_execute", `{}`) // denied by policy
		defer func() {
			if t.Failed() {
				t.Logf("chart: %s; before: %s", eval[string](b, `document.querySelector('#chart svg').getAttribute('aria-label')`),
					eval[string](b, `JSON.stringify(__before)`))
			}
		}()
		b.waitFor("the chart to count the calls", `__count('allowed') === __before.allowed + 3 && __count('denied') === __before.denied + 1 &&
			__count('quota_exceeded') === __before.quota_exceeded + 1`)
		// A wallet pays for one call: x402 revenue.
		if resp, body := h.do("POST", "/tools/search/web", `{}`, "PAYMENT-SIGNATURE", h.pay(chain.Accounts[6], "search/web", 2000)); resp.StatusCode != 200 {
			t.Fatalf("paid call: %d %s", resp.StatusCode, body)
		}
		b.waitText("#kpi-revenue", "$0.0020")
		b.waitFor("the chart to count the paid call", `__count('allowed') === __before.allowed + 4`)
		b.waitFor("the denials by reason to count them", `__reason('deny_tools') === __reasons.deny + 1 && __reason('rate_class_quota') === __reasons.quota + 1`)
		b.waitText("#top-denials", keyID)
		b.waitText("#top-spend", keyID)
		if !eval[bool](b, `window.__noReload === true`) {
			t.Fatal("the page reloaded")
		}
		b.do(chromedp.Click(chromedp.CSS("#verify-now")))
		b.waitText("#last-verification", "intact")
		b.checkLabels("overview")
		b.screenshot("overview")
	})

	run("Principal", func(t *testing.T) {
		b.view("principals")
		b.checkLabels("principals")
		b.do(chromedp.SendKeys(chromedp.CSS("#principal-search"), "ci-agent"))
		b.waitText("#principal-list", keyID)
		b.click(`#principal-list a[href*="` + keyID + `"]`)
		b.waitText(`#quota tr[data-class="light"] .used`, "3")
		if got := b.text(`tr[data-field="deny_tools"] .from`); got != "override" {
			t.Errorf("deny_tools provenance: got %q, want override", got)
		}
		if got := b.text(`tr[data-field="daily_spend_cap_usd"] .from`); got != "tier:api_key" {
			t.Errorf("daily cap provenance: got %q, want tier:api_key", got)
		}
		b.waitText("#recent-denials", "deny_tools")
		b.waitText("#last-calls", "search/web")
		eval[bool](b, `(window.__noReload = true)`)
		if resp, body := h.call(secret, "email/send", `{}`); resp.StatusCode != 200 {
			t.Fatalf("medium call: %d %s", resp.StatusCode, body)
		}
		b.waitText(`#quota tr[data-class="medium"] .used`, "1")
		b.waitText("#last-calls", "email/send")
		if !eval[bool](b, `window.__noReload === true && document.querySelector('#spend-bar') !== null`) {
			t.Fatal("the page reloaded, or has no spend bar")
		}
		b.screenshot("principals")
	})

	run("PolicyEditInline", func(t *testing.T) {
		b.view("keys")
		b.click(`button[aria-label="Edit policy of ` + keyID + `"]`)
		b.waitFor("the policy editor", `document.querySelector('#edit-policy') !== null`)
		b.do(chromedp.SetValue(chromedp.CSS("#edit-policy"), `{"deny_tools": ["code_execute"], "mode": "lax"}`),
			chromedp.Click(chromedp.CSS("#save-policy")))
		b.waitText("#edit-policy-problems", "$.mode")
		_, body := h.admin("GET", "/credits/keys/"+keyID+"/policy", "")
		if strings.Contains(string(body), "lax") {
			t.Fatalf("invalid policy saved: %s", body)
		}
	})

	run("Revoke", func(t *testing.T) {
		b.click(`button[aria-label="Revoke ` + keyID + `"]`)
		b.click(`button[aria-label="Confirm revoking ` + keyID + `"]`)
		b.waitText(`tr[data-key-id="`+keyID+`"] .status`, "revoked")
		if resp, _ := h.call(secret, "search/web", `{}`); resp.StatusCode != 401 {
			t.Fatalf("call with the revoked key: got %d, want 401", resp.StatusCode)
		}
	})

	run("Audit", func(t *testing.T) {
		b.view("audit")
		b.checkLabels("audit")
		b.do(chromedp.SetValue(chromedp.CSS("#q-principal"), "key:"+keyID),
			chromedp.SetValue(chromedp.CSS("#q-outcome"), "denied"),
			chromedp.Click(chromedp.CSS("#audit-search")))
		b.waitText("#audit-results h2", "1 records")
		b.click("#audit-results button")
		b.waitText("#audit-detail", `"reason": "deny_tools"`)
		if href := eval[string](b, `document.querySelector('#export-selection').getAttribute('href')`); !strings.Contains(href, "outcome=denied") {
			t.Errorf("export link: %q, want the selection's query", href)
		}
		exported := eval[string](b, `fetch(document.querySelector('#export-selection').href).then(r => r.text())`)
		if lines := strings.Split(strings.TrimSpace(exported), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"outcome":"denied"`) {
			t.Errorf("downloaded selection: %q, want the one denied record", exported)
		}
		chainExport := eval[string](b, `fetch(document.querySelector('#export-chain').href).then(r => r.text())`)
		if !strings.Contains(chainExport, `"type":"checkpoint"`) {
			t.Errorf("chain export: no checkpoint in %.200q", chainExport)
		}
		b.do(chromedp.Click(chromedp.CSS("#verify-chain")))
		b.waitText("#verify-result", "Intact")
		b.screenshot("audit")
	})

	run("Tools", func(t *testing.T) {
		b.view("tools")
		b.waitText("#tools", "extract/structured")
		b.waitText("#tools", "after_upstream")
		b.waitText("#bazaar", "/tools/extract/structured")
		b.waitText("#tools", "offered")
		b.screenshot("tools")
	})

	run("SignOut", func(t *testing.T) {
		b.do(chromedp.Click(chromedp.CSS("#signout")))
		b.waitFor("the sign-in form", `!document.querySelector('#signin').hidden`)
		if got := eval[int](b, `fetch('/credits/keys').then(r => r.status)`); got != 401 {
			t.Fatalf("after sign-out, GET /credits/keys: got %d, want 401", got)
		}
	})

	run("Viewer", func(t *testing.T) {
		b.signIn(viewerToken)
		b.waitText("#who", "viewer")
		b.view("keys")
		if !eval[bool](b, `document.querySelector('#create-key').disabled`) {
			t.Error("create button enabled for a viewer")
		}
		// The page's buttons aside, the server refuses: a viewer's session,
		// with its CSRF token, changing things by hand.
		got := eval[[]int](b, `(async () => {
			const s = await (await fetch('/ui/session')).json();
			const hd = {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token};
			const create = await fetch('/credits/keys', {method: 'POST', headers: hd, body: '{"name":"by-viewer"}'});
			const revoke = await fetch('/credits/keys/`+keyID+`', {method: 'DELETE', headers: hd});
			const read = await fetch('/credits/keys');
			return [create.status, revoke.status, read.status];
		})()`)
		if len(got) != 3 || got[0] != 403 || got[1] != 403 || got[2] != 200 {
			t.Fatalf("viewer create, revoke, read: got %v, want [403 403 200]", got)
		}
		if n := len(h.keys(t)); n != 1 {
			t.Fatalf("keys after the viewer: got %d, want 1", n)
		}
		b.screenshot("viewer-keys")
	})

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errors) > 0 {
		j, _ := json.MarshalIndent(b.errors, "", "  ")
		t.Fatalf("console errors: %s", j)
	}
}

// peerList is a cluster's membership as a node's registry reports it:
// here this gateway itself and a second node that does not answer.
type peerList struct{ self, dead string }

func (p *peerList) View(string) gateway.ClusterStatus {
	return gateway.ClusterStatus{Node: "node-a", Redis: "ok", LiveNodes: 2}
}

func (p *peerList) Peers() []gateway.ClusterPeer {
	return []gateway.ClusterPeer{{Node: "node-a", URL: p.self}, {Node: "node-b", URL: p.dead}}
}

// TestDashboard_BrowserCluster: in cluster mode the overview says whose
// figures it shows, and names a node that did not answer (its calls are
// not in the sums) instead of showing a partial sum as the whole.
func TestDashboard_BrowserCluster(t *testing.T) {
	up := newUpstream(t)
	peers := &peerList{dead: "http://" + closedAddr(t)}
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { o.Cluster = peers })
	peers.self = h.url
	k := h.createKey(`{"name":"agent"}`)
	for range 3 {
		h.call(k.Secret, "extract/structured", `{}`)
	}
	b := newBrowser(t, h.url)
	b.do(chromedp.Navigate(h.url + "/ui/"))
	b.signIn(adminToken)
	b.waitText("#cluster-note", "figures of 1 of 2 nodes")
	b.waitText("#cluster-note", "node-b")
	b.waitText("#kpi-calls", "3")
	b.screenshot("overview-cluster-node-down")
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
