package catalog

import "strings"

// routeProblems explains why p cannot be a tool route, one message per
// defect, or returns nil. The gateway routes on the request path as
// fasthttp normalizes it: percent-decoded, with empty, "." and ".."
// segments removed. A route that is not already in that form could never
// match (or, for "/x/../credits/keys", would only look like it shadows a
// reserved path), so it is refused rather than silently dead.
func routeProblems(p string) []string {
	var msgs []string
	if !strings.HasPrefix(p, "/") {
		return []string{"must be an absolute path starting with /"}
	}
	var empty, dots, pct, ctl, query, other bool
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f:
			ctl = true
		case c == '%':
			pct = true
		case c == '?' || c == '#':
			query = true
		case !pathByte(c):
			other = true
		}
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		switch seg {
		case "":
			empty = true
		case ".", "..":
			dots = true
		}
	}
	if empty {
		msgs = append(msgs, "has an empty segment (// or a trailing /); requests are normalized, so it could never match")
	}
	if dots {
		msgs = append(msgs, `has a "." or ".." segment; requests are normalized, so it could never match`)
	}
	if pct {
		msgs = append(msgs, `contains "%": write the path decoded; requests are percent-decoded before routing`)
	}
	if ctl {
		msgs = append(msgs, "contains a control character")
	}
	if query {
		msgs = append(msgs, "must be a path without query or fragment (? or #)")
	}
	if other {
		msgs = append(msgs, "may only contain letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @ /")
	}
	return msgs
}

// pathByte reports whether c may appear in a route: an RFC 3986 pchar
// other than a percent-encoding, or "/".
func pathByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}
