package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testCA is a certificate authority made in the test; it writes leaf
// pairs for localhost into dir/cert.pem and dir/key.pem.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	dir    string
	serial int64
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "toolgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, dir: dir, serial: 100}
}

// pair makes a leaf for localhost and 127.0.0.1 valid for days.
func (ca *testCA) pair(t *testing.T, days int) (certPEM, keyPEM []byte, serial int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), ca.serial
}

// write replaces the pair files (each by an atomic rename).
func (ca *testCA) write(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	for name, b := range map[string][]byte{"key.pem": keyPEM, "cert.pem": certPEM} {
		p := filepath.Join(ca.dir, name)
		if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Fatal(err)
		}
	}
}

func (ca *testCA) flags() []string {
	return []string{"--tls-cert", filepath.Join(ca.dir, "cert.pem"), "--tls-key", filepath.Join(ca.dir, "key.pem")}
}

// startEdge runs `toolgate serve` with TLS on tlsAddr and waits for its
// /healthz over HTTPS; client trusts pool.
func startEdge(t *testing.T, dir, tlsAddr string, pool *x509.CertPool, extra ...string) (*proc, *http.Client) {
	t.Helper()
	addr := freePort(t)
	p := spawn(t, dir, nil, append(serveArgs(dir, addr), append([]string{"--admin-token", testAdmin}, extra...)...))
	if tlsAddr == "" {
		tlsAddr = addr
	}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	p.waitHealthy(cl.Get, "https://"+tlsAddr+"/healthz")
	return p, cl
}

// servedSerial is the serial of the certificate a new TLS connection to
// addr sees.
func servedSerial(t *testing.T, addr string, pool *x509.CertPool) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestServe_TLS: HTTPS on --tls-listen beside plain HTTP on --listen; the
// pair is re-read when its files change and on SIGHUP; an invalid pair
// is refused with a log line and the previous one keeps serving; a
// connection opened before a rotation keeps working after it.
func TestServe_TLS(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	ca := newTestCA(t, dir)
	c1, k1, s1 := ca.pair(t, 90)
	ca.write(t, c1, k1)
	tlsAddr := freePort(t)
	p, cl := startEdge(t, dir, tlsAddr, ca.pool, append(ca.flags(), "--tls-listen", tlsAddr)...)
	base := "https://" + tlsAddr

	if got := servedSerial(t, tlsAddr, ca.pool); got != s1 {
		t.Fatalf("serving serial %d, want %d", got, s1)
	}
	if code, _ := p.req("GET", "/healthz", ""); code != 200 {
		t.Fatalf("plain HTTP beside TLS: got %d, want 200", code)
	}
	resp, err := cl.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"tls":"ok: expires at`) {
		t.Fatalf("/readyz: got %d %s, want 200 with the certificate's expiry", resp.StatusCode, b)
	}
	// A kept-alive connection from before the rotations.
	kept, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: ca.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	keptGet := func() {
		t.Helper()
		kept.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(kept, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
		buf := make([]byte, 4096)
		n, err := kept.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("kept-alive connection: %q %v, want 200", buf[:n], err)
		}
	}
	keptGet()

	// Bounded load across the rotations: 4 clients, half of them on a new
	// connection per call; not one call may fail.
	secret, _ := p.createKey(`{"policy":{"rate_class_quota":{"light":1000000}}}`)
	stopLoad := make(chan struct{})
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "localhost"}, DisableKeepAlives: i%2 == 0}
			defer tr.CloseIdleConnections()
			lc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				req, _ := http.NewRequest("POST", base+"/tools/extract/structured", strings.NewReader(`{}`))
				req.Header.Set("X-API-Key", secret)
				resp, err := lc.Do(req)
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					t.Errorf("call during rotation: %v", err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("call during rotation: got %d, want 200", resp.StatusCode)
				}
			}
		}()
	}
	loadStart := time.Now()

	t.Run("FileChange", func(t *testing.T) {
		c2, k2, s2 := ca.pair(t, 90)
		ca.write(t, c2, k2)
		p.waitLog("TLS certificate reloaded", 1)
		if got := servedSerial(t, tlsAddr, ca.pool); got != s2 {
			t.Fatalf("serving serial %d, want %d", got, s2)
		}
		keptGet()
		s1 = s2
	})
	t.Run("SIGHUPRefusesInvalid", func(t *testing.T) {
		c3, _, _ := ca.pair(t, 90)
		_, k4, _ := ca.pair(t, 90)
		const refused = "TLS certificate reload refused; the previous certificate keeps serving"
		before := p.logCount(refused)
		ca.write(t, c3, k4) // a key that is not the certificate's
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLog(refused, before+1)
		if got := servedSerial(t, tlsAddr, ca.pool); got != s1 {
			t.Fatalf("serving serial %d, want the previous %d", got, s1)
		}
		if n := p.logCount("private key does not match public key"); n == 0 {
			t.Fatal("the refusal does not say why")
		}
		keptGet()
	})
	t.Run("SIGHUP", func(t *testing.T) {
		c5, k5, s5 := ca.pair(t, 90)
		before := p.logCount("TLS certificate reloaded")
		ca.write(t, c5, k5)
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLog("TLS certificate reloaded", before+1)
		if got := servedSerial(t, tlsAddr, ca.pool); got != s5 {
			t.Fatalf("serving serial %d, want %d", got, s5)
		}
	})
	if d := time.Since(loadStart); d < 2*time.Second {
		time.Sleep(2*time.Second - d) // at least 2 s of load
	}
	close(stopLoad)
	wg.Wait()
	if failed.Load() != 0 || calls.Load() == 0 {
		t.Fatalf("%d of %d calls failed across the rotations, want none", failed.Load(), calls.Load())
	}
	t.Logf("%d calls across the rotations, none failed", calls.Load())
	p.stop(syscall.SIGTERM)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// TestServe_TLSRedirect: with --redirect-http, plain HTTP on --listen
