package gateway_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	dir  string
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "toolgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, dir: t.TempDir()}
}

var serials atomic.Int64

// issue writes a leaf for localhost valid from notBefore to notAfter and
// returns its cert and key PEM and serial.
func (ca *testCA) issue(t testing.TB, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial = serials.Add(1) + 100
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), serial
}

// writePair issues a day-long leaf into the CA's cert.pem and key.pem
// (atomically, as a certificate manager does) and returns its serial.
func (ca *testCA) writePair(t testing.TB) (certPath, keyPath string, serial int64) {
	t.Helper()
	c, k, serial := ca.issue(t, time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour))
	certPath, keyPath = ca.write(t, c, k)
	return certPath, keyPath, serial
}

func (ca *testCA) write(t testing.TB, certPEM, keyPEM []byte) (certPath, keyPath string) {
	t.Helper()
	certPath, keyPath = filepath.Join(ca.dir, "cert.pem"), filepath.Join(ca.dir, "key.pem")
	for _, f := range []struct {
		path string
		b    []byte
	}{{keyPath, keyPEM}, {certPath, certPEM}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, f.b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}

// newTLSHarness serves the gateway over TLS with a fresh CA's pair.
func newTLSHarness(t testing.TB, opts func(*gateway.Options)) (*harness, *testCA, *gateway.CertFile) {
	t.Helper()
	ca := newTestCA(t)
	cp, kp, _ := ca.writePair(t)
	certs, err := gateway.LoadCertFile(cp, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t)
	h := newHarnessOn(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.TLS = certs
		if opts != nil {
			opts(o)
		}
	}, gateway.TLSConfig(certs.GetCertificate), ca.pool)
	return h, ca, certs
}

