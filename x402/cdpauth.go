package x402

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ErrCDPKey is returned by CDPAuth for an unusable key.
var ErrCDPKey = errors.New("x402: cdp api key")

// CDPAuth returns a Facilitator.Auth function that mints a fresh CDP JWT
// per request from a CDP Secret API key: keyID is the key's ID (the JWT
// kid and sub) and secret either a PEM EC P-256 private key (ES256) or the
// base64 of a 64-byte Ed25519 key, seed ‖ public key (EdDSA). Claims:
// iss "cdp", aud ["cdp_service"], nbf = iat = now, exp = now + 120 s,
// uris ["<METHOD> <host><path>"]. The returned function is safe for
// concurrent use.
func CDPAuth(keyID, secret string) (func(method, host, path string) (string, error), error) {
	return cdpAuth(keyID, secret, time.Now)
}

// CDPAuthFromEnv is CDPAuth with CDP_API_KEY_ID and CDP_API_KEY_SECRET.
func CDPAuthFromEnv() (func(method, host, path string) (string, error), error) {
	return CDPAuth(os.Getenv("CDP_API_KEY_ID"), os.Getenv("CDP_API_KEY_SECRET"))
}

func cdpAuth(keyID, secret string, now func() time.Time) (func(method, host, path string) (string, error), error) {
	if keyID == "" || secret == "" {
		return nil, fmt.Errorf("%w: key id and secret are required", ErrCDPKey)
	}
	signer, alg, err := parseCDPKey(secret)
	if err != nil {
		return nil, err
	}
	return func(method, host, path string) (string, error) {
		var nb [16]byte
		if _, err := rand.Read(nb[:]); err != nil {
			return "", err
		}
		nonce := hex.EncodeToString(nb[:])
		t := now().Unix()
		h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT", "kid": keyID, "nonce": nonce})
		c, _ := json.Marshal(map[string]any{
			"sub": keyID, "iss": "cdp", "aud": []string{"cdp_service"},
			"nbf": t, "iat": t, "exp": t + 120,
			"uris": []string{strings.ToUpper(method) + " " + host + path},
		})
		input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
		sig, err := signer([]byte(input))
		if err != nil {
			return "", err
		}
		return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
	}, nil
}

func parseCDPKey(secret string) (sign func([]byte) ([]byte, error), alg string, err error) {
	secret = strings.TrimSpace(strings.ReplaceAll(secret, `\n`, "\n"))
	if strings.HasPrefix(secret, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(secret))
		if blk == nil {
			return nil, "", fmt.Errorf("%w: bad PEM", ErrCDPKey)
		}
		var key *ecdsa.PrivateKey
		if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
			key = k
		} else if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
			key, _ = k.(*ecdsa.PrivateKey)
		}
		if key == nil || key.Curve.Params().Name != "P-256" {
			return nil, "", fmt.Errorf("%w: PEM is not an EC P-256 private key", ErrCDPKey)
		}
		return func(msg []byte) ([]byte, error) {
			d := sha256.Sum256(msg)
			r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
			if err != nil {
				return nil, err
			}
			out := make([]byte, 64) // JWS ES256: r ‖ s, 32 bytes each
			r.FillBytes(out[:32])
			s.FillBytes(out[32:])
			return out, nil
		}, "ES256", nil
	}
	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return nil, "", fmt.Errorf("%w: neither PEM nor base64", ErrCDPKey)
	}
	var key ed25519.PrivateKey
	switch len(raw) {
	case ed25519.PrivateKeySize:
		key = ed25519.NewKeyFromSeed(raw[:32])
		if !strings.EqualFold(hex.EncodeToString(key[32:]), hex.EncodeToString(raw[32:])) {
			return nil, "", fmt.Errorf("%w: Ed25519 public half does not match its seed", ErrCDPKey)
		}
	case ed25519.SeedSize:
		key = ed25519.NewKeyFromSeed(raw)
	default:
		return nil, "", fmt.Errorf("%w: Ed25519 key is %d bytes, want 64", ErrCDPKey, len(raw))
	}
	return func(msg []byte) ([]byte, error) { return ed25519.Sign(key, msg), nil }, "EdDSA", nil
}
