package policy_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/toolgate/toolgate/policy"
)

const namedTiers = `{"version":1,
  "defaults":{"rate_class_quota":{"light":100}},
  "tiers":{"partner":{"deny_tools":["code_execute"],"rate_class_quota":{"light":2}},
           "oauth":{"daily_spend_cap_usd":3}}}`

func TestSet_Tiers(t *testing.T) {
	set := mustSet(t, namedTiers, testCatalog())
	t.Run("Order", func(t *testing.T) {
		want := []policy.Tier{policy.TierAPIKey, policy.TierWallet, policy.TierUnknownWallet, "oauth", "partner"}
		if got := set.Tiers(); !reflect.DeepEqual(got, want) {
			t.Errorf("Tiers() = %q, want %q", got, want)
		}
	})
	t.Run("Tier", func(t *testing.T) {
		for _, tier := range set.Tiers() {
			e := set.Tier(tier)
			if e == nil {
				t.Fatalf("Tier(%q) = nil, want a policy", tier)
			}
			if e.Tier() != tier {
				t.Errorf("Tier(%q).Tier() = %q, want %q", tier, e.Tier(), tier)
			}
		}
		if e := set.Tier(""); e != nil {
			t.Errorf("Tier(\"\") = %p, want nil", e)
		}
	})
	t.Run("OverrideSelectsTier", func(t *testing.T) {
		e, err := set.Effective(policy.TierAPIKey, mustPolicy(t, `{"tier":"partner","rate_class_quota":{"heavy":1}}`))
		if err != nil {
			t.Fatal(err)
		}
		if e.Tier() != "partner" {
			t.Errorf("Tier() = %q, want partner", e.Tier())
		}
		if ok, r := e.Decide(tool(set.Catalog(), "code_execute")); ok || r != policy.ReasonDenyTools {
			t.Errorf("Decide(code_execute) = %t, %q; want false, deny_tools", ok, r)
		}
		if got := e.Quota(0); got != policy.Unlimited {
			t.Errorf("light quota = %d, want unlimited (the override's table replaces the tier's)", got)
		}
	})
	t.Run("OverrideWithoutTierKeepsAssigned", func(t *testing.T) {
		e, err := set.Effective(policy.TierWallet, mustPolicy(t, `{"mode":"open"}`))
		if err != nil {
			t.Fatal(err)
		}
		if e.Tier() != policy.TierWallet {
			t.Errorf("Tier() = %q, want wallet", e.Tier())
		}
	})
	t.Run("ErrUnknownTier", func(t *testing.T) {
		_, err := set.Effective(policy.TierAPIKey, &policy.Policy{Tier: "partnr"})
		if !errors.Is(err, policy.ErrUnknownTier) {
			t.Errorf("errors.Is(%v, ErrUnknownTier) = false, want true", err)
		}
		got := problemsOf(t, err)
		want := []string{`$.tier: unknown tier "partnr" (want one of the tiers of policies.json: api_key, wallet, unknown_wallet, oauth, partner)`}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("problems = %q, want %q", got, want)
		}
	})
}

func TestDocument_Validate_Tiers(t *testing.T) {
	doc := &policy.Document{Version: 1, Defaults: policy.Policy{Tier: "oauth"}, Tiers: map[policy.Tier]policy.Policy{
		"bad name": {},
		"oauth":    {Tier: "partner"},
		"ok":       {},
	}}
	got := problemsOf(t, doc.Validate())
	want := []string{
		"defaults.tier: only an override selects a tier (not the defaults or a tier)",
		`tiers["bad name"]: tier name "bad name" must be 1 to 64 letters, digits, "_" or "-"`,
		"tiers.oauth.tier: only an override selects a tier (not the defaults or a tier)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
	t.Run("DefaultTiersOptionalInCode", func(t *testing.T) {
		set, err := policy.Compile(&policy.Document{Version: 1}, testCatalog())
		if err != nil {
			t.Fatal(err)
		}
		for _, tier := range []policy.Tier{policy.TierAPIKey, policy.TierWallet, policy.TierUnknownWallet} {
			if set.Tier(tier) == nil {
				t.Errorf("Tier(%q) = nil, want the defaults", tier)
			}
		}
	})
}

func TestPolicy_MarshalJSON_Tier(t *testing.T) {
	p := mustPolicy(t, `{"deny_tools":["x"],"tier":"team-research"}`)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"tier":"team-research","deny_tools":["x"]}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	if again := mustPolicy(t, string(b)); !reflect.DeepEqual(again, p) {
		t.Errorf("re-decoded %+v, want %+v", again, p)
	}
}
