package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

// edge is the TLS side of serve: where the certificate comes from, the
// TLS settings, and the name served. The zero value is plain HTTP.
type edge struct {
	certs  *gateway.CertFile // --tls-cert/--tls-key
	acme   *gateway.ACME     // --acme-domain
	source gateway.CertSource
	cfg    *tls.Config // nil: no TLS
	name   string      // the name the certificate is for (default public URL)
}

// newEdge checks the TLS flags together and loads the certificate (or
// sets up ACME, which obtains its certificates once serving: see obtain).
func newEdge(f serveFlags, log *slog.Logger) (*edge, error) {
	var problems []string
	if (f.tlsCert == "") != (f.tlsKey == "") {
		problems = append(problems, "--tls-cert and --tls-key go together")
	}
	if f.tlsCert != "" && len(f.acmeDomains) > 0 {
		problems = append(problems, "--tls-cert and --acme-domain: choose one source of certificates")
	}
	tlsOn := f.tlsCert != "" || len(f.acmeDomains) > 0
	if f.tlsListen != "" && !tlsOn {
		problems = append(problems, "--tls-listen needs --tls-cert/--tls-key or --acme-domain")
	}
	if f.redirectHTTP && f.tlsListen == "" {
		problems = append(problems, "--redirect-http needs --tls-listen (--listen is then the plain-HTTP address that redirects)")
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	e := &edge{}
	if f.tlsCert != "" {
		certs, err := gateway.LoadCertFile(f.tlsCert, f.tlsKey, nil)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		e.certs, e.source = certs, certs
		e.cfg = gateway.TLSConfig(certs.GetCertificate)
		leaf := certs.Leaf()
		if len(leaf.DNSNames) > 0 {
			e.name = leaf.DNSNames[0]
		} else if len(leaf.IPAddresses) > 0 {
			e.name = leaf.IPAddresses[0].String()
		} else {
			e.name = leaf.Subject.CommonName
		}
	}
	if len(f.acmeDomains) > 0 {
		a, err := gateway.NewACME(gateway.ACMEOptions{Domains: f.acmeDomains, CacheDir: filepath.Join(f.data, "acme"),
			DirectoryURL: f.acmeDirectory, Email: f.acmeEmail, RenewBefore: f.acmeRenewBefore, Logger: log})
		if err != nil {
			return nil, err
		}
		e.acme, e.source, e.cfg, e.name = a, a, a.TLSConfig(), f.acmeDomains[0]
	}
	return e, nil
}

// obtain gets the ACME certificates in the background once the TLS
// listener serves (TLS-ALPN-01 is answered there), trying again after a
// failure (30 s, doubling up to 30 min) until every name has one or stop
// closes; a no-op without ACME.
func (e *edge) obtain(stop <-chan struct{}) {
	if e.acme == nil {
		return
	}
	go func() {
		for wait := 30 * time.Second; e.acme.Obtain() != nil; wait = min(2*wait, 30*time.Minute) {
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
		}
	}()
}

// tlsAddr is the address TLS is served on: --tls-listen, or --listen
// when TLS is on without it.
func (e *edge) tlsAddr(f serveFlags) string {
	if e.cfg == nil {
		return ""
	}
	if f.tlsListen != "" {
		return f.tlsListen
	}
	return f.listen
}

// reloadCert re-reads the certificate files (a no-op without them),
// logging the outcome.
func (e *edge) reloadCert(why string, log *slog.Logger) {
	if e.certs == nil {
		return
	}
	if err := e.certs.Reload(); err != nil {
		log.Error("TLS certificate reload refused; the previous certificate keeps serving", "trigger", why, "err", err)
		return
	}
	leaf := e.certs.Leaf()
	log.Info("TLS certificate reloaded", "trigger", why, "subject", leaf.Subject.CommonName,
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
}

// publicURL is --public-url, or with TLS on https:// and the served name
// (with the TLS port unless 443), or http:// and --listen.
func (e *edge) publicURL(f serveFlags) string {
	if f.publicURL != "" {
		return f.publicURL
	}
	if e.cfg == nil || e.name == "" {
		return "http://" + f.listen
	}
	host := e.name
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if _, port, err := net.SplitHostPort(e.tlsAddr(f)); err == nil && port != "443" {
		host = net.JoinHostPort(e.name, port)
	}
	return "https://" + host
}

// publicURLProblem says why base is a poor address for payment
// requirements ("" when it is fine): plain HTTP, or a loopback host that
// no payer can reach.
func publicURLProblem(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return "it does not parse: " + err.Error()
	}
	var why []string
	if u.Scheme != "https" {
		why = append(why, "it is plain HTTP")
	}
	h := u.Hostname()
	if a, err := netip.ParseAddr(h); (err == nil && (a.IsLoopback() || a.IsUnspecified())) || h == "localhost" || strings.HasSuffix(h, ".localhost") || h == "" {
		why = append(why, "its host is loopback or unspecified")
	}
	return strings.Join(why, " and ")
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// trustedProxies parses --trusted-proxies (CIDRs or single addresses,
// comma-separated) and --trusted-proxy-header, naming every bad value.
func trustedProxies(list, header string) ([]netip.Prefix, gateway.ProxyHeader, error) {
	var out []netip.Prefix
	var bad []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			if p != p.Masked() {
				bad = append(bad, fmt.Sprintf("%q has host bits set (did you mean %s?)", s, p.Masked()))
				continue
			}
			out = append(out, p)
		} else if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		} else {
			bad = append(bad, fmt.Sprintf("%q is not a CIDR or an address", s))
		}
	}
	var h gateway.ProxyHeader
	switch strings.ToLower(header) {
	case "x-forwarded-for":
		h = gateway.ProxyXForwardedFor
	case "forwarded":
		h = gateway.ProxyForwarded
	default:
		bad = append(bad, fmt.Sprintf("--trusted-proxy-header %q: want X-Forwarded-For or Forwarded", header))
	}
	if len(bad) > 0 {
		return nil, 0, errors.New("--trusted-proxies: " + strings.Join(bad, "; "))
	}
	return out, h, nil
}
