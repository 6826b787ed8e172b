//go:build !race

package policy_test

import (
	"testing"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/policy"
)

func TestEffective_Decide_ZeroAlloc(t *testing.T) {
	cat := testCatalog()
	set := mustSet(t, `{"version":1,"enforced":{"deny_tools":["pack/dev"]}}`, cat)
	e, err := set.Effective(policy.TierAPIKey, mustPolicy(t, seedOverride))
	if err != nil {
		t.Fatal(err)
	}
	foreign := &catalog.Tool{Index: 2, ID: "email/send", Packs: []string{"comms"}}
	tests := []struct {
		name string
		tool *catalog.Tool
	}{
		{"Compiled", cat.Tools[6]},
		{"ForeignTool", foreign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { e.Decide(tt.tool) }); n != 0 {
				t.Errorf("Decide allocs = %v, want 0", n)
			}
		})
	}
}

func TestSet_Tier_ZeroAlloc(t *testing.T) {
	set := mustSet(t, `{"version":1,"tiers":{"team-research":{"deny_tools":["x"]}}}`, testCatalog())
	for _, tier := range []policy.Tier{policy.TierAPIKey, policy.TierUnknownWallet, "team-research"} {
		t.Run(tier.String(), func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { set.Tier(tier) }); n != 0 {
				t.Errorf("Tier allocs = %v, want 0", n)
			}
		})
	}
}
