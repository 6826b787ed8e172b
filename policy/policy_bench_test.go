package policy_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/policy"
)

// benchCatalog returns n tools "g<k>/t<i>" spread over 10 packs and 3 classes.
func benchCatalog(n int) *catalog.Catalog {
	cat := &catalog.Catalog{Tools: make([]*catalog.Tool, n)}
	for i := range cat.Tools {
		cat.Tools[i] = &catalog.Tool{
			Index:     i,
			ID:        "g" + strconv.Itoa(i%100) + "/t" + strconv.Itoa(i),
			Packs:     []string{"pack" + strconv.Itoa(i%10)},
			RateClass: catalog.RateClass(i % catalog.NumRateClasses),
		}
	}
	return cat
}

// benchOverride allows a pack, two wildcard groups and every 7th tool by id,
// and denies every 13th tool: a few thousand patterns at 10 000 tools.
func benchOverride(cat *catalog.Catalog) *policy.Policy {
	p := &policy.Policy{AllowTools: []string{"pack/pack3", "g1/*", "g2/*"}, DenyTools: []string{"pack/pack9"}}
	for i, t := range cat.Tools {
		if i%7 == 0 {
			p.AllowTools = append(p.AllowTools, t.ID)
		}
		if i%13 == 0 {
			p.DenyTools = append(p.DenyTools, t.ID)
		}
	}
	return p
}

func benchSet(b *testing.B, cat *catalog.Catalog) *policy.Set {
	doc := &policy.Document{Version: 1, EnforcedDenyTools: []string{"g5/*"}}
	set, err := policy.Compile(doc, cat)
	if err != nil {
		b.Fatal(err)
	}
	return set
}

// BenchmarkEffective_Decide measures the hot-path decision for catalogs of
// 1, 100 and 10 000 tools, against a baseline map lookup of the tool id (what
// a naive per-request deny-set check costs).
func BenchmarkEffective_Decide(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		cat := benchCatalog(n)
		set := benchSet(b, cat)
		e, err := set.Effective(policy.TierAPIKey, benchOverride(cat))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("tools=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			allowed := 0
			for i := 0; b.Loop(); i++ {
				if ok, _ := e.Decide(cat.Tools[i%n]); ok {
					allowed++
				}
			}
			_ = allowed
		})
		b.Run(fmt.Sprintf("tools=%d/baseline_map", n), func(b *testing.B) {
			deny := make(map[string]bool, n)
			for i, t := range cat.Tools {
				deny[t.ID] = i%13 == 0
			}
			b.ReportAllocs()
			allowed := 0
			for i := 0; b.Loop(); i++ {
				if !deny[cat.Tools[i%n].ID] {
					allowed++
				}
			}
			_ = allowed
		})
		b.Run(fmt.Sprintf("tools=%d/foreign_tool", n), func(b *testing.B) {
			// A tool of a newer catalog: matched by patterns, not by index.
			t := &catalog.Tool{Index: 0, ID: "new/tool", Packs: []string{"pack3"}}
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(t)
			}
		})
	}
}

// BenchmarkEffective_DecideParallel is Decide from all CPUs at 10 000 tools.
func BenchmarkEffective_DecideParallel(b *testing.B) {
	cat := benchCatalog(10_000)
	e, err := benchSet(b, cat).Effective(policy.TierAPIKey, benchOverride(cat))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e.Decide(cat.Tools[i%len(cat.Tools)])
			i++
		}
	})
}

// BenchmarkSet_Effective measures compiling an override (about 2 200
// patterns at 10 000 tools), the cost of a PUT of a policy.
func BenchmarkSet_Effective(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		cat := benchCatalog(n)
		set := benchSet(b, cat)
		o := benchOverride(cat)
		b.Run(fmt.Sprintf("tools=%d/patterns=%d", n, len(o.AllowTools)+len(o.DenyTools)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := set.Effective(policy.TierAPIKey, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompile measures compiling the whole document at 10 000 tools.
func BenchmarkCompile(b *testing.B) {
	cat := benchCatalog(10_000)
	doc := mustDoc(b, `{"version":1,"defaults":{"rate_class_quota":{"light":120}},"tiers":{"unknown_wallet":{"deny_tools":["g1/*","pack/pack2"]}},"enforced":{"deny_tools":["g5/*"]}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := policy.Compile(doc, cat); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodePolicy measures decoding the DESIGN seed override.
func BenchmarkDecodePolicy(b *testing.B) {
	data := []byte(seedOverride)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := policy.DecodePolicy(data); err != nil {
			b.Fatal(err)
		}
	}
}
