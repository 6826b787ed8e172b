package oauth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
)

// Reasons a token is refused (TokenError.Reason; the ledger's reason).
const (
	ReasonMalformed     = "token_malformed"
	ReasonTooLarge      = "token_too_large"
	ReasonAlgorithm     = "token_algorithm_not_allowed"
	ReasonUnknownIssuer = "token_unknown_issuer"
	ReasonUnknownKey    = "token_unknown_key"
	ReasonSignature     = "token_bad_signature"
	ReasonExpired       = "token_expired"
	ReasonNotYetValid   = "token_not_yet_valid"
	ReasonAudience      = "token_wrong_audience"
	ReasonClaims        = "token_invalid_claims"
	ReasonKeyInvalid    = "token_key_invalid" // the key named by key_id_claim is unknown, revoked or expired
)

// TokenError is a token refused: why (Reason, and a Description fit for
// a WWW-Authenticate error_description: no token bytes, no claim values
// beyond the issuer's own names), and what is known of it (the issuer and
// principal once the signature checked, jti and client_id as claimed).
type TokenError struct {
	Reason      string
	Description string
	Issuer      *Issuer            // nil when the issuer is not known
	Who         identity.Principal // zero unless the signature verified
	JTI         string
	ClientID    string
}

func (e *TokenError) Error() string { return "oauth: " + e.Reason + ": " + e.Description }

// Token is a verified access token: immutable, shared by every call that
// presents it while it is cached.
type Token struct {
	Issuer   *Issuer
	Who      identity.Principal
	JTI      string
	ClientID string
	KeyID    string    // the API key whose policy the token inherits ("" = none)
	Mask     uint64    // the issuer's Mappings the token matches, bit i = Mappings[i]
	Expires  time.Time // "exp"
	kid      string
	snap     *keySnap // the key set it was verified under: alive without a lookup while it is current

	// Memo is the gateway's to keep what it derives from the token (its
	// compiled policy under one configuration); oauth never reads it.
	Memo atomic.Pointer[any]
}

// Issuer is a configured issuer, compiled: its settings and key cache.
type Issuer struct {
	Index int
	Cfg   *IssuerConfig
	keys  *keySource
	algs  map[string]jwa.SignatureAlgorithm
	aud   map[string]bool
	skew  time.Duration
}

// Fetches reports how many times the issuer's keys were fetched (or
// discovery tried): a measure of what tokens cost the issuer.
func (is *Issuer) Fetches() int64 { return is.keys.fetches.Load() }

// Verifier verifies access tokens against the configured issuers and
// caches what it verified, keyed by a hash of the token (tokenCache),
// until the token expires (bounded in count and bytes). Safe for concurrent use; build a new one
// when auth.json changes, or use WithConfig to keep the key caches of the
// issuers that stay the same.
type Verifier struct {
	Config  *Config
	Issuers []*Issuer
	byIss   map[string]*Issuer
	cache   *tokenCache
}

// Options of a Verifier.
type Options struct {
	Client     *http.Client // nil: one with the fetch timeout
	Logger     *slog.Logger // nil: discard
	CacheSize  int          // tokens kept verified (0: 100 000)
	CacheBytes int          // token bytes kept (0: DefaultCacheBytes)
}

// NewVerifier compiles cfg. It fetches nothing yet (Prefetch does).
func NewVerifier(cfg *Config, o Options) *Verifier {
	return newVerifier(cfg, o, nil)
}

// WithConfig returns a Verifier for cfg that keeps the key caches of the
// issuers whose issuer URL and JWKS URI are unchanged. The verified-token
// cache starts empty (mappings and audiences may have changed).
func (v *Verifier) WithConfig(cfg *Config, o Options) *Verifier { return newVerifier(cfg, o, v) }

