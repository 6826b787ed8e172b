package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// ErrIssuerUnavailable is returned when an issuer's keys have never been
// fetched and cannot be now: the token can be neither accepted nor
// refused (the gateway answers 503, and refuses nothing it could decide).
var ErrIssuerUnavailable = errors.New("oauth: issuer keys unavailable")

// Key cache timing. A JWKS is kept for its HTTP cache lifetime
// (Cache-Control max-age, else Expires), bounded to [minKeyLifetime,
// maxKeyLifetime], defaultKeyLifetime without either. A token naming an
// unknown kid triggers a refetch at most once per refetchInterval, so that
// a flood of random kids cannot hammer the issuer; a failed refresh keeps
// the old keys (stale, with a warning) and is retried after
// refetchInterval.
var (
	minKeyLifetime     = 30 * time.Second
	maxKeyLifetime     = 24 * time.Hour
	defaultKeyLifetime = 10 * time.Minute
	refetchInterval    = 30 * time.Second
	fetchTimeout       = 5 * time.Second
	maxFetchBytes      = int64(1 << 20)
)

// pubKey is one verification key of an issuer.
type pubKey struct {
	raw     any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	alg     string // the JWK's "alg", "" when it does not say
	retired time.Time
}

// keySnap is one fetched key set; immutable.
type keySnap struct {
	keys    map[string]*pubKey // by kid ("" for a key without one)
	fetched time.Time
	expires time.Time // refresh at or after this
	stale   bool      // the last refresh failed; these are older keys
	// published: no key of this set is a retired one kept for its
	// grace, so a token verified under it stays valid while it is current.
	published bool
}

// keySource holds an issuer's signing keys: discovery, the JWKS and its
// cache. Reads are lock-free; one refresh runs at a time.
type keySource struct {
	cfg    *IssuerConfig
	client *http.Client
	log    *slog.Logger
	grace  time.Duration

	snap atomic.Pointer[keySnap]

	mu      sync.Mutex
	jwksURI string    // resolved; "" until discovery succeeds
	tried   time.Time // the last refresh attempt; under mu
	fetches atomic.Int64
}

func newKeySource(cfg *IssuerConfig, client *http.Client, log *slog.Logger) *keySource {
	return &keySource{cfg: cfg, client: client, log: log, jwksURI: cfg.JWKSURI,
		grace: time.Duration(cfg.RetiredGraceSec) * time.Second}
}

// alive reports whether kid is a key the issuer still vouches for at now:
// published, or retired less than the grace ago. It does not allocate.
func (s *keySource) alive(kid string, now time.Time) bool {
	sn := s.snap.Load()
	if sn == nil {
		return false
	}
	k := sn.keys[kid]
	return k != nil && (k.retired.IsZero() || now.Sub(k.retired) < s.grace)
}

// key returns the key named kid (the only key when kid is "" and the set
// has one), refreshing the set when it is past its lifetime or does not
// know kid (rate-limited). known is false for a kid the issuer does not
// publish; err is ErrIssuerUnavailable when no key set was ever fetched.
func (s *keySource) key(kid string, now time.Time) (k *pubKey, known bool, err error) {
	sn := s.snap.Load()
	if sn == nil || !now.Before(sn.expires) {
		sn = s.refresh(now, sn, false)
		if sn == nil {
			return nil, false, ErrIssuerUnavailable
		}
	}
	if k := sn.find(kid, now, s.grace); k != nil {
		return k, true, nil
	}
	if fresh := s.refresh(now, sn, true); fresh != nil && fresh != sn {
		if k := fresh.find(kid, now, s.grace); k != nil {
			return k, true, nil
		}
	}
	return nil, false, nil
}

// fresh reports whether every key of sn is published (none is a retired
// one kept for its grace): with sn the current set, a token verified
// under it needs no other check.
func (sn *keySnap) fresh() bool {
	return sn != nil && sn.published
}

func (sn *keySnap) find(kid string, now time.Time, grace time.Duration) *pubKey {
	k := sn.keys[kid]
	if k == nil && kid == "" && len(sn.keys) == 1 {
		for _, only := range sn.keys {
			k = only
		}
	}
	if k == nil || !k.retired.IsZero() && now.Sub(k.retired) >= grace {
		return nil
	}
	return k
}

