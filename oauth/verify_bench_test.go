package oauth_test

import (
	"crypto/rsa"
	"slices"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/oauth/oauthtest"
)

// BenchmarkVerify pairs a first-seen token's whole verification (parse,
// issuer, key lookup, RS256 signature, claims, mapping) with the bare
// signature verification it contains, and a cached token's lookup.
func BenchmarkVerify(b *testing.B) {
	p := oauthtest.Start(b)
	v := newVerifierB(b, p)
	now := time.Now()
	tok := []byte(p.Sign(b, p.Claims("alice", resource, "tools:research", now, time.Hour)))
	if _, err := v.Verify(tok, now); err != nil {
		b.Fatal(err)
	}
	set, err := jwk.Parse(must(p.JWKS()))
	if err != nil {
		b.Fatal(err)
	}
	k, _ := set.Key(0)
	var pub rsa.PublicKey
	if err := jwk.Export(k, &pub); err != nil {
		b.Fatal(err)
	}
	b.Run("BareSignature", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jws.VerifyCompactFast(&pub, tok, jwa.RS256()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("FirstSeen", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.VerifyUncached(tok, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Paired: each iteration times one of each, so that the ratio is taken
	// under the same machine load (the machine is shared and noisy).
	b.Run("Paired", func(b *testing.B) {
		bare := make([]time.Duration, b.N)
		first := make([]time.Duration, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			if _, err := jws.VerifyCompactFast(&pub, tok, jwa.RS256()); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := v.VerifyUncached(tok, now); err != nil {
				b.Fatal(err)
			}
			bare[i], first[i] = t1.Sub(t0), time.Since(t1)
		}
		b.StopTimer()
		slices.Sort(bare)
		slices.Sort(first)
		p := func(l []time.Duration, q int) float64 { return float64(l[min(len(l)-1, len(l)*q/100)].Nanoseconds()) }
		b.ReportMetric(p(bare, 50), "bare-p50-ns")
		b.ReportMetric(p(bare, 99), "bare-p99-ns")
		b.ReportMetric(p(first, 50), "first-p50-ns")
		b.ReportMetric(p(first, 99), "first-p99-ns")
		b.ReportMetric(p(first, 50)/p(bare, 50), "p50-ratio")
	})
	b.Run("Cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func newVerifierB(b *testing.B, p *oauthtest.Provider) *oauth.Verifier {
	cfg, err := oauth.Decode([]byte(`{"version":1,"resource":"` + resource + `","issuers":[{"alias":"corp","issuer":"` + p.Issuer() + `",
		"claims":{"scope":{"tools:research":{"allow_tools":["pack/research"]}}}}]}`))
	if err != nil {
		b.Fatal(err)
	}
	return oauth.NewVerifier(cfg, oauth.Options{})
}
