package gateway

import (
	"bytes"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// Trusted proxies.
//
// A call's source address (the ledger's aggregate records, the access
// log, the per-source flood bounds of anon.go, the X-Forwarded-For sent
// upstream) is the connection's peer, unless the peer is one of
// Options.TrustedProxies: then the forwarding header named by
// Options.ProxyHeader is read right to left, each hop that is itself a
// trusted proxy is skipped, and the first address that is not is the
// client. Everything left of it was written by the client and is never
// read. A hop that does not parse (an "unknown" or obfuscated Forwarded
// node, garbage) stops the walk at the last trusted hop: the gateway
// does not guess past what it cannot read. Only the one configured header
// is read, because a proxy that sets one passes the other through as the
// client sent it.

// ProxyHeader names the forwarding header trusted proxies set.
type ProxyHeader uint8

const (
	// ProxyXForwardedFor: X-Forwarded-For, a comma-separated list of
	// addresses (optionally with a port), the client's leftmost.
	ProxyXForwardedFor ProxyHeader = iota
	// ProxyForwarded: RFC 7239 Forwarded, each element's for= parameter.
	ProxyForwarded
)

var (
	hdrForwarded = []byte("Forwarded")
	strFor       = []byte("for")
	strProto     = []byte("proto")
)

// viaTLS reports whether the caller reached the gateway over TLS: this
// connection, or, from a trusted proxy, the scheme that proxy reports
// (the last X-Forwarded-Proto value, or the proto= of the last Forwarded
// element; "https" case-insensitively). A proxy that does not set it
// passes the client's own claim through, which affects only the
// X-Forwarded-Proto sent upstream.
func (g *Gateway) viaTLS(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsTLS() {
		return true
	}
	if len(g.opts.TrustedProxies) == 0 || !isTrusted(g.opts.TrustedProxies, remoteAddr(ctx)) {
		return false
	}
	var proto []byte
	if g.opts.ProxyHeader == ProxyForwarded {
		vals := ctx.Request.Header.PeekAll(string(hdrForwarded))
		if len(vals) == 0 {
			return false
		}
		elem, _ := lastForwardedElement(vals[len(vals)-1])
		proto = forwardedParam(trimOWS(elem), strProto)
	} else {
		vals := ctx.Request.Header.PeekAll(string(hdrXFProto))
		if len(vals) == 0 {
			return false
		}
		proto = vals[len(vals)-1]
		if j := bytes.LastIndexByte(proto, ','); j >= 0 {
			proto = proto[j+1:]
		}
	}
	return bytes.EqualFold(trimOWS(proto), strHTTPS)
}

// clientAddr is the call's source: the peer, or with a trusted peer the
// client its forwarding header names.
func (g *Gateway) clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	peer := remoteAddr(ctx)
	if len(g.opts.TrustedProxies) == 0 || !isTrusted(g.opts.TrustedProxies, peer) {
		return peer
	}
	name := hdrXFF
	if g.opts.ProxyHeader == ProxyForwarded {
		name = hdrForwarded
	}
	return ClientAddr(peer, g.opts.TrustedProxies, g.opts.ProxyHeader, ctx.Request.Header.PeekAll(string(name)))
}

// ClientAddr walks the forwarding header values (in the order received;
// several header lines form one list) from the right, starting from a
// peer, and returns the first hop that is not in trusted; the leftmost
// hop when all are; or the last trusted hop when the next one does not
// parse. An untrusted peer is returned as is.
func ClientAddr(peer netip.Addr, trusted []netip.Prefix, h ProxyHeader, values [][]byte) netip.Addr {
	cur := peer
	if !isTrusted(trusted, cur) {
		return cur
	}
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for len(v) > 0 {
			var elem []byte
			if h == ProxyForwarded {
				elem, v = lastForwardedElement(v)
			} else if j := bytes.LastIndexByte(v, ','); j >= 0 {
				elem, v = v[j+1:], v[:j]
			} else {
				elem, v = v, nil
			}
			elem = trimOWS(elem)
			if len(elem) == 0 {
				continue // "a, , b" and trailing commas: empty list elements (RFC 9110 5.6.1)
			}
			if h == ProxyForwarded {
				elem = forwardedFor(elem)
			}
			a, ok := parseHop(elem)
			if !ok {
				return cur
			}
			cur = a
			if !isTrusted(trusted, cur) {
				return cur
			}
		}
	}
	return cur
}

// isTrusted reports whether a is in one of the prefixes.
func isTrusted(ps []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// lastForwardedElement splits v's last comma-separated element off,
// honouring quoted strings (a comma inside quotes does not separate).
// Quotes are scanned from the left, so that an element is what a
// left-to-right reader would take it to be.
func lastForwardedElement(v []byte) (elem, rest []byte) {
	last := -1
	inQuote, esc := false, false
	for i, c := range v {
		switch {
		case esc:
			esc = false
		case inQuote && c == '\\':
			esc = true
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			last = i
		}
	}
	if last < 0 {
		return v, nil
	}
	return v[last+1:], v[:last]
}

// forwardedFor returns the value of an element's for= parameter, its
// quotes removed; nil without one, or when it is malformed.
func forwardedFor(elem []byte) []byte { return forwardedParam(elem, strFor) }

// forwardedParam returns the value of an element's parameter name, its
// quotes removed; nil without one, with two, or when it is malformed.
func forwardedParam(elem, name []byte) []byte {
	var found []byte
	for len(elem) > 0 {
		var pair []byte
		if j := indexUnquoted(elem, ';'); j >= 0 {
			pair, elem = elem[:j], elem[j+1:]
		} else {
			pair, elem = elem, nil
		}
		k, val, ok := bytes.Cut(trimOWS(pair), []byte("="))
		if !ok || !bytes.EqualFold(trimOWS(k), name) {
			continue
		}
		if found != nil {
			return nil // twice in one element: not a value we can trust
		}
		val = trimOWS(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
			if bytes.IndexByte(val, '\\') >= 0 || bytes.IndexByte(val, '"') >= 0 {
				return nil // no address needs escapes
			}
		}
		if len(val) == 0 {
			return nil
		}
		found = val
	}
	return found
}

func indexUnquoted(b []byte, sep byte) int {
	inQuote := false
	for i, c := range b {
		if c == '"' {
			inQuote = !inQuote
		} else if c == sep && !inQuote {
			return i
		}
	}
	return -1
}

// parseHop reads one hop: an IPv4 or IPv6 address, optionally with a
// port ("192.0.2.1:80", "[2001:db8::1]:80") or in brackets; a zone is
// dropped and an IPv4-mapped IPv6 address unmapped. "unknown", an
// obfuscated node ("_hidden") and anything else do not parse.
func parseHop(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	s := string(b)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("").Unmap(), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a.WithZone("").Unmap(), true
		}
	}
	return netip.Addr{}, false
}

func trimOWS(b []byte) []byte { return bytes.Trim(b, " \t") }
