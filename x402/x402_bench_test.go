package x402

import (
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
)

// BenchmarkVerify measures the local payment path per request (decode the
// header, verify against the offer) beside its dominant cost, a bare
// secp256k1 public-key recovery of the same digest.
func BenchmarkVerify(b *testing.B) {
	o := vecOffer(b)
	header := readVector(b, "vector_v2.b64")
	p, err := Decode(header, 2)
	if err != nil {
		b.Fatal(err)
	}
	digest := p.Authorization.Digest(o.DomainSeparator())
	sig := append([]byte(nil), p.Signature...)
	sig[64] -= 27

	b.Run("DecodeVerify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p, err := Decode(header, 2)
			if err != nil {
				b.Fatal(err)
			}
			v, _ := o.Verify(p, vecNow, 6*time.Second)
			if !v.OK() {
				b.Fatal(v.Reason)
			}
		}
	})
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(header, 2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if v, _ := o.Verify(p, vecNow, 6*time.Second); !v.OK() {
				b.Fatal(v.Reason)
			}
		}
	})
	// Interleaved: the same load hits both, so the ratio is stable on a
	// busy machine even when absolute times are not.
	b.Run("RatioToEcrecover", func(b *testing.B) {
		b.ReportAllocs()
		var tPay, tRec time.Duration
		for b.Loop() {
			t0 := time.Now()
			p, err := Decode(header, 2)
			if err != nil {
				b.Fatal(err)
			}
			if v, _ := o.Verify(p, vecNow, 6*time.Second); !v.OK() {
				b.Fatal(v.Reason)
			}
			t1 := time.Now()
			if _, err := crypto.Ecrecover(digest[:], sig); err != nil {
				b.Fatal(err)
			}
			tRec += time.Since(t1)
			tPay += t1.Sub(t0)
		}
		b.ReportMetric(float64(tPay)/float64(tRec), "x-ecrecover")
		b.ReportMetric(float64(tPay.Nanoseconds())/float64(b.N), "ns-decode+verify/op")
		b.ReportMetric(float64(tRec.Nanoseconds())/float64(b.N), "ns-ecrecover/op")
	})
	b.Run("BareEcrecover", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := crypto.Ecrecover(digest[:], sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOffer_WithError measures building a 402 that carries a reason.
func BenchmarkOffer_WithError(b *testing.B) {
	o := vecOffer(b)
	b.ReportAllocs()
	for b.Loop() {
		h, _ := o.WithError(ReasonNonceUsed)
		if len(h) == 0 {
			b.Fatal("empty")
		}
	}
}
