// Package toolgate_test runs the real toolgate binary against a local chain
// (anvil with TestUSDC at Base Sepolia's USDC address), the x402 reference
// facilitator and the real npm x402 clients, and checks the x402 payment
// path end to end: 402 format, payment by @x402/fetch (v2) and x402-fetch
// (v1), both settlement backends and settle modes, the refusals that must
// never move money, one-payment-one-call under concurrency, wallet spend
// status, and the nonce lock across a restart.
//
// Needs scripts/e2e-deps.sh (skips without it, fails with CI set).
package toolgate_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// binary is the toolgate executable built once by TestMain.
var binary string

// repoRoot is the module root (two levels above this file).
var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}()

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "toolgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "toolgate")
	build := exec.Command("go", "build", "-o", binary, "./cmd/toolgate")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build toolgate:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const adminToken = "e2e-admin-token-0123456789"

// Prices of the test catalog (micro-USD == USDC atomic units).
const (
	priceExtract = 10_000 // $0.01, after_upstream
	priceEmail   = 5_000  // $0.005, before_upstream
	priceFlaky   = 10_000 // $0.01, after_upstream, upstream answers 500 while failing
	priceCode    = 20_000 // $0.02, heavy, before_upstream, denied to unknown_wallet
	priceImage   = 40_000 // $0.04, heavy, after_upstream
)

// testTools is the catalog; %s is the upstream base URL.
const testTools = `{"tools":[
 {"id":"extract/structured","rate_class":"light","price_usd":"0.01","upstream":"%[1]s/extract","timeout_ms":5000,
  "description":"Extract structured JSON from text",
  "discovery":{"input":{"text":"Invoice 42 from ACME, total $120"},
   "input_schema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]},
   "output":{"ok":true},"body_type":"json"}},
 {"id":"email/send","rate_class":"medium","price_usd":"0.005","upstream":"%[1]s/email","timeout_ms":5000,
  "settle":"before_upstream","description":"Send one email"},
 {"id":"flaky","rate_class":"light","price_usd":"0.01","upstream":"%[1]s/flaky","timeout_ms":5000,
  "description":"Answers 500 while told to fail"},
 {"id":"code_execute","rate_class":"heavy","price_usd":"0.02","upstream":"%[1]s/code","timeout_ms":5000,
  "settle":"before_upstream","description":"Run code in a sandbox"},
 {"id":"image/generate","rate_class":"heavy","price_usd":"0.04","upstream":"%[1]s/image","timeout_ms":5000,
  "description":"Generate an image"}
]}`

// upstream is a loopback tool server that counts hits per path.
type upstream struct {
	srv   *http.Server
	url   string
	mu    sync.Mutex
	hits  map[string]int
	fail  atomic.Bool // /flaky answers 500 while set
	delay atomic.Int64
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("upstream listen: %v", err)
	}
	u := &upstream{hits: map[string]int{}, url: "http://" + ln.Addr().String()}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 5 * time.Second}
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.hits[r.URL.Path]++
	u.mu.Unlock()
	if d := u.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/flaky" && u.fail.Load() {
		w.WriteHeader(500)
		io.WriteString(w, `{"error":"upstream broke"}`)
		return
	}
	// Payment headers must never reach the tool.
	leaked := r.Header.Get("Payment-Signature") != "" || r.Header.Get("X-Payment") != ""
	fmt.Fprintf(w, `{"ok":true,"path":%q,"principal":%q,"leaked_payment":%t,"echo":%q}`,
		r.URL.Path, r.Header.Get("X-Toolgate-Principal"), leaked, body)
}

// Hits returns how often path was called.
func (u *upstream) Hits(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[path]
}

// backend selects how the gateway settles.
type backend int

const (
	viaFacilitator backend = iota
	viaChain
)

func (b backend) String() string {
	if b == viaChain {
		return "chain"
	}
	return "facilitator"
}

// env is one test's world: chain, facilitator (if any), upstream, gateway.
type env struct {
	t   testing.TB
	a   *chain.Anvil
	fac *chain.Facilitator // nil with viaChain
	up  *upstream
	gw  *gateway
}

