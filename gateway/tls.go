package gateway

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// CertSource is the certificate the gateway serves over TLS, as /readyz
// and the metrics see it. Implementations are safe for concurrent use.
type CertSource interface {
	// NotAfter is the expiry of the certificate served (the earliest, when
	// there are several); false before there is one.
	NotAfter() (time.Time, bool)
	// Renews reports whether the certificate is renewed automatically
	// (ACME): without renewal, /readyz fails in the last week.
	Renews() bool
}

// CertFile is a certificate and key pair read from two PEM files and
// served through GetCertificate. Reload re-reads both and swaps the pair
// in only when it is valid (the key matches the leaf, the leaf is in
// date); otherwise the pair serving keeps serving. Connections already
// open are not touched: a new pair is used from the next handshake on.
// A CertFile is safe for concurrent use.
type CertFile struct {
	certPath, keyPath string
	now               func() time.Time

	cur atomic.Pointer[tls.Certificate]
	mu  sync.Mutex // serializes Reload
}

var (
	_ CertSource = (*CertFile)(nil)

	// ErrCertExpired: a pair whose leaf is out of date is not served.
	ErrCertExpired = errors.New("gateway: certificate is not valid now")
)

// LoadCertFile reads the pair once; it fails when the pair is not valid.
// now is the clock checked against the leaf's validity (nil: time.Now).
func LoadCertFile(certPath, keyPath string, now func() time.Time) (*CertFile, error) {
	if now == nil {
		now = time.Now
	}
	c := &CertFile{certPath: certPath, keyPath: keyPath, now: now}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the files. On error the previous pair keeps serving.
func (c *CertFile) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	certPEM, err := os.ReadFile(c.certPath)
	if err != nil {
		return fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyPath)
	if err != nil {
		return fmt.Errorf("read key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM) // checks that the key matches the leaf
	if err != nil {
		return fmt.Errorf("%s, %s: %w", c.certPath, c.keyPath, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("%s: %w", c.certPath, err)
		}
		pair.Leaf = leaf
	}
	if now := c.now(); now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter) {
		return fmt.Errorf("%s: valid %s to %s: %w", c.certPath,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), ErrCertExpired)
	}
	c.cur.Store(&pair)
	return nil
}

// Leaf returns the certificate serving now.
func (c *CertFile) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// GetCertificate is the tls.Config hook: the pair serving now.
func (c *CertFile) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// NotAfter implements CertSource.
func (c *CertFile) NotAfter() (time.Time, bool) { return c.Leaf().NotAfter, true }

// Renews implements CertSource: a certificate file is renewed by whoever
// writes it, which the gateway cannot know.
func (c *CertFile) Renews() bool { return false }

// Paths returns the certificate and key file names, for watching.
func (c *CertFile) Paths() (cert, key string) { return c.certPath, c.keyPath }

// TLSConfig returns the gateway's server TLS settings around a
// certificate hook: TLS 1.2 and 1.3 (Go negotiates 1.3 whenever the client
// offers it), for 1.2 only forward-secret AEAD suites, Go's default
// curves (X25519 and the post-quantum hybrid first), session tickets on
// (resumption), and ALPN http/1.1 (the server speaks HTTP/1.1 only).
func TLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
		CipherSuites: []uint16{ // TLS 1.2 only; 1.3's are not configurable
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"http/1.1"},
	}
}

// TLSListener is Listener over TLS: connections are decrypted first, so
// the bare-LF check reads the request head, and fasthttp still sees a TLS
// connection (RequestCtx.IsTLS, TLSConnectionState).
func TLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	return lfListener{tls.NewListener(ln, cfg)}
}

// lfTLSConn is an lfConn over a *tls.Conn, exposing the methods fasthttp
// looks for to tell a TLS connection.
type lfTLSConn struct {
	lfConn
	tc *tls.Conn
}

func (c *lfTLSConn) Handshake() error                     { return c.tc.Handshake() }
func (c *lfTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// Redirect says where RedirectServer sends plain-HTTP requests.
type Redirect struct {
	// Host is the HTTPS host[:port] to send to (the --public-url's); ""
	// means the request's own Host with its port replaced by Port.
	Host string
	// Port is the HTTPS port; "443" (or "") is left out of the URL.
	Port string
	// Challenge, if set, answers /.well-known/acme-challenge/ (ACME
	// HTTP-01) instead of redirecting.
	Challenge http.Handler
}

// RedirectServer returns a server answering every request with 308 to
// the same path and query over HTTPS (308 keeps the method and body of a
// POST). A request without a usable Host is answered 400.
func RedirectServer(r Redirect) *fasthttp.Server {
	var challenge fasthttp.RequestHandler
	if r.Challenge != nil {
		challenge = fasthttpadaptor.NewFastHTTPHandler(r.Challenge)
	}
	port := r.Port
	if port == "443" {
		port = ""
	}
	return &fasthttp.Server{
		Name: "toolgate", NoDefaultDate: true,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second,
		MaxRequestBodySize: 1 << 10, // the body is not read; the client resends it
		Handler: func(ctx *fasthttp.RequestCtx) {
			if challenge != nil && bytes.HasPrefix(ctx.Path(), []byte("/.well-known/acme-challenge/")) {
				challenge(ctx)
				return
			}
			host := r.Host
			if host == "" {
				h := string(ctx.Host())
				if hh, _, err := net.SplitHostPort(h); err == nil {
					h = hh
				}
				h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
				if !validHost(h) {
					writeJSON(ctx, fasthttp.StatusBadRequest, errorBody("Missing or invalid Host header"))
					return
				}
				if port != "" {
					host = net.JoinHostPort(h, port)
				} else if strings.Contains(h, ":") {
					host = "[" + h + "]"
				} else {
					host = h
				}
			}
			ctx.Response.Header.Set("Location", "https://"+host+string(ctx.RequestURI()))
			ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
			ctx.SetConnectionClose()
			ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
		},
	}
}

// validHost reports whether h is a DNS name or an IP literal (without
// zone): nothing else goes into a Location header.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
