// Package oauth makes toolgate an OAuth 2.1 resource server: it reads
// auth.json (the trusted issuers), discovers each issuer's signing keys
// and keeps them cached, verifies access tokens (JWTs) and maps their
// claims to policies. It speaks HTTP only as a client of the issuers; the
// gateway owns the bearer header, the challenges and the principals'
// meters. See docs/oauth.md.
package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
)

// Defaults and bounds of an issuer's settings.
const (
	DefaultSkewSeconds = 60
	MaxSkewSeconds     = 300
	DefaultTier        = policy.Tier("oauth")
	DefaultMaxToken    = 8 << 10 // bytes of a token accepted at all
	MaxMappings        = 64      // claim mapping entries per issuer
	MaxRetiredGrace    = 86400
)

// defaultAlgorithms are taken when an issuer lists none.
var defaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// asymmetric is every algorithm an issuer may allow: signatures verified
// with a public key. "none" and the HMAC family are never allowed: an HMAC
// "verified" with an issuer's public key is a forgery anyone can make.
var asymmetric = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// Config is auth.json decoded and validated: the trusted issuers.
type Config struct {
	// Resource is toolgate's own resource identifier (RFC 8707, RFC 9728),
	// e.g. "https://gateway.example.com"; the default audience of every
	// issuer and the "resource" of the protected-resource metadata.
	Resource string
	Issuers  []*IssuerConfig
	// MCPAnonymous keeps /mcp open to callers without credentials (x402
	// payers). By default, with issuers configured, such a request is
	// answered 401 with the protected-resource metadata, which is how MCP
	// clients learn to fetch a token.
	MCPAnonymous bool
}

// IssuerConfig is one trusted issuer.
type IssuerConfig struct {
	Alias      string   // names the issuer in principals: oidc:<alias>:<sub>
	Issuer     string   // the exact "iss" of its tokens
	JWKSURI    string   // "" = from discovery (<issuer>/.well-known/openid-configuration)
	Audiences  []string // a token's "aud" must name one of these
	Algorithms []string // allowed "alg" values
	SkewSec    int      // clock skew allowed on exp, nbf and iat
	Subject    string   // the claim naming the subject (default "sub")
	Tier       policy.Tier
	KeyIDClaim string // a claim naming an API key's key_id whose policy the token inherits
	MaxToken   int    // bytes
	// RetiredGraceSec keeps a key that the issuer stopped publishing
	// trusted this long after the refetch that found it gone (0: dropped
	// at once, and tokens it signed are refused from then on).
	RetiredGraceSec int
	// Mappings are the claim mapping entries in the order auth.json
	// lists them; a token matching several gets them all (mapping.go).
	Mappings []Mapping
	// Scopes lists the values of the "scope" claim mapping (for the
	// protected-resource metadata), in file order.
	Scopes []string
}

// Mapping is one entry of "claims": tokens whose Claim holds Value get
// Policy layered over the tier.
type Mapping struct {
	Claim  string
	Value  string
	Policy *policy.Policy
}