// newEnv starts anvil with TestUSDC, mints to the default Payer, starts the
// facilitator (viaFacilitator) and the gateway.
func newEnv(t testing.TB, b backend) *env {
	t.Helper()
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, 5*money.PerUSD)
	e := &env{t: t, a: a, up: startUpstream(t)}
	var extra []string
	if b == viaFacilitator {
		e.fac = chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
		extra = []string{"--x402-facilitator", e.fac.URL()}
	} else {
		keyFile := filepath.Join(t.TempDir(), "relayer.key")
		if err := os.WriteFile(keyFile, []byte(chain.Relayer.KeyHex+"\n"), 0o600); err != nil {
			t.Fatalf("write relayer key: %v", err)
		}
		extra = []string{"--x402-rpc", a.RPC(), "--x402-relayer-key-file", keyFile}
	}
	e.gw = startGateway(t, e.up.url, extra...)
	return e
}

// gateway is a running `toolgate serve` process.
type gateway struct {
	t       testing.TB
	url     string
	args    []string
	cmd     *exec.Cmd
	stderr  *bytes.Buffer
	mu      sync.Mutex
	done    chan struct{}
	stopped bool
}

// startGateway writes tools.json for the upstream, copies the repo's
// policies.json and runs toolgate serve with x402 on, paying chain.PayTo.
func startGateway(t testing.TB, upstreamURL string, extra ...string) *gateway {
	t.Helper()
	return startGatewayCatalog(t, fmt.Sprintf(testTools, upstreamURL), extra...)
}

// startGatewayCatalog is startGateway with toolsJSON as tools.json.
func startGatewayCatalog(t testing.TB, toolsJSON string, extra ...string) *gateway {
	t.Helper()
	dir := t.TempDir()
	tools := filepath.Join(dir, "tools.json")
	if err := os.WriteFile(tools, []byte(toolsJSON), 0o600); err != nil {
		t.Fatalf("write tools.json: %v", err)
	}
	pol, err := os.ReadFile(filepath.Join(repoRoot, "policies.json"))
	if err != nil {
		t.Fatalf("read policies.json: %v", err)
	}
	policies := filepath.Join(dir, "policies.json")
	if err := os.WriteFile(policies, pol, 0o600); err != nil {
		t.Fatalf("write policies.json: %v", err)
	}
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	g := &gateway{t: t, url: "http://" + addr}
	g.args = append([]string{"serve",
		"--listen", addr, "--public-url", g.url,
		"--data", filepath.Join(dir, "data"),
		"--tools", tools, "--policies", policies,
		"--admin-token", adminToken, "--log-level", "warn",
		"--x402-pay-to", chain.PayTo.Address.Hex(),
	}, extra...)
	g.start()
	t.Cleanup(g.stop)
	t.Cleanup(func() {
		if t.Failed() {
			g.mu.Lock()
			t.Logf("toolgate stderr:\n%s", g.stderr.String())
			g.mu.Unlock()
		}
	})
	return g
}

// lockedBuffer guards a bytes.Buffer written by exec's copier.
type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (g *gateway) start() {
	t := g.t
	t.Helper()
	cmd := exec.Command(binary, g.args...)
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	g.mu.Lock()
	if g.stderr == nil {
		g.stderr = &bytes.Buffer{}
	}
	g.mu.Unlock()
	cmd.Stderr = lockedWriter{&g.mu, g.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start toolgate: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	g.cmd, g.done, g.stopped = cmd, done, false
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("toolgate exited at start: %s", g.stderr.String())
		default:
		}
		if res, err := http.Get(g.url + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("toolgate did not answer /healthz within 20 s")
}

// stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits.
func (g *gateway) stop() {
	if g.stopped || g.cmd == nil {
		return
	}
	g.stopped = true
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
}

// restart stops the process and starts it again on the same data dir and port.
func (g *gateway) restart() {
	g.t.Helper()
	g.stop()
	g.start()
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// response is a completed HTTP exchange.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

var httpClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}

// do sends a request and reads the whole answer; it fails the test on a
// transport error.
func do(t testing.TB, method, url string, body []byte, headers map[string]string) response {
	t.Helper()
	r, err := tryDo(method, url, body, headers)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

func tryDo(method, url string, body []byte, headers map[string]string) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Header: res.Header, Body: b}, err
}

// admin calls the management API with the admin token.
func (g *gateway) admin(t testing.TB, method, path string, body any) response {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	}
	return do(t, method, g.url+path, b, map[string]string{"Authorization": "Bearer " + adminToken})
}

