package x402

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	v2 := readVector(t, "vector_v2.b64")
	raw, err := base64.StdEncoding.DecodeString(string(v2))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		p, err := Decode(v2, 2)
		if err != nil {
			t.Fatal(err)
		}
		if p.Version != 2 || p.Scheme != "exact" || p.Network != "eip155:84532" || p.Accepted.Amount != "10000" {
			t.Errorf("got %d %s %s %s, want 2 exact eip155:84532 10000", p.Version, p.Scheme, p.Network, p.Accepted.Amount)
		}
		if !bytes.Equal(p.Raw, raw) {
			t.Errorf("Raw: got %q, want the decoded JSON verbatim", p.Raw)
		}
		if p.Authorization.From != vecPayer || len(p.Signature) != 65 {
			t.Errorf("got from %s sig %d bytes, want %s 65", p.Authorization.From.Hex(), len(p.Signature), vecPayer.Hex())
		}
		if got := p.Authorization.Nonce[0]; got != 0x9c {
			t.Errorf("nonce[0]: got %#x, want 0x9c", got)
		}
	})
	t.Run("V1", func(t *testing.T) {
		p, err := Decode(readVector(t, "vector_v1.b64"), 1)
		if err != nil {
			t.Fatal(err)
		}
		if p.Version != 1 || p.Network != "base-sepolia" || p.Scheme != "exact" {
			t.Errorf("got %d %s %s, want 1 base-sepolia exact", p.Version, p.Network, p.Scheme)
		}
	})
	t.Run("VersionDetection", func(t *testing.T) {
		for _, h := range []string{"vector_v1.b64", "vector_v2.b64"} {
			if _, err := Decode(readVector(t, h), 0); err != nil {
				t.Errorf("%s: got %v, want nil", h, err)
			}
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		p, _ := Decode(v2, 2)
		again, err := Decode([]byte(base64.StdEncoding.EncodeToString(p.Raw)), 2)
		if err != nil {
			t.Fatal(err)
		}
		if again.Authorization != p.Authorization || !bytes.Equal(again.Signature, p.Signature) || again.Accepted.PayTo != p.Accepted.PayTo {
			t.Errorf("got %+v, want %+v", again.Authorization, p.Authorization)
		}
	})
	lenient := []struct {
		name string
		enc  *base64.Encoding
	}{
		{"RawStd", base64.RawStdEncoding}, {"URL", base64.URLEncoding}, {"RawURL", base64.RawURLEncoding},
	}
	for _, tt := range lenient {
		t.Run("Lenient"+tt.name, func(t *testing.T) {
			p, err := Decode([]byte(tt.enc.EncodeToString(raw)), 2)
			if err != nil || p.Authorization.From != vecPayer {
				t.Errorf("got %v, want the vector decoded", err)
			}
		})
	}
	t.Run("Whitespace", func(t *testing.T) {
		if _, err := Decode(append(append([]byte("  "), v2...), ' '), 2); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})

	enc := func(s string) []byte { return []byte(base64.StdEncoding.EncodeToString([]byte(s))) }
	bad := []struct {
		name   string
		header []byte
		ver    int
		want   string
	}{
		{"Empty", nil, 2, "empty"},
		{"TooLarge", bytes.Repeat([]byte("A"), MaxHeaderSize+4), 2, "limit"},
		{"NotBase64", []byte("!!!not base64!!!"), 2, "base64"},
		{"NotJSON", enc("hello"), 2, "json"},
		{"TrailingGarbage", enc(string(raw) + "x"), 2, "json"},
		{"Array", enc("[1,2]"), 2, "json"},
		{"NoVersion", enc(`{"payload":{}}`), 2, "x402Version missing"},
		{"VersionString", enc(`{"x402Version":"2"}`), 2, "json"},
		{"Version3", enc(`{"x402Version":3,"payload":{}}`), 0, "unsupported x402Version 3"},
		{"V2NoAccepted", enc(`{"x402Version":2,"payload":{}}`), 2, "accepted"},
		{"V1NoNetwork", enc(`{"x402Version":1,"scheme":"exact","payload":{}}`), 1, "scheme and network"},
		{"NoPayload", enc(`{"x402Version":2,"accepted":{"scheme":"exact"}}`), 2, "payload missing"},
		{"WrongTypeSignature", enc(`{"x402Version":2,"accepted":{},"payload":{"signature":5}}`), 2, "json"},
		{"V2InV1Header", v2, 1, "in a v1 header"},
	}
	for _, tt := range bad {
		t.Run("ErrMalformed"+tt.name, func(t *testing.T) {
			_, err := Decode(tt.header, tt.ver)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrMalformed mentioning %q", err, tt.want)
			}
		})
	}
	t.Run("MaxSizeAccepted", func(t *testing.T) {
		// A large but legal header (echoed extensions) still decodes.
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		m["extensions"] = map[string]any{"bazaar": strings.Repeat("x", 8000)}
		big, _ := json.Marshal(m)
		if _, err := Decode([]byte(base64.StdEncoding.EncodeToString(big)), 2); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
}

func TestAppendSettleResponse(t *testing.T) {
	r := SettleResult{Success: true, Payer: vecPayer.Hex(), Transaction: "0xabab", Network: "eip155:84532"}
	h := AppendSettleResponse(nil, r.Response())
	raw, err := base64.StdEncoding.DecodeString(string(h))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"success":true,"payer":"0x680a3d384acf515f0fC5FaE2eE41A95b6905deF7","transaction":"0xabab","network":"eip155:84532"}`
	if string(raw) != want {
		t.Errorf("got %s, want %s", raw, want)
	}
	pending := SettleResult{Pending: true, Transaction: "0x01", Network: "base-sepolia"}.Response()
	if pending.Success || pending.ErrorReason != ReasonSettlementPending {
		t.Errorf("pending: got %+v, want success:false settlement_pending", pending)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(readVector(f, "vector_v2.b64"), 2)
	f.Add(readVector(f, "vector_v1.b64"), 1)
	f.Add([]byte("eyJ4NDAyVmVyc2lvbiI6Mn0="), 0)
	f.Add([]byte("%%%"), 0)
	uo := uptoVecOffer(f)
	f.Add(uptoVecHeader(f, uo, nil), 2) // an upto (Permit2) payment
	o := vecOffer(f)
	f.Fuzz(func(t *testing.T, header []byte, version int) {
		p, err := Decode(header, version%3)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
			return
		}
		_, _ = o.Verify(p, vecNow, 0)
		_, _ = uo.Verify(p, vecNow, 0)
	})
}