func newVerifier(cfg *Config, o Options, old *Verifier) *Verifier {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: fetchTimeout}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 100_000
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	v := &Verifier{Config: cfg, byIss: make(map[string]*Issuer, len(cfg.Issuers)), cache: newTokenCache(o.CacheSize, o.CacheBytes)}
	for i, ic := range cfg.Issuers {
		is := &Issuer{Index: i, Cfg: ic, algs: map[string]jwa.SignatureAlgorithm{}, aud: map[string]bool{},
			skew: time.Duration(ic.SkewSec) * time.Second}
		if old != nil {
			if prev := old.byIss[ic.Issuer]; prev != nil && prev.Cfg.JWKSURI == ic.JWKSURI && prev.Cfg.RetiredGraceSec == ic.RetiredGraceSec {
				is.keys = prev.keys // shared as is: it reads only the issuer and JWKS URI, unchanged
			}
		}
		if is.keys == nil {
			is.keys = newKeySource(ic, o.Client, o.Logger)
		}
		for _, a := range ic.Algorithms {
			if alg, ok := jwa.LookupSignatureAlgorithm(a); ok {
				is.algs[a] = alg
			}
		}
		for _, a := range ic.Audiences {
			is.aud[a] = true
		}
		v.Issuers = append(v.Issuers, is)
		v.byIss[ic.Issuer] = is
	}
	return v
}

// Prefetch fetches every issuer's keys that are not cached yet, so that
// the first token does not wait for them; failures are logged and retried
// on demand.
func (v *Verifier) Prefetch(now time.Time) {
	for _, is := range v.Issuers {
		if is.keys.snap.Load() == nil {
			is.keys.refresh(now, nil, false)
		}
	}
}

// Verify checks a compact JWT access token at now: size, form, issuer,
// algorithm, key, signature, exp / nbf / iat within the issuer's skew,
// audience, subject; then maps its claims. A cached token costs a hash
// and a map lookup. Errors: *TokenError for a token refused;
// ErrIssuerUnavailable (wrapped) when the issuer's keys cannot be had.
func (v *Verifier) Verify(tok []byte, now time.Time) (*Token, error) {
	h := v.cache.hash(tok)
	if t := v.cache.get(h, tok, now); t != nil && (t.snap == t.Issuer.keys.snap.Load() && t.snap.fresh() || t.Issuer.keys.alive(t.kid, now)) {
		return t, nil
	}
	t, err := v.verify(tok, now)
	if err != nil {
		return nil, err
	}
	v.cache.put(h, tok, t, now)
	return t, nil
}

// VerifyUncached is Verify without the cache (benchmarks, tests).
func (v *Verifier) VerifyUncached(tok []byte, now time.Time) (*Token, error) {
	return v.verify(tok, now)
}

type jwtHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

