package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/toolgate/toolgate/ledger"
)

// benchCert is a self-signed ECDSA P-256 certificate for "gw".
func benchCert(b testing.TB) (tls.Certificate, *x509.CertPool) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw"}, DNSNames: []string{"gw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// runEdge serves the gateway on an in-memory listener, over TLS when
// withTLS (the gateway's TLSConfig and TLSListener), and drives the
// API-key path with b.RunParallel clients; newConn sends each call on a
// fresh connection (TLS: a resumed handshake, the client keeping session
// tickets). It reports the share of handshakes resumed.
func runEdge(b *testing.B, env *benchEnv, withTLS, newConn bool, curves []tls.CurveID) {
	ln := fasthttputil.NewInmemoryListener()
	srv := env.g.Server()
	client := &fasthttp.HostClient{Addr: "gw", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: 4096}
	var handshakes, resumed atomic.Int64
	if withTLS {
		cert, pool := benchCert(b)
		go srv.Serve(TLSListener(ln, TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })))
		client.IsTLS = true
		client.TLSConfig = &tls.Config{RootCAs: pool, ServerName: "gw", ClientSessionCache: tls.NewLRUClientSessionCache(64),
			VerifyConnection: func(cs tls.ConnectionState) error {
				handshakes.Add(1)
				if cs.DidResume {
					resumed.Add(1)
				}
				return nil
			}, CurvePreferences: curves}
	} else {
		go srv.Serve(Listener(ln))
	}
	defer srv.Shutdown()
	uri := "http://gw/tools/extract/structured"
	if withTLS {
		uri = "https://gw/tools/extract/structured"
	}
	b.ReportAllocs()
	b.SetParallelism(4) // 8 concurrent clients on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		for pb.Next() {
			req.SetRequestURI(uri)
			req.Header.SetMethod("POST")
			req.Header.Set("X-Api-Key", env.secret)
			req.SetBodyString(`{"text":"Invoice 42 from ACME, total $120"}`)
			if newConn {
				req.SetConnectionClose()
			}
			if err := client.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
			}
		}
	})
	b.StopTimer()
	if n := handshakes.Load(); n > 0 {
		b.ReportMetric(float64(resumed.Load())/float64(n), "resumed/handshake")
	}
}

// BenchmarkEdge pairs, in the same run, the API-key path over plain HTTP
// and over TLS (1.3, ECDSA P-256): on kept-alive connections (the
// steady-state cost of encryption) and with a new connection per call
// (TLS: session resumption on, so a resumed handshake per call; TLS 1.3
// resumption still exchanges a key share, post-quantum hybrid by default,
// so the X25519-only client shows what that costs).
func BenchmarkEdge(b *testing.B) {
	for _, tc := range []struct {
		name             string
		withTLS, newConn bool
		curves           []tls.CurveID
	}{
		{"HTTP", false, false, nil},
		{"TLS", true, false, nil},
		{"HTTPNewConn", false, true, nil},
		{"TLSResumedNewConn", true, true, nil},                             // Go's default key share: X25519MLKEM768
		{"TLSResumedNewConnX25519", true, true, []tls.CurveID{tls.X25519}}, // a client offering X25519 only
	} {
		b.Run(tc.name, func(b *testing.B) {
			env := newBenchEnv(b, ledger.SyncInterval)
			defer env.close()
			runEdge(b, env, tc.withTLS, tc.newConn, tc.curves)
		})
	}
}