// Load reads and decodes an auth.json file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// Decode decodes auth.json strictly: unknown fields, wrong types and bad
// values are all reported, each with its JSON path, in one
// *catalog.ValidationError.
func Decode(data []byte) (*Config, error) {
	var ps catalog.Problems
	cfg := &Config{}
	top, ok := object(&ps, data, "$")
	if !ok {
		return nil, ps.Err()
	}
	for _, f := range top {
		path := "$." + f.key
		switch f.key {
		case "version":
			if n, ok := integer(&ps, f.val, path); ok && n != 1 {
				ps.Add(path, fmt.Sprintf("unsupported version %d (want 1)", n))
			}
		case "resource":
			if s, ok := str(&ps, f.val, path); ok {
				if msg := checkURL(s); msg != "" {
					ps.Add(path, msg)
				}
				cfg.Resource = strings.TrimSuffix(s, "/")
			}
		case "mcp_anonymous":
			if string(f.val) != "true" && string(f.val) != "false" {
				ps.Add(path, "must be true or false")
			}
			cfg.MCPAnonymous = string(f.val) == "true"
		case "issuers":
			var list []json.RawMessage
			if err := json.Unmarshal(f.val, &list); err != nil || list == nil {
				ps.Add(path, "must be an array of issuer objects")
				continue
			}
			for i, raw := range list {
				if ic := decodeIssuer(&ps, raw, fmt.Sprintf("%s[%d]", path, i)); ic != nil {
					cfg.Issuers = append(cfg.Issuers, ic)
				}
			}
		default:
			ps.Add(path, "unknown field (want version, resource, mcp_anonymous, issuers)")
		}
	}
	aliases := map[string]int{}
	issuers := map[string]int{}
	for i, ic := range cfg.Issuers {
		path := fmt.Sprintf("$.issuers[%d]", i)
		if j, dup := aliases[ic.Alias]; dup {
			ps.Add(path+".alias", fmt.Sprintf("alias %q already used by $.issuers[%d]", ic.Alias, j))
		}
		aliases[ic.Alias] = i
		if j, dup := issuers[ic.Issuer]; dup && ic.Issuer != "" {
			ps.Add(path+".issuer", fmt.Sprintf("issuer %q already configured at $.issuers[%d]", ic.Issuer, j))
		}
		issuers[ic.Issuer] = i
	}
	cfg.defaultAudiences()
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// defaultAudiences gives the issuers without "audiences" the resource's:
// the resource itself and its MCP endpoint.
func (cfg *Config) defaultAudiences() {
	for _, ic := range cfg.Issuers {
		if len(ic.Audiences) == 0 && cfg.Resource != "" {
			ic.Audiences = []string{cfg.Resource, cfg.Resource + "/mcp"}
		}
	}
}

// Resolve completes cfg for a gateway served at publicURL (its
// --public-url): without "resource", the public URL is the resource, and
// the default audience of issuers that name none. It fails when an issuer
// is left without an audience.
func (cfg *Config) Resolve(publicURL string) error {
	if cfg.Resource == "" && publicURL != "" {
		cfg.Resource = strings.TrimSuffix(publicURL, "/")
		cfg.defaultAudiences()
	}
	var ps catalog.Problems
	for i, ic := range cfg.Issuers {
		if len(ic.Audiences) == 0 {
			ps.Add(fmt.Sprintf("$.issuers[%d].audiences", i), "required when neither $.resource nor --public-url is set: the audiences (RFC 8707 resource) a token must be issued for")
		}
	}
	return ps.Err()
}

func decodeIssuer(ps *catalog.Problems, data []byte, root string) *IssuerConfig {
	fields, ok := object(ps, data, root)
	if !ok {
		return nil
	}
	ic := &IssuerConfig{SkewSec: DefaultSkewSeconds, Subject: "sub", Tier: DefaultTier, MaxToken: DefaultMaxToken}
	seenAlg := false
	for _, f := range fields {
		path := root + "." + f.key
		switch f.key {
		case "alias":
			if s, ok := str(ps, f.val, path); ok {
				if !identity.ValidAlias(s) {
					ps.Add(path, fmt.Sprintf("%q: want 1 to %d lowercase letters, digits, _ or -", s, identity.MaxAlias))
				}
				ic.Alias = s
			}
		case "issuer":
			if s, ok := str(ps, f.val, path); ok {
				if msg := checkURL(s); msg != "" {
					ps.Add(path, msg)
				}
				ic.Issuer = s
			}
		case "jwks_uri":
			if s, ok := str(ps, f.val, path); ok {
				if msg := checkURL(s); msg != "" {
					ps.Add(path, msg)
				}
				ic.JWKSURI = s
			}
		case "audiences":
			ic.Audiences = strList(ps, f.val, path, func(p, s string) {
				if s == "" {
					ps.Add(p, "must not be empty")
				}
			})
			if ic.Audiences != nil && len(ic.Audiences) == 0 {
				ps.Add(path, "must name at least one audience")
			}
		case "algorithms":
			seenAlg = true
			ic.Algorithms = strList(ps, f.val, path, func(p, s string) {
				switch {
				case s == "none" || strings.HasPrefix(s, "HS"):
					ps.Add(p, fmt.Sprintf("%q is never allowed: tokens must be signed with the issuer's private key", s))
				case !asymmetric[s]:
					ps.Add(p, fmt.Sprintf("unknown algorithm %q (want RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA)", s))
				}
			})
			if ic.Algorithms != nil && len(ic.Algorithms) == 0 {
				ps.Add(path, "must allow at least one algorithm")
			}
		case "clock_skew_s":
			if n, ok := integer(ps, f.val, path); ok {
				if n < 0 || n > MaxSkewSeconds {
					ps.Add(path, fmt.Sprintf("%d: want 0 to %d seconds", n, MaxSkewSeconds))
				}
				ic.SkewSec = n
			}
		case "subject_claim":
			if s, ok := str(ps, f.val, path); ok {
				if s == "" {
					ps.Add(path, "must not be empty")
				}
				ic.Subject = s
			}
		case "tier":
			if s, ok := str(ps, f.val, path); ok {
				if s == "" {
					ps.Add(path, "must not be empty")
				}
				ic.Tier = policy.Tier(s)
			}
		case "key_id_claim":
			if s, ok := str(ps, f.val, path); ok {
				if s == "" {
					ps.Add(path, "must not be empty")
				}
				ic.KeyIDClaim = s
			}
		case "max_token_bytes":
			if n, ok := integer(ps, f.val, path); ok {
				if n < 256 || n > 64<<10 {
					ps.Add(path, fmt.Sprintf("%d: want 256 to %d", n, 64<<10))
				}
				ic.MaxToken = n
			}
		case "retired_key_grace_s":
			if n, ok := integer(ps, f.val, path); ok {
				if n < 0 || n > MaxRetiredGrace {
					ps.Add(path, fmt.Sprintf("%d: want 0 to %d seconds", n, MaxRetiredGrace))
				}
				ic.RetiredGraceSec = n
			}
		case "claims":
			decodeClaims(ps, f.val, path, ic)
		default:
			ps.Add(path, "unknown field (want alias, issuer, jwks_uri, audiences, algorithms, clock_skew_s, subject_claim, tier, key_id_claim, max_token_bytes, retired_key_grace_s, claims)")
		}
	}
	if !seenAlg {
		ic.Algorithms = append([]string(nil), defaultAlgorithms...)
	}
	if ic.Alias == "" {
		ps.Add(root+".alias", "required")
	}
	if ic.Issuer == "" {
		ps.Add(root+".issuer", "required")
	}
	return ic
}

// decodeClaims reads "claims": {claim: {value: policy}}, in file order.
func decodeClaims(ps *catalog.Problems, data []byte, root string, ic *IssuerConfig) {
	claims, ok := object(ps, data, root)
	if !ok {
		return
	}
	for _, c := range claims {
		cpath := root + "." + c.key
		if c.key == "" {
			ps.Add(cpath, "claim name must not be empty")
		}
		values, ok := object(ps, c.val, cpath)
		if !ok {
			continue
		}
		for _, v := range values {
			vpath := cpath + "." + strconv.Quote(v.key)
			p, err := policy.DecodePolicyAt(v.val, vpath)
			if err != nil {
				var ve *catalog.ValidationError
				if errors.As(err, &ve) {
					ps.List = append(ps.List, ve.Problems...)
				} else {
					ps.Add(vpath, err.Error())
				}
				continue
			}
			ic.Mappings = append(ic.Mappings, Mapping{Claim: c.key, Value: v.key, Policy: p})
			if c.key == "scope" || c.key == "scp" {
				ic.Scopes = append(ic.Scopes, v.key)
			}
		}
	}
	if len(ic.Mappings) > MaxMappings {
		ps.Add(root, fmt.Sprintf("%d mapping entries: at most %d per issuer", len(ic.Mappings), MaxMappings))
	}
}

// checkURL: an absolute https URL, or http to a loopback host (tests, a
// provider on the same machine).
func checkURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Sprintf("%q: want an absolute https URL", s)
	}
	if u.Scheme == "http" {
		h := u.Hostname()
		if h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1" {
			return fmt.Sprintf("%q: want https (plain http only to a loopback address)", s)
		}
	}
	if u.Fragment != "" || u.RawQuery != "" {
		return fmt.Sprintf("%q: must not have a query or fragment", s)
	}
	return ""
}