func (v *Verifier) verify(tok []byte, now time.Time) (*Token, error) {
	maxLen := DefaultMaxToken
	for _, is := range v.Issuers {
		maxLen = max(maxLen, is.Cfg.MaxToken)
	}
	if len(tok) > maxLen {
		return nil, &TokenError{Reason: ReasonTooLarge, Description: fmt.Sprintf("token larger than %d bytes", maxLen)}
	}
	parts := bytes.Split(tok, []byte{'.'})
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[1]) == 0 {
		return nil, &TokenError{Reason: ReasonMalformed, Description: "not a compact JWT (header.payload.signature)"}
	}
	var hdr jwtHeader
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return nil, &TokenError{Reason: ReasonMalformed, Description: "the JWT header is not base64url JSON"}
	}
	var raw map[string]json.RawMessage
	if err := decodeSegment(parts[1], &raw); err != nil || raw == nil {
		return nil, &TokenError{Reason: ReasonMalformed, Description: "the JWT payload is not a base64url JSON object"}
	}
	c := claims{raw: raw}
	te := &TokenError{JTI: c.str("jti"), ClientID: c.clientID()}
	fail := func(reason, desc string) (*Token, error) {
		te.Reason, te.Description = reason, desc
		return nil, te
	}
	iss := c.str("iss")
	is := v.byIss[iss]
	if is == nil {
		return fail(ReasonUnknownIssuer, "the token's issuer is not trusted here")
	}
	te.Issuer = is
	if len(tok) > is.Cfg.MaxToken {
		return fail(ReasonTooLarge, fmt.Sprintf("token larger than %d bytes", is.Cfg.MaxToken))
	}
	if hdr.Alg == "" {
		return fail(ReasonMalformed, "the JWT header has no alg")
	}
	alg, ok := is.algs[hdr.Alg]
	if !ok {
		return fail(ReasonAlgorithm, "algorithm "+safe(hdr.Alg)+" is not allowed (allowed: "+strings.Join(is.Cfg.Algorithms, ", ")+")")
	}
	if hdr.Crit != nil || hdr.B64 != nil {
		return fail(ReasonMalformed, "JWS crit and b64 headers are not supported")
	}
	key, known, err := is.keys.key(hdr.Kid, now)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", is.Cfg.Alias, err)
	}
	if !known {
		return fail(ReasonUnknownKey, "the signing key (kid) is not one the issuer publishes")
	}
	if key.alg != "" && key.alg != hdr.Alg {
		return fail(ReasonAlgorithm, "the issuer's key "+safe(hdr.Kid)+" is for "+key.alg+", not "+safe(hdr.Alg))
	}
	if _, err := jws.VerifyCompactFast(key.raw, tok, alg); err != nil {
		return fail(ReasonSignature, "the signature does not verify")
	}
	// Signed by the issuer: from here on the claims are its word.
	sub := c.str(is.Cfg.Subject)
	if sub != "" && identity.SubjectOK(sub) {
		te.Who = identity.OIDCPrincipal(is.Cfg.Alias, sub)
	}
	exp, ok := c.time("exp")
	if !ok {
		return fail(ReasonClaims, "the token has no numeric exp claim")
	}
	if !now.Before(exp.Add(is.skew)) {
		return fail(ReasonExpired, "the token expired at "+exp.UTC().Format(time.RFC3339))
	}
	if nbf, ok := c.time("nbf"); ok && now.Add(is.skew).Before(nbf) {
		return fail(ReasonNotYetValid, "the token is not valid before "+nbf.UTC().Format(time.RFC3339))
	}
	if iat, ok := c.time("iat"); ok && now.Add(is.skew).Before(iat) {
		return fail(ReasonNotYetValid, "the token was issued in the future ("+iat.UTC().Format(time.RFC3339)+")")
	}
	if !c.audienceIn(is.aud) {
		return fail(ReasonAudience, "the token is not issued for this resource (aud must name one of: "+strings.Join(is.Cfg.Audiences, ", ")+")")
	}
	if te.Who.IsZero() {
		return fail(ReasonClaims, fmt.Sprintf("the %s claim must be a string of 1 to %d printable bytes", is.Cfg.Subject, identity.MaxSubject))
	}
	t := &Token{Issuer: is, Who: te.Who, JTI: te.JTI, ClientID: te.ClientID, Expires: exp, kid: hdr.Kid, snap: is.keys.snap.Load()}
	if n := is.Cfg.KeyIDClaim; n != "" {
		if _, present := raw[n]; present {
			if t.KeyID = c.str(n); t.KeyID == "" {
				return fail(ReasonClaims, "the "+n+" claim must be a key_id string")
			}
		}
	}
	for i, m := range is.Cfg.Mappings {
		if c.has(m.Claim, m.Value) {
			t.Mask |= 1 << uint(i)
		}
	}
	return t, nil
}

func decodeSegment(seg []byte, v any) error {
	b := make([]byte, base64.RawURLEncoding.DecodedLen(len(seg)))
	n, err := base64.RawURLEncoding.Decode(b, seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b[:n], v)
}

// safe bounds a header value quoted back in a description: at most 32
// bytes of printable ASCII.
func safe(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '?'
		}
	}
	return `"` + string(b) + `"`
}

// claims reads a token's payload.
type claims struct{ raw map[string]json.RawMessage }

