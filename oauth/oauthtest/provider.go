// Package oauthtest runs a real OIDC provider in the test process for the
// tests of package oauth, the gateway and the end-to-end suite:
// github.com/oauth2-proxy/mockoidc serves discovery, the authorization
// code flow and its token endpoint; the JWKS it serves is this package's
// rotatable key set (RSA and EC keys, with Cache-Control), and Sign mints
// access tokens with any claims (audience, scope, exp …) under any of its
// keys, as a provider configured for the resource would.
package oauthtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/oauth2-proxy/mockoidc"
)

// Provider is a running OIDC provider. Safe for concurrent use.
type Provider struct {
	M *mockoidc.MockOIDC

	mu      sync.Mutex
	keys    []*Key // published, in order; current is the signing key
	current *Key

	// MaxAge is the JWKS Cache-Control max-age in seconds (default 300).
	MaxAge atomic.Int64
	// Down makes the JWKS and discovery answer 503.
	Down atomic.Bool
	// JWKSHits counts JWKS requests served.
	JWKSHits atomic.Int64

	clientsMu sync.Mutex
	clients   map[string]*Client
}

// Client is a client registered for the client_credentials grant, which
// this provider adds to mockoidc's token endpoint (RFC 6749 section 4.4,
// with RFC 8707 resource indicators: the token's aud is the requested
// resource).
type Client struct {
	ID, Secret string
	// Scopes the client may be granted; a request is granted the
	// requested scopes it may have (all of them when it asks for none).
	Scopes []string
	// MaxScopes, if > 0, grants at most that many scopes per token (an
	// authorization server may grant less than asked: step-up tests).
	MaxScopes int
	// Tokens counts the tokens issued.
	Tokens atomic.Int64
}

// AddClient registers a client_credentials client.
func (p *Provider) AddClient(c *Client) {
	p.clientsMu.Lock()
	defer p.clientsMu.Unlock()
	if p.clients == nil {
		p.clients = map[string]*Client{}
	}
	p.clients[c.ID] = c
}

// clientCredentials answers a client_credentials token request.
func (p *Provider) clientCredentials(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	p.clientsMu.Lock()
	c := p.clients[id]
	p.clientsMu.Unlock()
	if c == nil || secret != c.Secret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	allowed := map[string]bool{}
	for _, s := range c.Scopes {
		allowed[s] = true
	}
	var granted []string
	want := strings.Fields(r.PostForm.Get("scope"))
	if len(want) == 0 {
		want = c.Scopes
	}
	for _, s := range want {
		if allowed[s] && (c.MaxScopes == 0 || len(granted) < c.MaxScopes) {
			granted = append(granted, s)
		}
	}
	aud := r.PostForm.Get("resource")
	if aud == "" {
		aud = id
	}
	claims := p.Claims(id, aud, strings.Join(granted, " "), time.Now(), time.Hour)
	claims["client_id"] = id
	tok := p.Sign(testingTB{}, claims)
	c.Tokens.Add(1)
	b, _ := json.Marshal(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600, "scope": strings.Join(granted, " ")})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// Key is a signing key of the provider.
type Key struct {
	Kid  string
	Alg  string // RS256 or ES256
	priv any
	pub  any
}

// Start runs a provider on 127.0.0.1 until the test ends. Its first key
// is mockoidc's own (RS256), so that tokens from its code flow verify.
func Start(t testing.TB) *Provider {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := m.Keypair.KeyID()
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{M: m}
	p.MaxAge.Store(300)
	k := &Key{Kid: kid, Alg: "RS256", priv: m.Keypair.PrivateKey, pub: m.Keypair.PublicKey}
	p.keys, p.current = []*Key{k}, k
	if err := m.AddMiddleware(p.middleware); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return p
}

func (p *Provider) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.Down.Load() && (r.URL.Path == mockoidc.JWKSEndpoint || r.URL.Path == mockoidc.DiscoveryEndpoint) {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == mockoidc.TokenEndpoint && r.Method == http.MethodPost {
			if err := r.ParseForm(); err == nil && r.PostForm.Get("grant_type") == "client_credentials" {
				p.clientCredentials(w, r)
				return
			}
		}
		if r.URL.Path != mockoidc.JWKSEndpoint {
			next.ServeHTTP(w, r)
			return
		}
		p.JWKSHits.Add(1)
		b, err := p.JWKS()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", p.MaxAge.Load()))
		w.Write(b)
	})
}

// Issuer is the provider's issuer URL.
func (p *Provider) Issuer() string { return p.M.Issuer() }

