package x402

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type facReq struct {
	X402Version         int             `json:"x402Version"`
	PaymentPayload      json.RawMessage `json:"paymentPayload"`
	PaymentRequirements json.RawMessage `json:"paymentRequirements"`
}

// facServer answers every request with status and body, recording requests.
func facServer(t *testing.T, status int, body string) (*httptest.Server, *[]facReq, *[]*http.Request) {
	t.Helper()
	var reqs []facReq
	var hreqs []*http.Request
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var fr facReq
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(b, &fr); err != nil {
				t.Errorf("request body not JSON: %s", b)
			}
		}
		reqs = append(reqs, fr)
		hreqs = append(hreqs, r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s, &reqs, &hreqs
}

func TestFacilitator_Verify(t *testing.T) {
	o := vecOffer(t)
	key := testKey("payer")
	// The client echoes an accepted object with a different maxTimeoutSeconds
	// and lower-case addresses; the facilitator must get OUR requirements.
	a := goodArgs(o, key)
	a.accepted = map[string]any{"maxTimeoutSeconds": 999, "payTo": strings.ToLower(vecPayTo.Hex())}
	p, err := Decode(payHeader(t, o, a), 2)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("OKRequestBody", func(t *testing.T) {
		s, reqs, hreqs := facServer(t, 200, `{"isValid":true,"payer":"0xabc"}`)
		f := &Facilitator{URL: s.URL + "/", HTTP: s.Client()}
		r, err := f.Verify(context.Background(), p, o)
		if err != nil || !r.Valid || r.Payer != "0xabc" {
			t.Fatalf("got %+v %v, want valid", r, err)
		}
		got := (*reqs)[0]
		if (*hreqs)[0].URL.Path != "/verify" {
			t.Errorf("path: got %s, want /verify", (*hreqs)[0].URL.Path)
		}
		if got.X402Version != 2 {
			t.Errorf("x402Version: got %d, want 2", got.X402Version)
		}
		if string(got.PaymentRequirements) != string(o.Requirements(2)) {
			t.Errorf("requirements: got %s, want ours %s", got.PaymentRequirements, o.Requirements(2))
		}
		if string(got.PaymentPayload) != string(p.Raw) {
			t.Errorf("payload: got %s, want client's verbatim %s", got.PaymentPayload, p.Raw)
		}
	})
	tests := []struct {
		name       string
		status     int
		body       string
		wantValid  bool
		wantReason string
		wantErr    bool
	}{
		{"InvalidOn200", 200, `{"isValid":false,"invalidReason":"invalid_exact_evm_signature","payer":"0x1"}`, false, "invalid_exact_evm_signature", false},
		{"InvalidOn400Parsed", 400, `{"isValid":false,"invalidReason":"invalid_payload"}`, false, "invalid_payload", false},
		{"InvalidWithoutReason", 200, `{"isValid":false}`, false, "invalid_payment", false},
		{"ValidOn500IsError", 500, `{"isValid":true}`, false, "", true},
		{"ServerError", 500, `{"error":"boom"}`, false, "", true},
		{"MissingIsValid", 200, `{"payer":"0x1"}`, false, "", true},
		{"NotJSON", 502, `<html>bad gateway</html>`, false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := facServer(t, tt.status, tt.body)
			r, err := (&Facilitator{URL: s.URL, HTTP: s.Client()}).Verify(context.Background(), p, o)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err: got %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrFacilitator) {
				t.Errorf("got %v, want ErrFacilitator", err)
			}
			if r.Valid != tt.wantValid || r.Reason != tt.wantReason {
				t.Errorf("got %v %q, want %v %q", r.Valid, r.Reason, tt.wantValid, tt.wantReason)
			}
		})
	}
	t.Run("V1Requirements", func(t *testing.T) {
		a := goodArgs(o, key)
		a.version, a.scheme, a.network = 1, "exact", "base-sepolia"
		p1, _ := Decode(payHeader(t, o, a), 1)
		s, reqs, _ := facServer(t, 200, `{"isValid":true}`)
		if _, err := (&Facilitator{URL: s.URL, HTTP: s.Client()}).Verify(context.Background(), p1, o); err != nil {
			t.Fatal(err)
		}
		if got := (*reqs)[0]; got.X402Version != 1 || string(got.PaymentRequirements) != string(o.Requirements(1)) {
			t.Errorf("got v%d %s, want v1 %s", got.X402Version, got.PaymentRequirements, o.Requirements(1))
		}
	})
}

