package identity

import "bytes"

// BearerForm is what an "Authorization: Bearer" token is, told apart by
// its form alone. API keys, the admin token and OAuth access tokens all
// travel in that header; Bearer is the one place that decides which is
// which (docs/oauth.md):
//
//   - "it-…"                              an API key
//   - three dot-separated parts, the first base64url: a JWT (an OAuth / OIDC access token)
//   - anything else                       opaque: the admin token on the
//     management API, nothing on a tool call
type BearerForm uint8

const (
	// BearerNone: no Authorization header, or not the Bearer scheme.
	BearerNone BearerForm = iota
	// BearerAPIKey: a token starting with "it-".
	BearerAPIKey
	// BearerJWT: header.payload.signature, the header base64url, the
	// first two parts non-empty (the signature part may be empty, as in
	// alg "none", so that such tokens are refused as tokens, not ignored).
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

// looksLikeJWT: exactly two dots, the first two parts non-empty, the
// header part base64url (the rest is checked when the token is decoded:
// classifying must stay cheap for tokens of kilobytes).
func looksLikeJWT(tok []byte) bool {
	i := bytes.IndexByte(tok, '.')
	if i <= 0 {
		return false
	}
	j := bytes.IndexByte(tok[i+1:], '.')
	if j <= 0 || bytes.IndexByte(tok[i+1+j+1:], '.') >= 0 {
		return false
	}
	for _, c := range tok[:i] {
		if !b64url[c] {
			return false
		}
	}
	return true
}

// b64url marks the bytes of the base64url alphabet.
var b64url = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['-'], t['_'] = true, true
	return t
}()