type field struct {
	key string
	val json.RawMessage
}

// object decodes a JSON object keeping its members in file order.
func object(ps *catalog.Problems, data []byte, path string) ([]field, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		ps.Add(path, "not valid JSON: "+err.Error())
		return nil, false
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		ps.Add(path, "must be an object")
		return nil, false
	}
	var out []field
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			ps.Add(path, "not valid JSON: "+err.Error())
			return nil, false
		}
		key := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			ps.Add(path+"."+key, "not valid JSON: "+err.Error())
			return nil, false
		}
		if seen[key] {
			ps.Add(path+"."+key, "duplicate field")
			continue
		}
		seen[key] = true
		out = append(out, field{key, raw})
	}
	if _, err := dec.Token(); err != nil {
		ps.Add(path, "not valid JSON: "+err.Error())
		return nil, false
	}
	if dec.More() {
		ps.Add(path, "trailing data after the object")
		return nil, false
	}
	return out, true
}

func str(ps *catalog.Problems, v json.RawMessage, path string) (string, bool) {
	var s string
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
		ps.Add(path, "must be a string")
		return "", false
	}
	return s, true
}

func integer(ps *catalog.Problems, v json.RawMessage, path string) (int, bool) {
	n, err := strconv.Atoi(string(v))
	if err != nil {
		ps.Add(path, "must be an integer")
		return 0, false
	}
	return n, true
}

