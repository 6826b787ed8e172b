package identity

// BearerForm is what an "Authorization: Bearer" token is, told apart by
// its form alone. API keys, the admin token and OAuth access tokens all
// travel in that header; Bearer is the one place that decides which is
// which (docs/oauth.md):
//
//   - "it-…"                              an API key
//   - three dot-separated base64url parts a JWT (an OAuth / OIDC access token)
//   - anything else                       opaque: the admin token on the
//     management API, nothing on a tool call
type BearerForm uint8

const (
	// BearerNone: no Authorization header, or not the Bearer scheme.
	BearerNone BearerForm = iota
	// BearerAPIKey: a token starting with "it-".
	BearerAPIKey
	// BearerJWT: header.payload.signature, each part base64url without
	// padding (the signature part may be empty, as in alg "none", so that
	// such tokens are refused as tokens, not ignored).
	BearerJWT
	// BearerOpaque: any other token.
	BearerOpaque
)

var bearerNames = [...]string{"none", "api_key", "jwt", "opaque"}

func (f BearerForm) String() string { return bearerNames[f] }

// Bearer returns the form of the token of an Authorization header value
// and the token (spaces after the scheme skipped, trailing spaces
// trimmed). The scheme is matched case-insensitively. It does not
// allocate; token aliases the input.
func Bearer(authorization []byte) (BearerForm, []byte) {
	const scheme = "Bearer "
	if len(authorization) <= len(scheme) || !equalFoldASCII(authorization[:len(scheme)], scheme) {
		return BearerNone, nil
	}
	tok := authorization[len(scheme):]
	for len(tok) > 0 && tok[0] == ' ' {
		tok = tok[1:]
	}
	for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
		tok = tok[:len(tok)-1]
	}
	switch {
	case len(tok) == 0:
		return BearerNone, nil
	case len(tok) >= len(SecretPrefix) && string(tok[:len(SecretPrefix)]) == SecretPrefix:
		return BearerAPIKey, tok
	case looksLikeJWT(tok):
		return BearerJWT, tok
	}
	return BearerOpaque, tok
}

// looksLikeJWT: exactly two dots, the first two parts non-empty, every
// byte base64url.
func looksLikeJWT(tok []byte) bool {
	dots, part := 0, 0
	for _, c := range tok {
		switch {
		case c == '.':
			if part == 0 && dots < 2 {
				return false
			}
			dots++
			part = 0
			if dots > 2 {
				return false
			}
			continue
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		part++
	}
	return dots == 2
}