// answers 308 to the same path over HTTPS at the public URL (by default
// the certificate's name and --tls-listen's port).
func TestServe_TLSRedirect(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	ca := newTestCA(t, dir)
	c, k, _ := ca.pair(t, 90)
	ca.write(t, c, k)
	tlsAddr := freePort(t)
	p, cl := startEdge(t, dir, tlsAddr, ca.pool, append(ca.flags(), "--tls-listen", tlsAddr, "--redirect-http")...)
	_, port, _ := net.SplitHostPort(tlsAddr)
	resp, err := cl.Post(p.url+"/tools/extract/structured?x=1", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The public URL defaults to the certificate's name over HTTPS.
	if want := "https://localhost:" + port + "/tools/extract/structured?x=1"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

// TestServe_TLSFlags: TLS flags that do not go together stop the start
// with exit code 2 and say why.
func TestServe_TLSFlags(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"CertWithoutKey", []string{"--tls-cert", "x.pem"}, "--tls-cert and --tls-key go together"},
		{"TLSListenWithoutCert", []string{"--tls-listen", "127.0.0.1:0"}, "--tls-listen needs"},
		{"RedirectWithoutTLSListen", []string{"--redirect-http"}, "--redirect-http needs --tls-listen"},
		{"CertAndACME", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--acme-domain", "api.example.com"}, "choose one source of certificates"},
		{"MissingFiles", []string{"--tls-cert", filepath.Join(dir, "no.pem"), "--tls-key", filepath.Join(dir, "no.key")}, "read certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--listen", freePort(t), "--data", filepath.Join(dir, "data"),
				"--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json"),
				"--admin-token", testAdmin}, tc.args...)
			out, err := exec.Command(binPath, args...).CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
				t.Fatalf("got %v %s, want exit 2 saying %q", err, out, tc.want)
			}
		})
	}
}