func (c claims) str(name string) string {
	var s string
	if v, ok := c.raw[name]; ok && len(v) > 0 && v[0] == '"' {
		_ = json.Unmarshal(v, &s)
	}
	return s
}

// clientID is "client_id" (RFC 9068), else "azp" (OIDC).
func (c claims) clientID() string {
	if s := c.str("client_id"); s != "" {
		return s
	}
	return c.str("azp")
}

// time reads a NumericDate.
func (c claims) time(name string) (time.Time, bool) {
	v, ok := c.raw[name]
	if !ok {
		return time.Time{}, false
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

func (c claims) audienceIn(want map[string]bool) bool {
	for _, a := range c.strings("aud", false) {
		if want[a] {
			return true
		}
	}
	return false
}

// strings reads a claim as a list: an array of strings, or one string
// (split on spaces when split, as "scope" is).
func (c claims) strings(name string, split bool) []string {
	v, ok := c.raw[name]
	if !ok || len(v) == 0 {
		return nil
	}
	switch v[0] {
	case '"':
		var s string
		if json.Unmarshal(v, &s) != nil {
			return nil
		}
		if split {
			return strings.Fields(s)
		}
		return []string{s}
	case '[':
		var list []json.RawMessage
		if json.Unmarshal(v, &list) != nil {
			return nil
		}
		out := make([]string, 0, len(list))
		for _, e := range list {
			var s string
			if len(e) > 0 && e[0] == '"' && json.Unmarshal(e, &s) == nil {
				out = append(out, s)
			}
		}
		return out
	case 't', 'f':
		return []string{string(v)} // "true" / "false" match a mapping value written so
	}
	return nil
}

// has reports whether the claim holds value: equals it, or lists it (a
// string claim is split on spaces, as "scope" is).
func (c claims) has(name, value string) bool {
	for _, s := range c.strings(name, true) {
		if s == value {
			return true
		}
	}
	return false
}

// IssuerByAlias returns the issuer configured as alias, or nil.
func (v *Verifier) IssuerByAlias(alias string) *Issuer {
	for _, is := range v.Issuers {
		if is.Cfg.Alias == alias {
			return is
		}
	}
	return nil
}

// Mapped returns the policy the matched mappings of mask layer over the
// issuer's tier: allow_tools and deny_tools of every match add up; for
// the other fields a later entry (in auth.json order) replaces an earlier
// one. The tier is the last matching entry's "tier", else the issuer's.
// ok is false when mask matches nothing.
func (is *Issuer) Mapped(mask uint64) (p policy.Policy, tier policy.Tier, ok bool) {
	tier = is.Cfg.Tier
	for i, m := range is.Cfg.Mappings {
		if mask&(1<<uint(i)) == 0 {
			continue
		}
		allow, deny := p.AllowTools, p.DenyTools
		p = policy.Merge(p, *m.Policy)
		if ok {
			p.AllowTools = union(allow, m.Policy.AllowTools)
			p.DenyTools = union(deny, m.Policy.DenyTools)
		}
		if m.Policy.Tier != "" {
			tier = m.Policy.Tier
		}
		ok = true
	}
	p.Tier = ""
	return p, tier, ok
}

// union keeps nil (absent) when both are absent, else both lists
// deduplicated in order.
func union(a, b []string) []string {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	out := append([]string{}, a...)
	for _, s := range b {
		dup := false
		for _, t := range out {
			dup = dup || s == t
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}

// ScopesFor returns the values of the "scope" (or "scp") mappings that
// have an allow list and whose policy allows says yes to, in file order:
// the scopes to ask for when a token lacks one (insufficient_scope).
func (is *Issuer) ScopesFor(allows func(p *policy.Policy) bool) []string {
	var out []string
	for _, m := range is.Cfg.Mappings {
		if (m.Claim == "scope" || m.Claim == "scp") && m.Policy.AllowTools != nil && allows(m.Policy) {
			out = append(out, m.Value)
		}
	}
	return out
}