// refresh fetches the key set unless another caller did since seen was
// loaded, or (unknownKid, or after a failure) one was attempted less than
// refetchInterval ago. It returns the current snapshot (nil: none yet).
func (s *keySource) refresh(now time.Time, seen *keySnap, unknownKid bool) *keySnap {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	if cur != seen {
		return cur // someone refreshed meanwhile
	}
	if !s.tried.IsZero() && now.Sub(s.tried) < refetchInterval && (unknownKid || cur == nil || cur.stale) {
		return cur
	}
	s.tried = now
	keys, lifetime, err := s.fetch(now)
	if err != nil {
		if cur == nil {
			s.log.Warn("oauth: issuer keys unavailable", "issuer", s.cfg.Alias, "err", err)
			return nil
		}
		s.log.Warn("oauth: issuer keys could not be refreshed; serving the cached keys", "issuer", s.cfg.Alias,
			"fetched", cur.fetched.UTC().Format(time.RFC3339), "err", err)
		stale := *cur
		stale.stale, stale.expires = true, now.Add(refetchInterval)
		s.snap.Store(&stale)
		return &stale
	}
	next := &keySnap{keys: keys, fetched: now, expires: now.Add(lifetime), published: true}
	if cur != nil && s.grace > 0 {
		for kid, k := range cur.keys {
			if _, still := keys[kid]; still {
				continue
			}
			r := *k
			if r.retired.IsZero() {
				r.retired = now
			}
			if now.Sub(r.retired) < s.grace {
				keys[kid] = &r
				next.published = false
			}
		}
	}
	s.snap.Store(next)
	return next
}

// fetch discovers the JWKS URI when needed and fetches the key set.
func (s *keySource) fetch(now time.Time) (map[string]*pubKey, time.Duration, error) {
	s.fetches.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	if s.jwksURI == "" {
		uri, err := s.discover(ctx)
		if err != nil {
			return nil, 0, err
		}
		s.jwksURI = uri
	}
	body, hdr, err := s.get(ctx, s.jwksURI)
	if err != nil {
		if s.cfg.JWKSURI == "" {
			s.jwksURI = "" // discover again next time: the issuer may have moved its keys
		}
		return nil, 0, fmt.Errorf("jwks: %w", err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: %w", err)
	}
	keys := make(map[string]*pubKey, set.Len())
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if use, ok := k.KeyUsage(); ok && use != "" && use != "sig" {
			continue
		}
		var raw any
		if err := jwk.Export(k, &raw); err != nil {
			continue // a key type we cannot use
		}
		pk := &pubKey{}
		switch v := raw.(type) {
		case *rsa.PublicKey:
			if v.N.BitLen() < 2048 {
				continue
			}
			pk.raw = v
		case *rsa.PrivateKey:
			pk.raw = &v.PublicKey
		case *ecdsa.PublicKey:
			pk.raw = v
		case *ecdsa.PrivateKey:
			pk.raw = &v.PublicKey
		case ed25519.PublicKey:
			pk.raw = v
		case ed25519.PrivateKey:
			pk.raw = v.Public()
		default:
			continue // symmetric keys ("oct") never verify a token here
		}
		if a, ok := k.Algorithm(); ok {
			pk.alg = a.String()
		}
		kid, _ := k.KeyID()
		keys[kid] = pk
	}
	if len(keys) == 0 {
		return nil, 0, errors.New("jwks: no usable signing key")
	}
	return keys, cacheLifetime(hdr, now), nil
}

// discover reads the issuer's OpenID configuration: its "issuer" must be
// the configured one exactly, its "jwks_uri" an acceptable URL.
func (s *keySource) discover(ctx context.Context) (string, error) {
	body, _, err := s.get(ctx, strings.TrimSuffix(s.cfg.Issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	if doc.Issuer != s.cfg.Issuer {
		return "", fmt.Errorf("discovery: the document names issuer %q, not %q", doc.Issuer, s.cfg.Issuer)
	}
	if msg := checkURL(doc.JWKSURI); msg != "" {
		return "", fmt.Errorf("discovery: jwks_uri %s", msg)
	}
	return doc.JWKSURI, nil
}

func (s *keySource) get(ctx context.Context, url string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(body)) > maxFetchBytes {
		return nil, nil, fmt.Errorf("GET %s: more than %d bytes", url, maxFetchBytes)
	}
	return body, resp.Header, nil
}

// cacheLifetime is how long a response may be used: Cache-Control max-age
// (no-store and no-cache: the minimum), else Expires against Date, bounded.
func cacheLifetime(h http.Header, now time.Time) time.Duration {
	d := time.Duration(-1)
	for _, dir := range strings.Split(h.Get("Cache-Control"), ",") {
		dir = strings.TrimSpace(strings.ToLower(dir))
		switch {
		case dir == "no-store" || dir == "no-cache":
			return minKeyLifetime
		case strings.HasPrefix(dir, "max-age="):
			if n, err := strconv.ParseInt(strings.Trim(dir[len("max-age="):], `"`), 10, 64); err == nil && n >= 0 {
				d = time.Duration(min(n, int64(maxKeyLifetime/time.Second))) * time.Second
			}
		}
	}
	if d < 0 {
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			base := now
			if date, err := http.ParseTime(h.Get("Date")); err == nil {
				base = date
			}
			d = exp.Sub(base)
		}
	}
	if d < 0 {
		return defaultKeyLifetime
	}
	return min(max(d, minKeyLifetime), maxKeyLifetime)
}