// auditRecord is the part of a ledger record the tests read.
type auditRecord struct {
	Type      string       `json:"type"`
	RequestID string       `json:"request_id"`
	Principal string       `json:"principal"`
	Tier      string       `json:"tier"`
	Tool      string       `json:"tool"`
	Protocol  string       `json:"protocol"`
	Outcome   string       `json:"outcome"`
	Reason    string       `json:"reason"`
	Status    int          `json:"status"`
	Cost      money.Micros `json:"cost_micros"`
	Kind      string       `json:"kind"`
	Amount    money.Micros `json:"amount_micros"`
	Payer     string       `json:"payer"`
	Network   string       `json:"network"`
	TxHash    string       `json:"tx_hash"`
	TokenID   string       `json:"jti"`
	ClientID  string       `json:"client_id"`
	Payment   *struct {
		Version int    `json:"version"`
		Payer   string `json:"payer"`
		Nonce   string `json:"nonce"`
	} `json:"payment"`
}

// audit returns the ledger records of principal (oldest first).
func (g *gateway) audit(t testing.TB, principal string) []auditRecord {
	t.Helper()
	r := g.admin(t, "GET", "/audit?limit=10000&since=1h&principal="+principal, nil)
	if r.Status != 200 {
		t.Fatalf("GET /audit: got status %d, want 200: %s", r.Status, r.Body)
	}
	var out []auditRecord
	for _, line := range bytes.Split(bytes.TrimSpace(r.Body), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var rec auditRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// wantSettledInLedger checks that the ledger holds, for the call with
// requestID, an allowed call record and an x402_settlement txn with tx.
func (g *gateway) wantSettledInLedger(t testing.TB, payer common.Address, tool, requestID, tx string, amount money.Micros) {
	t.Helper()
	var call, txn *auditRecord
	recs := g.audit(t, "wallet:"+payer.Hex())
	for i := range recs {
		r := &recs[i]
		if r.RequestID != requestID {
			continue
		}
		switch r.Type {
		case "call":
			call = r
		case "txn":
			txn = r
		}
	}
	if call == nil {
		t.Fatalf("ledger: no call record for request %s among %d records", requestID, len(recs))
	}
	if call.Outcome != "allowed" || call.Tool != tool || call.Cost != amount || call.Status != 200 {
		t.Errorf("ledger call: got outcome %q tool %q cost %d status %d, want allowed %q %d 200",
			call.Outcome, call.Tool, call.Cost, call.Status, tool, amount)
	}
	if call.Payment == nil || !strings.EqualFold(call.Payment.Payer, payer.Hex()) {
		t.Errorf("ledger call payment: got %+v, want payer %s", call.Payment, payer.Hex())
	}
	if txn == nil {
		t.Fatalf("ledger: no txn record for request %s", requestID)
	}
	if txn.Kind != "x402_settlement" || txn.Amount != amount || !strings.EqualFold(txn.TxHash, tx) || tx == "" ||
		!strings.EqualFold(txn.Payer, payer.Hex()) {
		t.Errorf("ledger txn: got kind %q amount %d tx %q payer %q, want x402_settlement %d %q %s",
			txn.Kind, txn.Amount, txn.TxHash, txn.Payer, amount, tx, payer.Hex())
	}
}

// outcomes counts the ledger's call records of principal by outcome.
func (g *gateway) outcomes(t testing.TB, principal string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range g.audit(t, principal) {
		if r.Type == "call" {
			out[r.Outcome]++
		} else if r.Kind == "x402_settlement" {
			out["x402_settlement"]++
		}
	}
	return out
}

// paymentRequired is the decoded PAYMENT-REQUIRED header (v2).
type paymentRequired struct {
	X402Version int    `json:"x402Version"`
	Error       string `json:"error"`
	Resource    struct {
		URL         string `json:"url"`
		Description string `json:"description"`
		MimeType    string `json:"mimeType"`
	} `json:"resource"`
	Accepts    []json.RawMessage          `json:"accepts"`
	Extensions map[string]json.RawMessage `json:"extensions"`
}

type requirements struct {
	Scheme            string `json:"scheme"`
	Network           string `json:"network"`
	Amount            string `json:"amount"`
	Asset             string `json:"asset"`
	PayTo             string `json:"payTo"`
	MaxTimeoutSeconds int    `json:"maxTimeoutSeconds"`
	Extra             struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"extra"`
}

func decodeB64JSON(t testing.TB, what, s string, out any) {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%s: not standard base64 (%v): %q", what, err, s)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%s: %v: %s", what, err, raw)
	}
}

// settleResponse is the decoded PAYMENT-RESPONSE / X-PAYMENT-RESPONSE.
type settleResponse = chain.SettleResponse

// offer fetches a tool's 402 and returns the decoded header and the raw
// accepts[0] object (to echo in a v2 payment).
func (g *gateway) offer(t testing.TB, tool string) (paymentRequired, json.RawMessage) {
	t.Helper()
	r := do(t, "POST", g.url+"/tools/"+tool, nil, nil)
	if r.Status != 402 {
		t.Fatalf("unpaid %s: got status %d, want 402: %s", tool, r.Status, r.Body)
	}
	var pr paymentRequired
	decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
	if len(pr.Accepts) == 0 {
		t.Fatalf("PAYMENT-REQUIRED of %s has no accepts", tool)
	}
	return pr, pr.Accepts[0]
}

// signedPayment builds a payment header from an authorization signed in Go.
type signedPayment struct {
	Auth   chain.Authorization
	Header string // base64 payload
	Name   string // PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1)
}

// Headers returns the request header map carrying the payment.
func (p signedPayment) Headers() map[string]string { return map[string]string{p.Name: p.Header} }

// payV2 signs auth by payer and wraps it in a v2 PaymentPayload echoing accepted.
func payV2(t testing.TB, payer chain.Account, auth chain.Authorization, accepted json.RawMessage) signedPayment {
	t.Helper()
	sig, err := auth.Sign(payer)
	if err != nil {
		t.Fatal(err)
	}
	p := map[string]any{
		"x402Version": 2,
		"accepted":    accepted,
		"payload":     map[string]any{"signature": "0x" + hex.EncodeToString(sig), "authorization": auth.WireJSON()},
	}
	b, _ := json.Marshal(p)
	return signedPayment{Auth: auth, Header: base64.StdEncoding.EncodeToString(b), Name: "PAYMENT-SIGNATURE"}
}

// payV1 signs auth and wraps it in a v1 payload for base-sepolia.
func payV1(t testing.TB, payer chain.Account, auth chain.Authorization) signedPayment {
	t.Helper()
	sig, err := auth.Sign(payer)
	if err != nil {
		t.Fatal(err)
	}
	p := map[string]any{
		"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
		"payload": map[string]any{"signature": "0x" + hex.EncodeToString(sig), "authorization": auth.WireJSON()},
	}
	b, _ := json.Marshal(p)
	return signedPayment{Auth: auth, Header: base64.StdEncoding.EncodeToString(b), Name: "X-PAYMENT"}
}

// validV2 is a correct v2 payment by payer for tool at price.
func (g *gateway) validV2(t testing.TB, payer chain.Account, tool string, price money.Micros) signedPayment {
	t.Helper()
	_, acc := g.offer(t, tool)
	return payV2(t, payer, chain.NewAuthorization(payer.Address, chain.PayTo.Address, price, 2*time.Minute), acc)
}

// decodeSettlement decodes the payment response header of r.
func decodeSettlement(t testing.TB, r response, name string) settleResponse {
	t.Helper()
	v := r.Header.Get(name)
	if v == "" {
		t.Fatalf("no %s header (status %d, body %s)", name, r.Status, r.Body)
	}
	var s settleResponse
	decodeB64JSON(t, name, v, &s)
	return s
}

// errorField returns the "error" string of a JSON body.
func errorField(b []byte) string {
	var v struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &v)
	return v.Error
}

// randomNonce returns 32 random bytes.
func randomNonce() (n [32]byte) {
	_, _ = rand.Read(n[:])
	return n
}

// sendAtOnce sends one payment n times at once, request i to urlOf(i),
// and counts the answers: 200s, and 402s refusing the payment as already
// used. Any other answer fails the test, naming the request.
func sendAtOnce(t testing.TB, n int, urlOf func(i int) string, p signedPayment) (ok, replay int) {
	t.Helper()
	var wg sync.WaitGroup
	results := make([]response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = tryDo("POST", urlOf(i), []byte(extractInput), p.Headers())
		})
	}
	close(start)
	wg.Wait()
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("request %d (%s): %v", i, urlOf(i), errs[i])
		}
		switch r.Status {
		case 200:
			ok++
		case 402:
			var pr paymentRequired
			decodeB64JSON(t, "PAYMENT-REQUIRED", r.Header.Get("Payment-Required"), &pr)
			if pr.Error != reasonNonce {
				t.Errorf("request %d (%s): 402 %q, want %q", i, urlOf(i), pr.Error, reasonNonce)
				continue
			}
			replay++
		default:
			t.Errorf("request %d (%s): got status %d: %s", i, urlOf(i), r.Status, r.Body)
		}
	}
	return ok, replay
}
