package oauth_test

import (
	"errors"
	"testing"
	"time"

	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/oauth/oauthtest"
)

// FuzzVerify: whatever bytes arrive as a bearer token, verification never
// panics, refuses with a TokenError (or cannot reach the issuer), and
// anything it accepts is the one token the provider signed.
func FuzzVerify(f *testing.F) {
	p := oauthtest.Start(f)
	cfg, err := oauth.Decode([]byte(`{"version":1,"resource":"` + resource + `","issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `",
		"claims":{"scope":{"a":{"allow_tools":["x"]}}}}]}`))
	if err != nil {
		f.Fatal(err)
	}
	v := oauth.NewVerifier(cfg, oauth.Options{CacheSize: 64})
	now := time.Now()
	good := p.Sign(f, p.Claims("alice", resource, "a b", now, time.Hour))
	f.Add([]byte(good))
	f.Add([]byte(oauthtest.Forge(map[string]any{"alg": "none"}, p.Claims("x", resource, "", now, time.Hour), nil)))
	f.Add([]byte("a.b.c"))
	f.Add([]byte("eyJhbGciOiJSUzI1NiJ9.e30."))
	f.Fuzz(func(t *testing.T, tok []byte) {
		got, err := v.Verify(tok, now)
		if err != nil {
			var te *oauth.TokenError
			if !errors.As(err, &te) && !errors.Is(err, oauth.ErrIssuerUnavailable) {
				t.Fatalf("error %v is neither a TokenError nor ErrIssuerUnavailable", err)
			}
			if te != nil && (te.Reason == "" || te.Description == "") {
				t.Fatalf("refusal without reason or description: %+v", te)
			}
			return
		}
		if got.Who.String() != "oidc:corp:alice" || got.Mask != 1 {
			t.Fatalf("accepted %q as %+v", tok, got)
		}
	})
}