func TestFacilitator_Settle(t *testing.T) {
	o := vecOffer(t)
	p, err := Decode(payHeader(t, o, goodArgs(o, testKey("payer"))), 2)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                 string
		status               int
		body                 string
		wantSuccess, pending bool
		wantReason, wantTx   string
		wantErr, wantUnknown bool
	}{
		{name: "OK", status: 200, body: `{"success":true,"transaction":"0xab","network":"eip155:84532","payer":"0x1"}`, wantSuccess: true, wantTx: "0xab"},
		{name: "FailureOn200", status: 200, body: `{"success":false,"errorReason":"invalid_exact_evm_insufficient_balance","transaction":"","network":"eip155:84532"}`, wantReason: "invalid_exact_evm_insufficient_balance"},
		{name: "FailureOn400", status: 400, body: `{"success":false,"errorReason":"invalid_payload"}`, wantReason: "invalid_payload"},
		{name: "Pending", status: 200, body: `{"success":false,"errorReason":"settlement_pending","transaction":"0xcd"}`, pending: true, wantReason: "settlement_pending", wantTx: "0xcd"},
		{name: "SuccessWithoutTx", status: 200, body: `{"success":true,"transaction":""}`, wantErr: true, wantUnknown: true},
		{name: "ServerError", status: 500, body: `{"error":"x"}`, wantErr: true, wantUnknown: true},
		{name: "Unauthorized", status: 401, body: `{"error":"unauthorized"}`, wantErr: true},
		{name: "RateLimited", status: 429, body: `rate limited`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, hreqs := facServer(t, tt.status, tt.body)
			r, err := (&Facilitator{URL: s.URL, HTTP: s.Client()}).Settle(context.Background(), p, o)
			if (err != nil) != tt.wantErr || errors.Is(err, ErrOutcomeUnknown) != tt.wantUnknown {
				t.Fatalf("err: got %v, want error %v unknown %v", err, tt.wantErr, tt.wantUnknown)
			}
			if (*hreqs)[0].URL.Path != "/settle" {
				t.Errorf("path: got %s, want /settle", (*hreqs)[0].URL.Path)
			}
			if r.Success != tt.wantSuccess || r.Pending != tt.pending || r.Reason != tt.wantReason || r.Transaction != tt.wantTx {
				t.Errorf("got %+v, want success %v pending %v reason %q tx %q", r, tt.wantSuccess, tt.pending, tt.wantReason, tt.wantTx)
			}
		})
	}
	t.Run("TimeoutIsUnknown", func(t *testing.T) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(300 * time.Millisecond) }))
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := (&Facilitator{URL: s.URL, HTTP: s.Client()}).Settle(ctx, p, o)
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("got %v, want ErrOutcomeUnknown", err)
		}
	})
	t.Run("RefusedIsNotUnknown", func(t *testing.T) {
		s := httptest.NewServer(http.NotFoundHandler())
		url := s.URL
		s.Close()
		_, err := (&Facilitator{URL: url}).Settle(context.Background(), p, o)
		if err == nil || errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("got %v, want a plain error", err)
		}
	})
}

