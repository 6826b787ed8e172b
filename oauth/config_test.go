package oauth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/oauth"
)

func TestDecode(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		cfg, err := oauth.Decode([]byte(`{"version":1,"resource":"https://gw.example/","issuers":[
			{"alias":"corp","issuer":"https://login.example/","key_id_claim":"toolgate_key_id",
			 "claims":{"scope":{"b":{"allow_tools":["x/*"]},"a":{"deny_tools":["y"]}}}}]}`))
		if err != nil {
			t.Fatal(err)
		}
		ic := cfg.Issuers[0]
		if strings.Join(ic.Audiences, " ") != "https://gw.example https://gw.example/mcp" ||
			strings.Join(ic.Algorithms, " ") != "RS256 ES256 EdDSA" || ic.SkewSec != 60 || ic.Tier != "oauth" ||
			len(ic.Mappings) != 2 || ic.Mappings[0].Value != "b" || strings.Join(ic.Scopes, " ") != "b a" {
			t.Fatalf("decoded %+v", ic)
		}
	})
	t.Run("Resolve", func(t *testing.T) {
		cfg, err := oauth.Decode([]byte(`{"issuers":[{"alias":"a","issuer":"https://a.example"},{"alias":"b","issuer":"https://b.example","audiences":["x"]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Resolve(""); err == nil || !strings.Contains(err.Error(), "$.issuers[0].audiences: required") {
			t.Fatalf("no resource, no public URL: %v", err)
		}
		if err := cfg.Resolve("https://gw.example/"); err != nil {
			t.Fatal(err)
		}
		if cfg.Resource != "https://gw.example" || strings.Join(cfg.Issuers[0].Audiences, " ") != "https://gw.example https://gw.example/mcp" || cfg.Issuers[1].Audiences[0] != "x" {
			t.Fatalf("resolved %+v %+v", cfg, cfg.Issuers[0])
		}
	})
	t.Run("Problems", func(t *testing.T) {
		_, err := oauth.Decode([]byte(`{"version":2,"extra":1,"issuers":[
			{"alias":"Corp!","issuer":"http://login.example","algorithms":["none","HS256","RS256","XX1"],"clock_skew_s":3600,
			 "claims":{"scope":{"s":{"allow_tools":"nope"}}},"bogus":true},
			{"issuer":"https://b.example"}]}`))
		var ve *catalog.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("err %v", err)
		}
		want := []string{
			`$.version: unsupported version 2`,
			`$.extra: unknown field`,
			`$.issuers[0].alias: "Corp!"`,
			`$.issuers[0].issuer: "http://login.example": want https`,
			`$.issuers[0].algorithms[0]: "none" is never allowed`,
			`$.issuers[0].algorithms[1]: "HS256" is never allowed`,
			`$.issuers[0].algorithms[3]: unknown algorithm "XX1"`,
			`$.issuers[0].clock_skew_s: 3600: want 0 to 300`,
			`$.issuers[0].claims.scope."s".allow_tools`,
			`$.issuers[0].bogus: unknown field`,
			`$.issuers[1].alias: required`,
		}
		msg := err.Error()
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("missing %q in\n%s", w, strings.ReplaceAll(msg, "; ", "\n"))
			}
		}
	})
}
