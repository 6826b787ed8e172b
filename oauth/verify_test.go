package oauth_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/oauth/oauthtest"
)

const resource = "https://gw.example"

func newVerifier(t *testing.T, p *oauthtest.Provider, extra string) *oauth.Verifier {
	t.Helper()
	cfg, err := oauth.Decode([]byte(`{"version":1,"resource":"` + resource + `","issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `"` + extra + `,
		"claims":{"scope":{"tools:research":{"allow_tools":["pack/research"]},"tools:email":{"allow_tools":["email/*"],"rate_class_quota":{"light":5}}},
		          "groups":{"admins":{"tier":"partner"}}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return oauth.NewVerifier(cfg, oauth.Options{})
}

func reason(err error) string {
	var te *oauth.TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

// TestVerifier_Verify covers each way a token is refused, against a real
// provider's discovery and keys.
func TestVerifier_Verify(t *testing.T) {
	p := oauthtest.Start(t)
	v := newVerifier(t, p, "")
	now := time.Now()
	good := func() map[string]any { return p.Claims("alice", resource, "openid tools:research", now, time.Hour) }
	with := func(k string, val any) map[string]any {
		c := good()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	k := p.Current()
	der, pemText := k.PublicKeyBytes()
	other := p.Rotate(t, "ES256") // published, current from here on
	p.Rotate(t, "RS256")
	cases := []struct {
		name, token, want string
	}{
		{"OK", p.Sign(t, good()), ""},
		{"OK/ES256", p.SignWith(t, other, good()), ""},
		{"OK/MCPAudience", p.Sign(t, with("aud", []string{"x", resource + "/mcp"})), ""},
		{"Expired", p.Sign(t, p.Claims("alice", resource, "", now.Add(-2*time.Hour), time.Hour)), oauth.ReasonExpired},
		{"ExpiredWithinSkew", p.Sign(t, with("exp", now.Add(-30*time.Second).Unix())), ""},
		{"NoExp", p.Sign(t, with("exp", nil)), oauth.ReasonClaims},
		{"FutureNbf", p.Sign(t, with("nbf", now.Add(10*time.Minute).Unix())), oauth.ReasonNotYetValid},
		{"FutureIat", p.Sign(t, with("iat", now.Add(10*time.Minute).Unix())), oauth.ReasonNotYetValid},
		{"WrongAudience", p.Sign(t, with("aud", "https://other.example")), oauth.ReasonAudience},
		{"NoAudience", p.Sign(t, with("aud", nil)), oauth.ReasonAudience},
		{"WrongIssuer", p.Sign(t, with("iss", "https://evil.example")), oauth.ReasonUnknownIssuer},
		{"NoSubject", p.Sign(t, with("sub", nil)), oauth.ReasonClaims},
		{"ControlInSubject", p.Sign(t, with("sub", "a\x00b")), oauth.ReasonClaims},
		{"AlgNone", oauthtest.Forge(map[string]any{"alg": "none", "kid": k.Kid}, good(), nil), oauth.ReasonAlgorithm},
		{"HS256WithPublicKeyDER", oauthtest.Forge(map[string]any{"alg": "HS256", "kid": k.Kid}, good(), der), oauth.ReasonAlgorithm},
		{"HS256WithPublicKeyPEM", oauthtest.Forge(map[string]any{"alg": "HS256", "kid": k.Kid}, good(), pemText), oauth.ReasonAlgorithm},
		{"AlgMismatchKey", oauthtest.Forge(map[string]any{"alg": "ES256", "kid": k.Kid}, good(), []byte("x")), oauth.ReasonAlgorithm},
		{"UnknownKid", oauthtest.Forge(map[string]any{"alg": "RS256", "kid": "nope"}, good(), []byte("x")), oauth.ReasonUnknownKey},
		{"BadSignature", badSig(p.Sign(t, good())), oauth.ReasonSignature},
		{"Tampered", tamper(p.Sign(t, good())), oauth.ReasonSignature},
		{"Oversized", p.Sign(t, with("pad", strings.Repeat("a", 9000))), oauth.ReasonTooLarge},
		{"Garbage", "abc.def.ghi", oauth.ReasonMalformed},
		{"TwoParts", "abc.def", oauth.ReasonMalformed},
		{"NotJSON", "bm90anNvbg.bm90anNvbg.sig", oauth.ReasonMalformed},
		{"Crit", oauthtest.Forge(map[string]any{"alg": "RS256", "kid": k.Kid, "crit": []string{"x"}}, good(), []byte("x")), oauth.ReasonMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := v.Verify([]byte(tc.token), now)
			if got := reason(err); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if tc.want == "" {
				if tok.Who.String() != "oidc:corp:alice" || tok.JTI == "" || tok.ClientID != "agent-client" {
					t.Fatalf("token %+v", tok)
				}
				return
			}
			var te *oauth.TokenError
			errors.As(err, &te)
			if te.Description == "" || strings.Contains(te.Description, tc.token) {
				t.Fatalf("description %q", te.Description)
			}
		})
	}
}

// tamper replaces the payload with another subject's, keeping the
// signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	b = bytes.Replace(b, []byte(`"alice"`), []byte(`"mallory"`), 1)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
}

// badSig flips a byte of the signature.
func badSig(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 5
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// TestVerifier_Mapping: claims select mapping entries; allow_tools add
// up; the last matching tier wins.
func TestVerifier_Mapping(t *testing.T) {
	p := oauthtest.Start(t)
	v := newVerifier(t, p, "")
	now := time.Now()
	c := p.Claims("bob", resource, "tools:email tools:research", now, time.Hour)
	c["groups"] = []string{"staff", "admins"}
	tok, err := v.Verify([]byte(p.Sign(t, c)), now)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Mask != 0b111 {
		t.Fatalf("mask %b, want 111", tok.Mask)
	}
	pol, tier, ok := tok.Issuer.Mapped(tok.Mask)
	if !ok || tier != "partner" || strings.Join(pol.AllowTools, ",") != "pack/research,email/*" || pol.RateClassQuota == nil {
		t.Fatalf("mapped %+v tier %q ok %v", pol, tier, ok)
	}
	c = p.Claims("bob", resource, "openid", now, time.Hour)
	tok, _ = v.Verify([]byte(p.Sign(t, c)), now)
	if _, tier, ok := tok.Issuer.Mapped(tok.Mask); ok || tier != "oauth" {
		t.Fatalf("no scope mapped: ok %v tier %q", ok, tier)
	}
}

// TestVerifier_Rotation: a token under a new kid makes the verifier
// refetch the keys once; a key the issuer stops publishing is refused
// after the next refetch (unless within the configured grace).
func TestVerifier_Rotation(t *testing.T) {
	for _, grace := range []int{0, 3600} {
		t.Run(map[int]string{0: "NoGrace", 3600: "Grace"}[grace], func(t *testing.T) {
			p := oauthtest.Start(t)
			v := newVerifier(t, p, `,"retired_key_grace_s":`+itoa(grace))
			now := time.Now()
			old := p.Current()
			oldTok := p.Sign(t, p.Claims("alice", resource, "", now, 2*time.Hour))
			if _, err := v.Verify([]byte(oldTok), now); err != nil {
				t.Fatal(err)
			}
			hits := p.JWKSHits.Load()
			p.Rotate(t, "RS256")
			p.Retire(old.Kid)
			newTok := p.Sign(t, p.Claims("alice", resource, "", now, 2*time.Hour))
			now = now.Add(time.Minute) // past the refetch interval since the first fetch
			if _, err := v.Verify([]byte(newTok), now); err != nil {
				t.Fatalf("new kid: %v", err)
			}
			if got := p.JWKSHits.Load() - hits; got != 1 {
				t.Fatalf("%d JWKS fetches for the new kid, want 1", got)
			}
			_, err := v.Verify([]byte(oldTok), now)
			if grace == 0 && reason(err) != oauth.ReasonUnknownKey {
				t.Fatalf("old token after its key was retired: %q", reason(err))
			}
			if grace > 0 && err != nil {
				t.Fatalf("old token within the grace: %v", err)
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	return "3600"
}

// TestVerifier_UnknownKidFlood: many tokens with random kids cost the
// issuer at most one refetch per interval, also concurrently.
func TestVerifier_UnknownKidFlood(t *testing.T) {
	p := oauthtest.Start(t)
	v := newVerifier(t, p, "")
	now := time.Now()
	if _, err := v.Verify([]byte(p.Sign(t, p.Claims("a", resource, "", now, time.Hour))), now); err != nil {
		t.Fatal(err)
	}
	hits := p.JWKSHits.Load()
	later := now.Add(time.Minute)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := oauthtest.Forge(map[string]any{"alg": "RS256", "kid": "k" + string(rune('a'+i%26)) + itoa(i%2)}, p.Claims("a", resource, "", now, time.Hour), []byte("x"))
			if _, err := v.Verify([]byte(tok), later); reason(err) != oauth.ReasonUnknownKey {
				t.Errorf("got %q", reason(err))
			}
		}()
	}
	wg.Wait()
	if got := p.JWKSHits.Load() - hits; got != 1 {
		t.Fatalf("%d JWKS fetches for 200 unknown kids, want 1", got)
	}
}

// TestVerifier_StaleOnError: keys past their lifetime are served stale
// while the issuer is down; without any keys the verifier cannot decide.
func TestVerifier_StaleOnError(t *testing.T) {
	p := oauthtest.Start(t)
	p.MaxAge.Store(60)
	v := newVerifier(t, p, "")
	now := time.Now()
	tok := func() []byte { return []byte(p.Sign(t, p.Claims("a", resource, "", now, 3*time.Hour))) }
	if _, err := v.Verify(tok(), now); err != nil {
		t.Fatal(err)
	}
	p.Down.Store(true)
	if _, err := v.Verify(tok(), now.Add(2*time.Hour)); err != nil {
		t.Fatalf("stale keys while the issuer is down: %v", err)
	}

	q := oauthtest.Start(t)
	q.Down.Store(true)
	w := newVerifier(t, q, "")
	_, err := w.Verify([]byte(q.Sign(t, q.Claims("a", resource, "", now, time.Hour))), now)
	if !errors.Is(err, oauth.ErrIssuerUnavailable) {
		t.Fatalf("no keys ever: %v, want ErrIssuerUnavailable", err)
	}
}

// TestVerifier_CodeFlow: an access token from the provider's own
// authorization code flow, for a client named after the resource.
func TestVerifier_CodeFlow(t *testing.T) {
	p := oauthtest.Start(t)
	v := newVerifier(t, p, "")
	tok := p.CodeFlowToken(t, resource)
	got, err := v.Verify([]byte(tok), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got.Who.String(), "oidc:corp:") || got.JTI == "" {
		t.Fatalf("token %+v", got)
	}
}

// TestVerifier_Cache: a verified token is served from the cache until it
// expires; the cache is bounded.
func TestVerifier_Cache(t *testing.T) {
	p := oauthtest.Start(t)
	cfg, _ := oauth.Decode([]byte(`{"version":1,"resource":"` + resource + `","issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `","clock_skew_s":0}]}`))
	v := oauth.NewVerifier(cfg, oauth.Options{CacheSize: 16})
	now := time.Now()
	tok := []byte(p.Sign(t, p.Claims("a", resource, "", now, time.Minute)))
	a, err := v.Verify(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := v.Verify(tok, now.Add(time.Second))
	if a != b {
		t.Fatal("second verification did not come from the cache")
	}
	if _, err := v.Verify(tok, now.Add(2*time.Minute)); reason(err) != oauth.ReasonExpired {
		t.Fatalf("after exp: %q", reason(err))
	}
	for i := range 100 {
		v.Verify([]byte(p.Sign(t, p.Claims("u"+itoa(i%2)+string(rune('a'+i%26)), resource, "", now, time.Hour))), now)
	}
	if n := v.CacheLen(); n > 16 {
		t.Fatalf("cache holds %d tokens, bound 16", n)
	}
}

// TestVerifier_WithConfig: a new configuration keeps the cached keys of
// an unchanged issuer (no fetch) and starts with an empty token cache.
func TestVerifier_WithConfig(t *testing.T) {
	p := oauthtest.Start(t)
	v := newVerifier(t, p, "")
	now := time.Now()
	tok := []byte(p.Sign(t, p.Claims("a", resource, "", now, time.Hour)))
	if _, err := v.Verify(tok, now); err != nil {
		t.Fatal(err)
	}
	hits := p.JWKSHits.Load()
	w := v.WithConfig(newVerifier(t, p, `,"clock_skew_s":10`).Config, oauth.Options{})
	if w.CacheLen() != 0 {
		t.Fatal("token cache carried over")
	}
	if _, err := w.Verify(tok, now); err != nil {
		t.Fatal(err)
	}
	if p.JWKSHits.Load() != hits {
		t.Fatal("keys fetched again for an unchanged issuer")
	}
}
