package catalog

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// upstreamProblems explains why raw cannot be a tool's upstream, one
// message per defect, or returns nil. An upstream is an absolute http(s)
// URL with a host, and nothing the gateway would drop or leak:
//
//   - no user:password@ — secrets do not belong in tools.json (which is
//     copied, diffed and logged); the gateway would not send them anyway.
//   - no query string and no fragment — the upstream request carries the
//     caller's query, so a fixed one would be dropped or merged in an
//     order nobody can rely on; put the fixed part in the path.
//   - not the gateway itself (listen, when given): such a call loops back.
//
// Messages never repeat a password or a query, which may hold a secret.
func upstreamProblems(raw, listen string) []string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		shown := raw
		if strings.ContainsAny(raw, "@?") {
			shown = "(not shown: it may hold a secret)"
		}
		return []string{fmt.Sprintf("%q must be an http(s) URL or demo:<name>", shown)}
	}
	shown := shownURL(u)
	var msgs []string
	if u.User != nil {
		msgs = append(msgs, fmt.Sprintf("%q must not carry credentials (user:password@): keep secrets out of tools.json", shown))
	}
	if u.RawQuery != "" || u.ForceQuery {
		msgs = append(msgs, fmt.Sprintf("%q must not have a query string: the caller's query is forwarded; put fixed parts in the path", shown))
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		msgs = append(msgs, fmt.Sprintf("%q must not have a fragment (#…)", shown))
	}
	port := u.Port()
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			msgs = append(msgs, fmt.Sprintf("%q: port %s is not between 1 and 65535", shown, p))
		}
	} else if u.Scheme == "https" {
		port = "443"
	} else {
		port = "80"
	}
	if listen != "" && dialsListener(u.Hostname(), port, listen) {
		msgs = append(msgs, fmt.Sprintf("%q is the gateway's own listen address %s: calls would loop back into the gateway", shown, listen))
	}
	return msgs
}

// shownURL is u for an error message, with the user info, the query and
// the fragment replaced by "***".
func shownURL(u *url.URL) string {
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.User != nil {
		b.WriteString("***@") // a bare user name is often a token
	}
	b.WriteString(u.Host + u.EscapedPath())
	if u.RawQuery != "" || u.ForceQuery {
		b.WriteString("?***")
	}
	if u.Fragment != "" {
		b.WriteString("#***")
	}
	return b.String()
}

// dialsListener reports whether dialing host:port reaches a gateway
// listening on listen. Ports must be equal (a listen port of 0 is random:
// never a match); hosts match when equal, or when the upstream's host is
// local and the listen host is an address it reaches: the listen host
// unspecified (all interfaces) and the upstream loopback, localhost or
// unspecified; or the upstream unspecified (0.0.0.0, :: dial the local
// host) and the listen host 127.0.0.1, ::1 or localhost. Names other
// than localhost are compared as written, not resolved.
func dialsListener(host, port, listen string) bool {
	lhost, lport, err := net.SplitHostPort(listen)
	if err != nil || lport != port || lport == "0" {
		return false
	}
	up, ls := localForms(host), localForms(lhost)
	for _, a := range up {
		for _, b := range ls {
			switch {
			case a == b:
				return true
			case b == "*" && (a == "*" || isLoopback(a)):
				return true // the gateway listens everywhere, loopback included
			case a == "*" && (b == "127.0.0.1" || b == "::1"):
				return true // dialing 0.0.0.0 or :: reaches the local host
			}
		}
	}
	return false
}

// localForms returns the addresses host stands for: "*" for an
// unspecified address (or none), both loopback addresses for localhost,
// the canonical IP for an IP, else the lower-cased name.
func localForms(host string) []string {
	h := strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if h == "" {
		return []string{"*"}
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return []string{"127.0.0.1", "::1"}
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		ip = ip.Unmap().WithZone("")
		if ip.IsUnspecified() {
			return []string{"*"}
		}
		return []string{ip.String()}
	}
	return []string{h}
}

func isLoopback(a string) bool {
	ip, err := netip.ParseAddr(a)
	return err == nil && ip.IsLoopback()
}