func TestFacilitator_Supported(t *testing.T) {
	s, _, hreqs := facServer(t, 200, `{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"}],"extensions":["bazaar"],"signers":{"eip155:*":["0x1"]}}`)
	var authCalls []string
	f := &Facilitator{URL: s.URL + "/platform/v2/x402", HTTP: s.Client(), Auth: func(m, h, p string) (string, error) {
		authCalls = append(authCalls, m+" "+h+p)
		return "tok", nil
	}}
	sup, err := f.Supported(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sup.Supports(2, "exact", "eip155:84532") || sup.Supports(1, "exact", "eip155:84532") {
		t.Errorf("got %+v", sup)
	}
	r := (*hreqs)[0]
	if r.Method != "GET" || r.URL.Path != "/platform/v2/x402/supported" || r.Header.Get("Authorization") != "Bearer tok" {
		t.Errorf("got %s %s auth %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
	}
	if want := "GET " + strings.TrimPrefix(s.URL, "http://") + "/platform/v2/x402/supported"; len(authCalls) != 1 || authCalls[0] != want {
		t.Errorf("auth: got %v, want [%s]", authCalls, want)
	}
}

type jwtParts struct {
	header, claims map[string]any
	input          string
	sig            []byte
}

func parseJWTForTest(t *testing.T, tok string) jwtParts {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("got %d parts, want 3", len(parts))
	}
	var j jwtParts
	for i, dst := range []*map[string]any{&j.header, &j.claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	j.input = parts[0] + "." + parts[1]
	j.sig, _ = base64.RawURLEncoding.DecodeString(parts[2])
	return j
}

func TestCDPAuth(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	check := func(t *testing.T, j jwtParts, alg string) {
		t.Helper()
		if j.header["alg"] != alg || j.header["typ"] != "JWT" || j.header["kid"] != "key-1" || len(j.header["nonce"].(string)) != 32 {
			t.Errorf("header: got %v", j.header)
		}
		c := j.claims
		if c["sub"] != "key-1" || c["iss"] != "cdp" || c["nbf"] != float64(now.Unix()) || c["iat"] != float64(now.Unix()) || c["exp"] != float64(now.Unix()+120) {
			t.Errorf("claims: got %v", c)
		}
		if aud, _ := c["aud"].([]any); len(aud) != 1 || aud[0] != "cdp_service" {
			t.Errorf("aud: got %v", c["aud"])
		}
		if uris, _ := c["uris"].([]any); len(uris) != 1 || uris[0] != "POST api.cdp.coinbase.com/platform/v2/x402/verify" {
			t.Errorf("uris: got %v", c["uris"])
		}
	}
	t.Run("Ed25519", func(t *testing.T) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		auth, err := cdpAuth("key-1", base64.StdEncoding.EncodeToString(priv), func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
		tok, err := auth("post", "api.cdp.coinbase.com", "/platform/v2/x402/verify")
		if err != nil {
			t.Fatal(err)
		}
		j := parseJWTForTest(t, tok)
		check(t, j, "EdDSA")
		if !ed25519.Verify(pub, []byte(j.input), j.sig) {
			t.Error("signature does not verify")
		}
		tok2, _ := auth("post", "api.cdp.coinbase.com", "/platform/v2/x402/verify")
		if tok2 == tok {
			t.Error("got the same token twice, want a fresh nonce per request")
		}
	})
	t.Run("ES256", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalECPrivateKey(key)
		pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
		// Env files often carry the PEM with literal \n.
		auth, err := cdpAuth("key-1", strings.ReplaceAll(pemKey, "\n", `\n`), func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
		tok, err := auth("POST", "api.cdp.coinbase.com", "/platform/v2/x402/verify")
		if err != nil {
			t.Fatal(err)
		}
		j := parseJWTForTest(t, tok)
		check(t, j, "ES256")
		d := sha256.Sum256([]byte(j.input))
		if len(j.sig) != 64 || !ecdsa.Verify(&key.PublicKey, d[:], new(big.Int).SetBytes(j.sig[:32]), new(big.Int).SetBytes(j.sig[32:])) {
			t.Error("signature does not verify")
		}
	})
	t.Run("ErrCDPKey", func(t *testing.T) {
		for _, tt := range []struct{ name, id, secret string }{
			{"Empty", "", ""}, {"Garbage", "k", "%%%"}, {"ShortEd25519", "k", base64.StdEncoding.EncodeToString(make([]byte, 10))},
			{"BadPEM", "k", "-----BEGIN EC PRIVATE KEY-----\nxx\n-----END EC PRIVATE KEY-----"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := CDPAuth(tt.id, tt.secret); !errors.Is(err, ErrCDPKey) {
					t.Errorf("got %v, want ErrCDPKey", err)
				}
			})
		}
	})
}