func TestTLS_Serve(t *testing.T) {
	h, ca, _ := newTLSHarness(t, nil)
	k := h.createKey(`{}`)

	t.Run("OK", func(t *testing.T) {
		resp, body := h.call(k.Secret, "search/web", `{"q":"x"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s, want 200", resp.StatusCode, body)
		}
		if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
			t.Fatalf("got TLS state %+v, want TLS 1.3", resp.TLS)
		}
		last, _ := h.up.lastRequest()
		if got := last.Header.Get("X-Forwarded-Proto"); got != "https" {
			t.Fatalf("upstream X-Forwarded-Proto: got %q, want https", got)
		}
	})
	addr := strings.TrimPrefix(h.url, "https://")
	t.Run("TLS12", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("TLS 1.2 client: %v", err)
		}
		defer c.Close()
		st := c.ConnectionState()
		if st.Version != tls.VersionTLS12 || !strings.Contains(tls.CipherSuiteName(st.CipherSuite), "ECDHE") {
			t.Fatalf("got %x %s, want TLS 1.2 with ECDHE", st.Version, tls.CipherSuiteName(st.CipherSuite))
		}
	})
	t.Run("TLS11Refused", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11})
		if err == nil {
			c.Close()
			t.Fatal("TLS 1.1 handshake succeeded, want refused")
		}
	})
	t.Run("BareLF", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /healthz HTTP/1.1\nHost: x\n\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 400 {
			t.Fatalf("got %d, want 400", resp.StatusCode)
		}
	})
	t.Run("Resumption", func(t *testing.T) {
		cfg := &tls.Config{RootCAs: ca.pool, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		for i := range 2 {
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			// TLS 1.3 tickets arrive after the handshake: a round trip reads them.
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := c.ConnectionState().DidResume; got != (i == 1) {
				t.Fatalf("connection %d: DidResume %v, want %v", i, got, i == 1)
			}
			c.Close()
		}
	})
}

func TestCertFile_Reload(t *testing.T) {
	ca := newTestCA(t)
	cp, kp, serial := ca.writePair(t)
	certs, err := gateway.LoadCertFile(cp, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	serving := func() int64 { return certs.Leaf().SerialNumber.Int64() }

	t.Run("OK", func(t *testing.T) {
		_, _, next := ca.writePair(t)
		if err := certs.Reload(); err != nil {
			t.Fatal(err)
		}
		if serving() != next {
			t.Fatalf("serving serial %d, want %d", serving(), next)
		}
		serial = next
	})
	t.Run("KeyMismatch", func(t *testing.T) {
		c1, _, _ := ca.issue(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		_, k2, _ := ca.issue(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		ca.write(t, c1, k2)
		err := certs.Reload()
		if err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
			t.Fatalf("got %v, want a key mismatch", err)
		}
		if serving() != serial {
			t.Fatalf("serving serial %d, want the previous %d", serving(), serial)
		}
	})
	t.Run("ErrCertExpired", func(t *testing.T) {
		c, k, _ := ca.issue(t, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		ca.write(t, c, k)
		if err := certs.Reload(); !errors.Is(err, gateway.ErrCertExpired) {
			t.Fatalf("got %v, want ErrCertExpired", err)
		}
		if serving() != serial {
			t.Fatalf("serving serial %d, want the previous %d", serving(), serial)
		}
	})
	t.Run("Garbage", func(t *testing.T) {
		ca.write(t, []byte("not pem"), []byte("not pem"))
		if err := certs.Reload(); err == nil {
			t.Fatal("reload of garbage succeeded")
		}
		if serving() != serial {
			t.Fatalf("serving serial %d, want the previous %d", serving(), serial)
		}
	})
}

// TestTLS_RotationUnderLoad: 4 clients call for 2 s, half of them on a
// new connection each time, while the pair is replaced every 50 ms. No
// call fails, and new handshakes see the new certificates.
func TestTLS_RotationUnderLoad(t *testing.T) {
	h, ca, certs := newTLSHarness(t, nil)
	k := h.createKey(`{"policy":{"rate_class_quota":{"light":1000000}}}`)
	var calls, failed atomic.Int64
	seen := sync.Map{} // serials seen by clients
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "localhost"}, DisableKeepAlives: i%2 == 0}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", h.url+"/tools/search/web", strings.NewReader(`{"q":"x"}`))
				req.Header.Set("X-API-Key", k.Secret)
				resp, err := cl.Do(req)
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					t.Errorf("call: %v", err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("call: got %d, want 200", resp.StatusCode)
				}
				seen.Store(resp.TLS.PeerCertificates[0].SerialNumber.Int64(), true)
			}
		}()
	}
	var last int64
	deadline := time.After(2 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
rotate:
	for rotations := 0; ; rotations++ {
		select {
		case <-deadline:
			break rotate
		case <-tick.C:
			_, _, last = ca.writePair(t)
			if err := certs.Reload(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	n := 0
	seen.Range(func(any, any) bool { n++; return true })
	if _, ok := seen.Load(last); !ok && n < 2 {
		t.Fatalf("clients saw %d certificates, want several (rotations not picked up)", n)
	}
	if failed.Load() != 0 || calls.Load() == 0 {
		t.Fatalf("got %d failed of %d calls, want 0 failed", failed.Load(), calls.Load())
	}
	t.Logf("%d calls, %d certificates seen", calls.Load(), n)
}

func TestReadyz_TLSExpiry(t *testing.T) {
	clock := newTestClock()
	h, _, certs := newTLSHarness(t, func(o *gateway.Options) { o.Now = clock.now })
	na, _ := certs.NotAfter() // a day from now
	check := func(t *testing.T, wantStatus int, want string) {
		t.Helper()
		resp, body := h.do("GET", "/readyz", "")
		m := decode(t, body)
		got, _ := m["checks"].(map[string]any)["tls"].(string)
		if resp.StatusCode != wantStatus || !strings.Contains(got, want) {
			t.Fatalf("got %d tls=%q, want %d containing %q", resp.StatusCode, got, wantStatus, want)
		}
	}
	t.Run("Expiring", func(t *testing.T) {
		// A day left and nothing renews it: under 7 days, not ready.
		check(t, 503, "not renewed automatically")
	})
	t.Run("Expired", func(t *testing.T) {
		clock.advance(time.Until(na) + time.Minute)
		check(t, 503, "expired at")
	})
	t.Run("Metric", func(t *testing.T) {
		_, body := h.admin("GET", "/metrics", "")
		if !strings.Contains(string(body), "toolgate_tls_cert_expiry_days -") {
			t.Fatalf("metrics lack a negative toolgate_tls_cert_expiry_days:\n%s", grepLines(string(body), "tls"))
		}
	})
}

func TestReadyz_TLSRenewed(t *testing.T) {
	h, _, _ := newTLSHarness(t, func(o *gateway.Options) {
		o.TLS = renewingCert{time.Now().Add(3 * 24 * time.Hour)}
	})
	resp, body := h.do("GET", "/readyz", "")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"tls":"ok: expires at`) {
		t.Fatalf("got %d %s, want 200 with tls ok (3 days left, renewal configured)", resp.StatusCode, body)
	}
}

type renewingCert struct{ na time.Time }

func (r renewingCert) NotAfter() (time.Time, bool) { return r.na, true }
func (r renewingCert) Renews() bool                { return true }

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestRedirectServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gateway.RedirectServer(gateway.Redirect{Port: "8443"})
	go srv.Serve(gateway.Listener(ln))
	t.Cleanup(func() { srv.Shutdown() })
	for _, tc := range []struct {
		name, host   string
		status       int
		wantLocation string
	}{
		{"Name", "api.example.com:80", 308, "https://api.example.com:8443/tools/x?a=1"},
		{"IPv6", "[::1]:80", 308, "https://[::1]:8443/tools/x?a=1"},
		{"NoPort", "api.example.com", 308, "https://api.example.com:8443/tools/x?a=1"},
		{"Injected", "evil.com/x?", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "POST /tools/x?a=1 HTTP/1.1\r\nHost: "+tc.host+"\r\nContent-Length: 0\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.wantLocation {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), tc.status, tc.wantLocation)
			}
		})
	}
}