// TestServe_TrustedProxies: with the loopback proxy trusted, the client
// X-Forwarded-For names (right to left, past a spoofed left part) is the
// call's source in the access log; without --trusted-proxies the same
// header changes nothing.
func TestServe_TrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"Trusted", `"source":"198.51.100.7"`, []string{"--trusted-proxies", "10.0.0.0/8, 127.0.0.1"}},
		{"NotTrusted", `"source":"127.0.0.1"`, []string{"--trusted-proxies", "10.0.0.0/8"}},
		{"NoneConfigured", `"source":"127.0.0.1"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeConfig(t, dir)
			p := startGateway(t, dir, append([]string{"--log-format", "json"}, tc.args...)...)
			secret, _ := p.createKey(`{}`)
			p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret, "X-Forwarded-For", "6.6.6.6, 198.51.100.7")
			p.stop(syscall.SIGTERM)
			log, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
			if !strings.Contains(string(log), tc.want) {
				t.Fatalf("log lacks %s:\n%s", tc.want, log)
			}
		})
	}
}

func TestTrustedProxiesFlag(t *testing.T) {
	got, _, err := trustedProxies("10.0.0.0/8, 192.168.1.5,fd00::/8", "forwarded")
	if err != nil || len(got) != 3 || got[1].String() != "192.168.1.5/32" {
		t.Fatalf("got %v %v, want three prefixes", got, err)
	}
	_, _, err = trustedProxies("10.0.0.1/8,nope", "X-Real-IP")
	for _, want := range []string{`"10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`, `"nope" is not a CIDR`, `--trusted-proxy-header "X-Real-IP"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want it to say %s", err, want)
		}
	}
}

// TestServe_PublicURL: the payment requirements name --public-url; with
// TLS on and none given, https:// and the certificate's name; and a start
// with x402 on warns when that URL is plain HTTP or loopback.
func TestServe_PublicURL(t *testing.T) {
	const warn = "payment requirements name a URL payers may not reach"
	x402 := []string{"--x402-pay-to", "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "--x402-facilitator", "http://127.0.0.1:1"}
	resource := func(t *testing.T, get func(string) (int, []byte), base string) string {
		t.Helper()
		code, b := get(base + "/tools/extract/structured")
		if code != 402 {
			t.Fatalf("got %d %s, want 402", code, b)
		}
		var body struct {
			Accepts []struct {
				Resource string `json:"resource"`
			} `json:"accepts"`
		}
		if err := json.Unmarshal(b, &body); err != nil || len(body.Accepts) == 0 {
			t.Fatalf("402 body %s: %v", b, err)
		}
		return body.Accepts[0].Resource
	}
	t.Run("TLSDefault", func(t *testing.T) {
		dir := t.TempDir()
		writeConfig(t, dir)
		ca := newTestCA(t, dir)
		c, k, _ := ca.pair(t, 90)
		ca.write(t, c, k)
		tlsAddr := freePort(t)
		p, cl := startEdge(t, dir, tlsAddr, ca.pool, append(append(ca.flags(), "--tls-listen", tlsAddr), x402...)...)
		_, port, _ := net.SplitHostPort(tlsAddr)
		get := func(u string) (int, []byte) {
			resp, err := cl.Post(u, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, b
		}
		if got, want := resource(t, get, "https://"+tlsAddr), "https://localhost:"+port+"/tools/extract/structured"; got != want {
			t.Fatalf("resource %q, want %q", got, want)
		}
		resp, err := cl.Get("https://" + tlsAddr + "/discovery/resources")
		if err != nil {
			t.Fatal(err)
		}
		disc, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(disc), `"resource":"https://localhost:`+port+`/tools/extract/structured"`) {
			t.Fatalf("discovery does not name the https URL: %s", disc)
		}
		if p.logCount(warn) != 1 || p.logCount("its host is loopback") != 1 || p.logCount("plain HTTP") != 0 {
			t.Fatal("no loopback warning (or a plain-HTTP one) at start")
		}
	})
	t.Run("Given", func(t *testing.T) {
		dir := t.TempDir()
		writeConfig(t, dir)
		p := startGateway(t, dir, append(x402, "--public-url", "https://api.example.com")...)
		get := func(u string) (int, []byte) { return p.req("POST", strings.TrimPrefix(u, p.url), `{}`) }
		if got := resource(t, get, p.url); got != "https://api.example.com/tools/extract/structured" {
			t.Fatalf("resource %q, want https://api.example.com/tools/extract/structured", got)
		}
		if p.logCount(warn) != 0 {
			t.Fatal("warned about a public https URL")
		}
	})
	t.Run("PlainHTTPWarns", func(t *testing.T) {
		dir := t.TempDir()
		writeConfig(t, dir)
		p := startGateway(t, dir, x402...)
		if p.logCount(warn) != 1 || p.logCount("it is plain HTTP and its host is loopback") != 1 {
			b, _ := os.ReadFile(p.log.Name())
			t.Fatalf("no plain-HTTP warning at start:\n%s", b)
		}
	})
}
