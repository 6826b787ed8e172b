package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEOptions configures ACME. Domains and CacheDir are required.
type ACMEOptions struct {
	// Domains are the names certificates are obtained for; a TLS
	// handshake for any other name is refused.
	Domains []string
	// CacheDir holds the account key and the certificates (directory
	// 0700, files 0600); certificates survive restarts there.
	CacheDir string
	// DirectoryURL is the CA's ACME directory (default Let's Encrypt).
	DirectoryURL string
	// Email is the contact address given to the CA ("" : none).
	Email string
	// HTTPClient talks to the CA (nil: http.DefaultClient); tests pass
	// one trusting a local CA's root.
	HTTPClient *http.Client
	// RenewBefore is how long before expiry a certificate is renewed; 0
	// is a third of its lifetime, at most 30 days.
	RenewBefore time.Duration
	// Logger receives one line per certificate obtained or failure.
	Logger *slog.Logger
}

// ACME obtains and renews certificates for a fixed set of names over
// ACME (golang.org/x/crypto/acme/autocert). Challenges are answered over
// TLS-ALPN-01 by the TLS listener itself (TLSConfig), and over HTTP-01 by
// HTTPHandler on a plain-HTTP listener on port 80 when there is one.
// Renewal runs in the background, ahead of expiry; the new certificate
// is used from the next handshake on. An ACME is safe for concurrent use.
type ACME struct {
	m       *autocert.Manager
	domains []string
	log     *slog.Logger

	mu     sync.Mutex
	issued map[string]bool // names with a certificate in the manager
}

var _ CertSource = (*ACME)(nil)

// NewACME checks the options and makes the cache directory.
func NewACME(o ACMEOptions) (*ACME, error) {
	if len(o.Domains) == 0 || o.CacheDir == "" {
		return nil, errors.New("gateway: ACME needs domains and a cache directory")
	}
	if err := os.MkdirAll(o.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("acme cache: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	client := &acme.Client{DirectoryURL: o.DirectoryURL, HTTPClient: o.HTTPClient, UserAgent: "toolgate"}
	if client.DirectoryURL == "" {
		client.DirectoryURL = autocert.DefaultACMEDirectory
	}
	a := &ACME{domains: slices.Clone(o.Domains), log: o.Logger, issued: map[string]bool{}}
	a.m = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       autocert.DirCache(o.CacheDir),
		HostPolicy:  autocert.HostWhitelist(o.Domains...),
		RenewBefore: o.RenewBefore,
		Client:      client,
		Email:       o.Email,
	}
	return a, nil
}

// GetCertificate is the tls.Config hook: the name's certificate,
// obtained on first use (or from the cache), or the TLS-ALPN-01 challenge
// certificate when the CA asks.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := a.m.GetCertificate(hello)
	if err == nil && hello.ServerName != "" && !slices.Contains(hello.SupportedProtos, acme.ALPNProto) {
		a.mu.Lock()
		a.issued[hello.ServerName] = true
		a.mu.Unlock()
	}
	return c, err
}

// TLSConfig is the gateway's TLSConfig around GetCertificate, also
// offering the TLS-ALPN-01 protocol.
func (a *ACME) TLSConfig() *tls.Config {
	cfg := TLSConfig(a.GetCertificate)
	cfg.NextProtos = append(cfg.NextProtos, acme.ALPNProto)
	return cfg
}

// HTTPHandler answers HTTP-01 challenges (/.well-known/acme-challenge/);
// give it to RedirectServer as its Challenge.
func (a *ACME) HTTPHandler() http.Handler { return a.m.HTTPHandler(http.NotFoundHandler()) }

// Obtain gets a certificate for every name now (from the cache when it
// holds a valid one), so that the first caller does not wait and /readyz
// knows the expiry. It returns the first error and tries every name.
func (a *ACME) Obtain() error {
	var first error
	for _, d := range a.domains {
		c, err := a.cert(d)
		if err != nil {
			a.log.Error("ACME certificate not obtained", "domain", d, "err", err)
			first = cmpErr(first, fmt.Errorf("acme %s: %w", d, err))
			continue
		}
		a.log.Info("ACME certificate ready", "domain", d, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// cert asks the manager for d's ECDSA certificate (autocert bounds the
// issuance with its own timeout).
func (a *ACME) cert(d string) (*tls.Certificate, error) {
	hello := &tls.ClientHelloInfo{
		ServerName:        d,
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
	c, err := a.GetCertificate(hello)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		return nil, errors.New("certificate without a parsed leaf")
	}
	return c, nil
}

// NotAfter implements CertSource: the earliest expiry among the names'
// certificates, false until every name has one.
func (a *ACME) NotAfter() (time.Time, bool) {
	a.mu.Lock()
	n := len(a.issued)
	a.mu.Unlock()
	if n < len(a.domains) {
		return time.Time{}, false
	}
	var earliest time.Time
	for _, d := range a.domains {
		c, err := a.cert(d) // in memory once obtained
		if err != nil {
			return time.Time{}, false
		}
		if earliest.IsZero() || c.Leaf.NotAfter.Before(earliest) {
			earliest = c.Leaf.NotAfter
		}
	}
	return earliest, true
}

// Renews implements CertSource: ACME certificates renew themselves.
func (a *ACME) Renews() bool { return true }