func strList(ps *catalog.Problems, v json.RawMessage, path string, check func(path, s string)) []string {
	var raw []json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil || raw == nil {
		ps.Add(path, "must be an array of strings")
		return nil
	}
	out := make([]string, 0, len(raw))
	for i, r := range raw {
		p := fmt.Sprintf("%s[%d]", path, i)
		if s, ok := str(ps, r, p); ok {
			check(p, s)
			out = append(out, s)
		}
	}
	return out
}

// Check cross-checks cfg against compiled policies: every tier an issuer
// or a claim mapping names is declared, and every mapped policy compiles
// over its tier. Each problem names its auth.json path.
func (cfg *Config) Check(set *policy.Set) error {
	var ps catalog.Problems
	for i, ic := range cfg.Issuers {
		if set.Tier(ic.Tier) == nil {
			ps.Add(fmt.Sprintf("$.issuers[%d].tier", i), fmt.Sprintf("tier %q is not declared in policies.json (add it under \"tiers\")", ic.Tier))
			continue
		}
		for _, m := range ic.Mappings {
			path := fmt.Sprintf("$.issuers[%d].claims.%s.%q", i, m.Claim, m.Value)
			tier := ic.Tier
			if m.Policy.Tier != "" {
				tier = m.Policy.Tier
			}
			if set.Tier(tier) == nil {
				ps.Add(path+".tier", fmt.Sprintf("tier %q is not declared in policies.json", tier))
				continue
			}
			p := *m.Policy
			p.Tier = ""
			if _, err := set.Effective(tier, &p); err != nil {
				ps.Add(path, err.Error())
			}
		}
	}
	return ps.Err()
}