// JWKS is the published key set.
func (p *Provider) JWKS() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := jwk.NewSet()
	for _, k := range p.keys {
		jk, err := jwk.Import(k.pub)
		if err != nil {
			return nil, err
		}
		jk.Set(jwk.KeyIDKey, k.Kid)
		jk.Set(jwk.KeyUsageKey, "sig")
		alg, _ := jwa.LookupSignatureAlgorithm(k.Alg)
		jk.Set(jwk.AlgorithmKey, alg)
		set.AddKey(jk)
	}
	return json.Marshal(set)
}

// Rotate adds a new signing key (alg RS256 or ES256) and makes it
// current; the old keys stay published until Retire.
func (p *Provider) Rotate(t testing.TB, alg string) *Key {
	t.Helper()
	var k *Key
	switch alg {
	case "RS256":
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		k = &Key{Alg: alg, priv: priv, pub: &priv.PublicKey}
	case "ES256":
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k = &Key{Alg: alg, priv: priv, pub: &priv.PublicKey}
	default:
		t.Fatalf("oauthtest: alg %s", alg)
	}
	var b [9]byte
	rand.Read(b[:])
	k.Kid = base64.RawURLEncoding.EncodeToString(b[:])
	p.mu.Lock()
	p.keys = append(p.keys, k)
	p.current = k
	p.mu.Unlock()
	return k
}

// Retire stops publishing the key kid.
func (p *Provider) Retire(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, k := range p.keys {
		if k.Kid == kid {
			p.keys = append(p.keys[:i:i], p.keys[i+1:]...)
			return
		}
	}
}

// Current is the signing key.
func (p *Provider) Current() *Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// Claims builds the standard claims of an access token for sub and aud,
// valid from now for ttl, with scope ("" = none).
func (p *Provider) Claims(sub, aud, scope string, now time.Time, ttl time.Duration) map[string]any {
	var j [8]byte
	rand.Read(j[:])
	c := map[string]any{
		"iss": p.Issuer(), "sub": sub, "aud": aud, "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(ttl).Unix(), "jti": fmt.Sprintf("%x", j), "client_id": "agent-client",
	}
	if scope != "" {
		c["scope"] = scope
	}
	return c
}

// Sign signs claims with the current key.
func (p *Provider) Sign(t testing.TB, claims map[string]any) string {
	return p.SignWith(t, p.Current(), claims)
}

// SignWith signs claims with key k (its kid in the header).
func (p *Provider) SignWith(t testing.TB, k *Key, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, k.Kid)
	hdr.Set(jws.TypeKey, "at+jwt")
	alg, _ := jwa.LookupSignatureAlgorithm(k.Alg)
	tok, err := jws.Sign(payload, jws.WithKey(alg, k.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// Forge builds a token no provider would: header and claims as given,
// signed with HMAC-SHA256 under secret (nil: the empty signature of alg
// "none").
func Forge(header, claims map[string]any, secret []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	if secret == nil {
		return in + "."
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// PublicKeyBytes is the PKIX DER of k's public key and its PEM: what an
// HS256 forgery "signed with the public key" uses as its secret.
func (k *Key) PublicKeyBytes() (der []byte, pemText []byte) {
	der, _ = x509.MarshalPKIXPublicKey(k.pub)
	b64 := base64.StdEncoding.EncodeToString(der)
	var sb strings.Builder
	sb.WriteString("-----BEGIN PUBLIC KEY-----\n")
	for len(b64) > 64 {
		sb.WriteString(b64[:64] + "\n")
		b64 = b64[64:]
	}
	sb.WriteString(b64 + "\n-----END PUBLIC KEY-----\n")
	return der, []byte(sb.String())
}

// CodeFlowToken runs mockoidc's authorization code flow for the client
// clientID (the provider's ClientID is set to it: mockoidc puts the
// client id in "aud", so a client named after the resource gets tokens
// for it) and returns the access token.
func (p *Provider) CodeFlowToken(t testing.TB, clientID string) string {
	t.Helper()
	p.M.ClientID = clientID
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{"scope": {"openid"}, "state": {"s1"}, "client_id": {clientID}, "response_type": {"code"},
		"redirect_uri": {"http://127.0.0.1/cb"}}
	resp, err := noRedirect.Get(p.M.AuthorizationEndpoint() + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: status %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "client_id": {clientID},
		"client_secret": {p.M.ClientSecret}, "redirect_uri": {"http://127.0.0.1/cb"}}
	resp, err = http.PostForm(p.M.TokenEndpoint(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &tr) != nil || tr.AccessToken == "" {
		t.Fatalf("token endpoint: status %d: %s", resp.StatusCode, body)
	}
	return tr.AccessToken
}

// testingTB lets the token endpoint sign outside a test's goroutine: a
// signing failure there is a panic (a broken key, never a client's fault).
type testingTB struct{ testing.TB }

func (testingTB) Helper()                   {}
func (testingTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (testingTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
