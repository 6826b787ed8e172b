package policy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
)

// seedOverride is the per-key override of the DESIGN seed.
const seedOverride = `{"allow_tools":["whatsapp/send","email/send","extract/structured","image/generate"],"deny_tools":["code_execute","browser/act"],"rate_class_quota":{"light":120,"medium":30,"heavy":5}}`

func mustDoc(t testing.TB, s string) *policy.Document {
	t.Helper()
	doc, err := policy.DecodeDocument([]byte(s))
	if err != nil {
		t.Fatalf("DecodeDocument(%s): %v", s, err)
	}
	return doc
}

func mustPolicy(t testing.TB, s string) *policy.Policy {
	t.Helper()
	p, err := policy.DecodePolicy([]byte(s))
	if err != nil {
		t.Fatalf("DecodePolicy(%s): %v", s, err)
	}
	return p
}

func mustSet(t testing.TB, doc string, cat *catalog.Catalog) *policy.Set {
	t.Helper()
	s, err := policy.Compile(mustDoc(t, doc), cat)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func tool(cat *catalog.Catalog, id string) *catalog.Tool {
	for _, t := range cat.Tools {
		if t.ID == id {
			return t
		}
	}
	panic("no tool " + id)
}

func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	var ve *catalog.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got error %v (%T), want *catalog.ValidationError", err, err)
	}
	var out []string
	for _, p := range ve.Problems {
		out = append(out, p.String())
	}
	return out
}

func TestSet_Effective_Seed(t *testing.T) {
	cat := testCatalog()
	set := mustSet(t, `{"version":1}`, cat)
	e, err := set.Effective(policy.TierAPIKey, mustPolicy(t, seedOverride))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tool    string
		allowed bool
		reason  policy.Reason
	}{
		{"DenyTools", "code_execute", false, policy.ReasonDenyTools},
		{"DenyWinsOverMissingAllow", "browser/act", false, policy.ReasonDenyTools},
		{"NotInAllowTools", "search/web", false, policy.ReasonNotInAllowTools},
		{"Allowed", "email/send", true, policy.ReasonNone},
		{"AllowedHeavy", "image/generate", true, policy.ReasonNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, r := e.Decide(tool(cat, tt.tool))
			if ok != tt.allowed || r != tt.reason {
				t.Errorf("Decide(%s) = %t, %q; want %t, %q", tt.tool, ok, r, tt.allowed, tt.reason)
			}
		})
	}
	t.Run("Quota", func(t *testing.T) {
		want := map[catalog.RateClass]int{catalog.Light: 120, catalog.Medium: 30, catalog.Heavy: 5}
		for c, n := range want {
			if got := e.Quota(c); got != n {
				t.Errorf("Quota(%s) = %d, want %d", c, got, n)
			}
		}
	})
	t.Run("ReasonStrings", func(t *testing.T) {
		for r, want := range map[policy.Reason]string{
			policy.ReasonNone: "", policy.ReasonDenyTools: "deny_tools",
			policy.ReasonNotInAllowTools: "not_in_allow_tools", policy.ReasonEnforcedDeny: "enforced_deny",
		} {
			if got := r.String(); got != want {
				t.Errorf("Reason(%d).String() = %q, want %q", r, got, want)
			}
		}
	})
}

// TestSet_Effective_Layering checks defaults ← tier ← override field by field.
func TestSet_Effective_Layering(t *testing.T) {
	cat := testCatalog()
	const doc = `{"version":1,
	  "defaults":{"rate_class_quota":{"light":120,"medium":30,"heavy":10},"daily_spend_cap_usd":"1.5","spend_reset_tz":"Asia/Tokyo","deny_tools":["search/web"]},
	  "tiers":{"api_key":{"daily_spend_cap_usd":50,"allow_tools":["email/*"]},
	           "unknown_wallet":{"deny_tools":["code_execute"],"daily_spend_cap_usd":null,"mode":"strict"}},
	  "enforced":{"deny_tools":["pack/media"]}}`
	set := mustSet(t, doc, cat)
	type want struct {
		capSet  bool
		cap     money.Micros
		tz      string
		light   int
		heavy   int
		mode    policy.Mode
		allowed []string // every other tool is denied
	}
	tests := []struct {
		name     string
		tier     policy.Tier
		override string // "" = none
		want     want
	}{
		{"DefaultsThroughTier", policy.TierWallet, "",
			want{true, 1_500_000, "Asia/Tokyo", 120, 10, policy.ModeOpen,
				[]string{"email/send", "email/read", "whatsapp/send", "extract/structured", "code_execute", "browser/act"}}},
		{"TierReplacesCapAndAllow", policy.TierAPIKey, "",
			want{true, 50_000_000, "Asia/Tokyo", 120, 10, policy.ModeOpen, []string{"email/send", "email/read"}}},
		{"TierNullLiftsCap", policy.TierUnknownWallet, "",
			want{false, 0, "Asia/Tokyo", 120, 10, policy.ModeStrict, nil}},
		{"OverrideAbsentCapKeepsTier", policy.TierAPIKey, `{"mode":"open"}`,
			want{true, 50_000_000, "Asia/Tokyo", 120, 10, policy.ModeOpen, []string{"email/send", "email/read"}}},
		{"OverrideNullLiftsTierCap", policy.TierAPIKey, `{"daily_spend_cap_usd":null}`,
			want{false, 0, "Asia/Tokyo", 120, 10, policy.ModeOpen, []string{"email/send", "email/read"}}},
		{"OverrideCapReplaces", policy.TierUnknownWallet, `{"daily_spend_cap_usd":0.25}`,
			want{true, 250_000, "Asia/Tokyo", 120, 10, policy.ModeStrict, nil}},
		{"OverrideQuotaReplacesWholeTable", policy.TierAPIKey, `{"rate_class_quota":{"heavy":2}}`,
			want{true, 50_000_000, "Asia/Tokyo", -1, 2, policy.ModeOpen, []string{"email/send", "email/read"}}},
		{"OverrideAllowReplacesTierAllow", policy.TierAPIKey, `{"allow_tools":["pack/research"]}`,
			want{true, 50_000_000, "Asia/Tokyo", 120, 10, policy.ModeOpen, []string{"extract/structured", "browser/act"}}},
		{"OverrideDenyReplacesDefaultsDeny", policy.TierWallet, `{"deny_tools":[],"spend_reset_tz":"UTC"}`,
			want{true, 1_500_000, "UTC", 120, 10, policy.ModeOpen,
				[]string{"email/send", "email/read", "whatsapp/send", "extract/structured", "search/web", "code_execute", "browser/act"}}},
		{"OverrideOpensStrictTier", policy.TierUnknownWallet, `{"mode":"open"}`,
			want{false, 0, "Asia/Tokyo", 120, 10, policy.ModeOpen,
				[]string{"email/send", "email/read", "whatsapp/send", "extract/structured", "search/web", "browser/act"}}},
		{"OverrideEmptyAllowDeniesAll", policy.TierWallet, `{"allow_tools":[]}`,
			want{true, 1_500_000, "Asia/Tokyo", 120, 10, policy.ModeOpen, nil}},
		{"EnforcedNotLiftedByAllow", policy.TierAPIKey, `{"allow_tools":["*","image/generate","pack/media"],"deny_tools":[]}`,
			want{true, 50_000_000, "Asia/Tokyo", 120, 10, policy.ModeOpen,
				[]string{"email/send", "email/read", "whatsapp/send", "extract/structured", "search/web", "code_execute", "browser/act"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o *policy.Policy
			if tt.override != "" {
				o = mustPolicy(t, tt.override)
			}
			e, err := set.Effective(tt.tier, o)
			if err != nil {
				t.Fatal(err)
			}
			c, ok := e.SpendCap()
			if ok != tt.want.capSet || c != tt.want.cap {
				t.Errorf("SpendCap() = %v, %t; want %v, %t", c, ok, tt.want.cap, tt.want.capSet)
			}
			if got := e.Location().String(); got != tt.want.tz {
				t.Errorf("Location() = %s, want %s", got, tt.want.tz)
			}
			if got := e.Quota(catalog.Light); got != tt.want.light {
				t.Errorf("Quota(light) = %d, want %d", got, tt.want.light)
			}
			if got := e.Quota(catalog.Heavy); got != tt.want.heavy {
				t.Errorf("Quota(heavy) = %d, want %d", got, tt.want.heavy)
			}
			if got := e.Mode(); got != tt.want.mode {
				t.Errorf("Mode() = %s, want %s", got, tt.want.mode)
			}
			var allowed []string
			for _, tl := range cat.Tools {
				if ok, _ := e.Decide(tl); ok {
					allowed = append(allowed, tl.ID)
				}
			}
			if !reflect.DeepEqual(allowed, tt.want.allowed) {
				t.Errorf("allowed tools = %v, want %v", allowed, tt.want.allowed)
			}
			if ok, r := e.Decide(tool(cat, "image/generate")); ok || r != policy.ReasonEnforcedDeny {
				t.Errorf("Decide(image/generate) = %t, %q; want false, enforced_deny", ok, r)
			}
		})
	}
}

func TestEffective_Decide_Patterns(t *testing.T) {
	cat := testCatalog()
	tests := []struct {
		name   string
		policy string
		tool   string
		reason policy.Reason
	}{
		{"ExactAllow", `{"allow_tools":["email/send"]}`, "email/send", policy.ReasonNone},
		{"ExactIsNotPrefix", `{"allow_tools":["email"]}`, "email/send", policy.ReasonNotInAllowTools},
		{"WildcardAllow", `{"allow_tools":["email/*"]}`, "email/read", policy.ReasonNone},
		{"WildcardMiss", `{"allow_tools":["email/*"]}`, "whatsapp/send", policy.ReasonNotInAllowTools},
		{"WildcardNoSlash", `{"allow_tools":["e*"]}`, "extract/structured", policy.ReasonNone},
		{"StarAll", `{"deny_tools":["*"]}`, "search/web", policy.ReasonDenyTools},
		{"PackAllow", `{"allow_tools":["pack/comms"]}`, "whatsapp/send", policy.ReasonNone},
		{"PackMiss", `{"allow_tools":["pack/comms"]}`, "search/web", policy.ReasonNotInAllowTools},
		{"PackSecondPack", `{"deny_tools":["pack/dev"]}`, "browser/act", policy.ReasonDenyTools},
		{"DenyWinsExact", `{"allow_tools":["code_execute"],"deny_tools":["code_execute"]}`, "code_execute", policy.ReasonDenyTools},
		{"DenyPackWinsOverWildcardAllow", `{"allow_tools":["*"],"deny_tools":["pack/comms"]}`, "email/read", policy.ReasonDenyTools},
		{"UnknownPatternMatchesNothing", `{"allow_tools":["nope/*","pack/nope","nope"]}`, "email/send", policy.ReasonNotInAllowTools},
		{"OpenNoAllowList", `{"mode":"open"}`, "code_execute", policy.ReasonNone},
		{"StrictNoAllowList", `{"mode":"strict"}`, "email/send", policy.ReasonNotInAllowTools},
		{"StrictAllowed", `{"mode":"strict","allow_tools":["pack/research"]}`, "search/web", policy.ReasonNone},
		{"StrictDenyStillWins", `{"mode":"strict","allow_tools":["*"],"deny_tools":["search/*"]}`, "search/web", policy.ReasonDenyTools},
	}
	set := mustSet(t, `{"version":1}`, cat)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := set.Effective(policy.TierAPIKey, mustPolicy(t, tt.policy))
			if err != nil {
				t.Fatal(err)
			}
			ok, r := e.Decide(tool(cat, tt.tool))
			if ok != (tt.reason == policy.ReasonNone) || r != tt.reason {
				t.Errorf("Decide(%s) = %t, %q; want reason %q", tt.tool, ok, r, tt.reason)
			}
		})
	}
}

// TestEffective_Decide_ForeignCatalog checks that a tool of a newer catalog
// (other pointers, other indexes) is decided as a recompiled policy would.
func TestEffective_Decide_ForeignCatalog(t *testing.T) {
	old := testCatalog()
	const doc = `{"version":1,"defaults":{"allow_tools":["pack/comms","new/*"],"deny_tools":["email/read"]},"enforced":{"deny_tools":["bad/*"]},
	  "tiers":{"wallet":{"mode":"strict","deny_tools":["pack/comms"]},"unknown_wallet":{"mode":"strict","allow_tools":["lonely","*"]}}}`
	set := mustSet(t, doc, old)
	newCat := testCatalog()
	extra := []*catalog.Tool{
		{ID: "new/tool", Packs: nil},
		{ID: "bad/tool", Packs: []string{"comms"}},
		{ID: "other", Packs: []string{"comms"}},
		{ID: "lonely"},
	}
	for _, tl := range extra {
		tl.Index = len(newCat.Tools)
		newCat.Tools = append(newCat.Tools, tl)
	}
	// Reverse so that indexes differ from the compiled catalog.
	for i, j := 0, len(newCat.Tools)-1; i < j; i, j = i+1, j-1 {
		newCat.Tools[i], newCat.Tools[j] = newCat.Tools[j], newCat.Tools[i]
	}
	for i, tl := range newCat.Tools {
		tl.Index = i
	}
	fresh, err := policy.Compile(set.Document(), newCat)
	if err != nil {
		t.Fatal(err)
	}
	for _, tier := range set.Tiers() {
		stale, current := set.Tier(tier), fresh.Tier(tier)
		for _, tl := range newCat.Tools {
			t.Run(fmt.Sprintf("%s/%s", tier, tl.ID), func(t *testing.T) {
				gotOK, got := stale.Decide(tl)
				wantOK, want := current.Decide(tl)
				if gotOK != wantOK || got != want {
					t.Errorf("stale Decide = %t, %q; want %t, %q", gotOK, got, wantOK, want)
				}
			})
		}
	}
	if ok, r := fresh.Tier(policy.TierAPIKey).Decide(tool(newCat, "bad/tool")); ok || r != policy.ReasonEnforcedDeny {
		t.Errorf("Decide(bad/tool) = %t, %q; want false, enforced_deny", ok, r)
	}
}

func TestDecodePolicy_RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"Seed", seedOverride, seedOverride},
		{"Empty", `{}`, `{}`},
		{"NullCap", `{"daily_spend_cap_usd":null}`, `{"daily_spend_cap_usd":null}`},
		{"CapString", `{"daily_spend_cap_usd":"5"}`, `{"daily_spend_cap_usd":5.0}`},
		{"CapZero", `{"daily_spend_cap_usd":0}`, `{"daily_spend_cap_usd":0.0}`},
		{"EmptyLists", `{"allow_tools":[],"deny_tools":[]}`, `{"allow_tools":[],"deny_tools":[]}`},
		{"Dedupe", `{"deny_tools":["a","b","a"]}`, `{"deny_tools":["a","b"]}`},
		{"FieldOrder", `{"mode":"strict","spend_reset_tz":"UTC","rate_class_quota":{"heavy":1,"light":2}}`,
			`{"rate_class_quota":{"light":2,"heavy":1},"spend_reset_tz":"UTC","mode":"strict"}`},
		{"EmptyQuota", `{"rate_class_quota":{}}`, `{"rate_class_quota":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPolicy(t, tt.in)
			got, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("marshal = %s, want %s", got, tt.want)
			}
			again := mustPolicy(t, string(got))
			if !reflect.DeepEqual(again, p) {
				t.Errorf("re-decoded %+v, want %+v", again, p)
			}
		})
	}
	t.Run("AbsentVersusNull", func(t *testing.T) {
		absent, null := mustPolicy(t, `{}`), mustPolicy(t, `{"daily_spend_cap_usd":null}`)
		if absent.DailySpendCap != nil {
			t.Errorf("absent cap = %+v, want nil", absent.DailySpendCap)
		}
		if null.DailySpendCap == nil || !null.DailySpendCap.NoCap {
			t.Errorf("null cap = %+v, want NoCap", null.DailySpendCap)
		}
	})
	t.Run("AbsentVersusEmptyAllow", func(t *testing.T) {
		if p := mustPolicy(t, `{}`); p.AllowTools != nil {
			t.Errorf("absent allow_tools = %#v, want nil", p.AllowTools)
		}
		if p := mustPolicy(t, `{"allow_tools":[]}`); p.AllowTools == nil || len(p.AllowTools) != 0 {
			t.Errorf("empty allow_tools = %#v, want non-nil empty", p.AllowTools)
		}
	})
}

func TestDocument_MarshalJSON(t *testing.T) {
	doc := mustDoc(t, `{"version":1,"tiers":{"wallet":{"mode":"strict"}},"enforced":{"deny_tools":["x"]}}`)
	got, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"fail_mode":"open","defaults":{},"tiers":{"api_key":{},"wallet":{"mode":"strict"},"unknown_wallet":{}},"enforced":{"deny_tools":["x"]}}`
	if string(got) != want {
		t.Errorf("marshal = %s, want %s", got, want)
	}
	var again policy.Document
	if err := json.Unmarshal(got, &again); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&again, doc) {
		t.Errorf("re-decoded %+v, want %+v", again, *doc)
	}
}

func TestPolicy_UnmarshalJSON(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		var body struct {
			Name   string         `json:"name"`
			Policy *policy.Policy `json:"policy"`
		}
		if err := json.Unmarshal([]byte(`{"name":"a","policy":{"deny_tools":["x"]}}`), &body); err != nil {
			t.Fatal(err)
		}
		if body.Policy == nil || !reflect.DeepEqual(body.Policy.DenyTools, []string{"x"}) {
			t.Errorf("policy = %+v, want deny_tools [x]", body.Policy)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		var p policy.Policy
		err := json.Unmarshal([]byte(`{"mode":"x"}`), &p)
		got := problemsOf(t, err)
		if len(got) != 1 || !strings.HasPrefix(got[0], "$.mode: ") {
			t.Errorf("problems = %q, want one at $.mode", got)
		}
	})
}

func TestDecodePolicyAt(t *testing.T) {
	_, err := policy.DecodePolicyAt([]byte(`{"deny_tools":[1]}`), "policy")
	got := problemsOf(t, err)
	want := []string{"policy.deny_tools[0]: must be a string, not a number"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
}

func TestDecodeDocument_Limits(t *testing.T) {
	t.Run("TooManyPatterns", func(t *testing.T) {
		list := make([]string, policy.MaxPatterns+1)
		for i := range list {
			list[i] = fmt.Sprintf("t%d", i)
		}
		raw, _ := json.Marshal(map[string]any{"deny_tools": list})
		_, err := policy.DecodePolicy(raw)
		got := problemsOf(t, err)
		want := []string{fmt.Sprintf("$.deny_tools: more than %d patterns", policy.MaxPatterns)}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("problems = %q, want %q", got, want)
		}
	})
	t.Run("MaxPatternsOK", func(t *testing.T) {
		list := make([]string, policy.MaxPatterns)
		for i := range list {
			list[i] = fmt.Sprintf("t%d", i)
		}
		raw, _ := json.Marshal(map[string]any{"deny_tools": list})
		if _, err := policy.DecodePolicy(raw); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	t.Run("PatternTooLong", func(t *testing.T) {
		long := strings.Repeat("a", policy.MaxPatternLen+1)
		_, err := policy.DecodePolicy([]byte(`{"allow_tools":["` + long + `","` + long[1:] + `"]}`))
		got := problemsOf(t, err)
		want := []string{fmt.Sprintf("$.allow_tools[0]: pattern longer than %d bytes", policy.MaxPatternLen)}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("problems = %q, want %q", got, want)
		}
	})
	t.Run("ProblemsCapped", func(t *testing.T) {
		bad := make([]string, 500)
		for i := range bad {
			bad[i] = "a*b"
		}
		raw, _ := json.Marshal(map[string]any{"deny_tools": bad})
		_, err := policy.DecodePolicy(raw)
		got := problemsOf(t, err)
		if len(got) != 101 || got[100] != "$: 400 more problems not shown" {
			t.Errorf("got %d problems ending %q, want 101 ending with the count", len(got), got[len(got)-1])
		}
	})
}

func TestLoad(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		doc, err := policy.Load(filepath.Join("testdata", "documents", "design_example.json"))
		if err != nil {
			t.Fatal(err)
		}
		if doc.Tiers[policy.TierAPIKey].DailySpendCap.Limit != 50*money.PerUSD {
			t.Errorf("api_key cap = %v, want 50", doc.Tiers[policy.TierAPIKey].DailySpendCap.Limit)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		_, err := policy.Load(filepath.Join(t.TempDir(), "nope.json"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("got %v, want os.ErrNotExist", err)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "p.json")
		os.WriteFile(path, []byte(`{"version":2}`), 0o600)
		_, err := policy.Load(path)
		var ve *catalog.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), path) {
			t.Errorf("got %v, want a ValidationError naming %s", err, path)
		}
	})
}

func TestCompile(t *testing.T) {
	doc := mustDoc(t, `{"version":1}`)
	t.Run("ErrNilPolicy", func(t *testing.T) {
		if _, err := policy.Compile(nil, testCatalog()); !errors.Is(err, policy.ErrNilPolicy) {
			t.Errorf("got %v, want ErrNilPolicy", err)
		}
		if _, err := policy.Compile(doc, nil); !errors.Is(err, policy.ErrNilPolicy) {
			t.Errorf("got %v, want ErrNilPolicy", err)
		}
	})
	t.Run("BadCatalogIndex", func(t *testing.T) {
		cat := testCatalog()
		cat.Tools[3].Index = 7
		if _, err := policy.Compile(doc, cat); err == nil {
			t.Error("got nil, want an error")
		}
	})
	t.Run("InvalidDocumentInCode", func(t *testing.T) {
		bad := &policy.Document{Version: 1, Defaults: policy.Policy{DenyTools: []string{"a*b"}, SpendResetTZ: "Nowhere"}}
		_, err := policy.Compile(bad, testCatalog())
		got := problemsOf(t, err)
		want := []string{
			`defaults.deny_tools[0]: pattern "a*b": "*" is only allowed at the end`,
			`defaults.spend_reset_tz: unknown time zone "Nowhere" (want an IANA name such as "UTC" or "Europe/Berlin")`,
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("problems = %q, want %q", got, want)
		}
	})
	t.Run("CopiesDocument", func(t *testing.T) {
		d := mustDoc(t, `{"version":1,"defaults":{"deny_tools":["email/send"]}}`)
		cat := testCatalog()
		set, err := policy.Compile(d, cat)
		if err != nil {
			t.Fatal(err)
		}
		d.Defaults.DenyTools[0] = "search/web"
		e, _ := set.Effective(policy.TierAPIKey, &policy.Policy{})
		if ok, _ := e.Decide(tool(cat, "email/send")); ok {
			t.Error("email/send allowed after caller mutated its document, want denied")
		}
	})
	t.Run("EmptyCatalog", func(t *testing.T) {
		set, err := policy.Compile(doc, &catalog.Catalog{})
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := set.Tier(policy.TierAPIKey).Decide(&catalog.Tool{ID: "x"}); !ok {
			t.Error("foreign tool denied by an empty open policy, want allowed")
		}
	})
}

func TestSet_Effective_Errors(t *testing.T) {
	set := mustSet(t, `{"version":1}`, testCatalog())
	t.Run("ErrUnknownTier", func(t *testing.T) {
		if _, err := set.Effective("nope", nil); !errors.Is(err, policy.ErrUnknownTier) {
			t.Errorf("got %v, want ErrUnknownTier", err)
		}
		if e := set.Tier("nope"); e != nil {
			t.Errorf("Tier(invalid) = %v, want nil", e)
		}
	})
	t.Run("InvalidOverrideInCode", func(t *testing.T) {
		_, err := set.Effective(policy.TierWallet, &policy.Policy{RateClassQuota: &policy.Quotas{-5, 1, 1}})
		got := problemsOf(t, err)
		want := []string{"$.rate_class_quota.light: must be an integer from 0 to 1000000000"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("problems = %q, want %q", got, want)
		}
	})
	t.Run("CapTooLargeInCode", func(t *testing.T) {
		_, err := set.Effective(policy.TierAPIKey, &policy.Policy{DailySpendCap: &policy.SpendCap{Limit: money.MaxAmount + 1}})
		got := problemsOf(t, err)
		want := []string{"$.daily_spend_cap_usd: must be at most 1000000"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("problems = %q, want %q", got, want)
		}
	})
	t.Run("NilOverrideIsTier", func(t *testing.T) {
		e, err := set.Effective(policy.TierWallet, nil)
		if err != nil || e != set.Tier(policy.TierWallet) {
			t.Errorf("got %p, %v; want the precompiled tier", e, err)
		}
	})
}

func TestEffective_Quota_InvalidClass(t *testing.T) {
	set := mustSet(t, `{"version":1}`, testCatalog())
	if got := set.Tier(policy.TierAPIKey).Quota(catalog.NumRateClasses); got != 0 {
		t.Errorf("Quota(invalid) = %d, want 0", got)
	}
}

func TestEffective_View(t *testing.T) {
	cat := testCatalog()
	set := mustSet(t, `{"version":1,"fail_mode":"strict","enforced":{"deny_tools":["code_execute"]},"defaults":{"daily_spend_cap_usd":5}}`, cat)
	e, err := set.Effective(policy.TierAPIKey, mustPolicy(t, seedOverride))
	if err != nil {
		t.Fatal(err)
	}
	v := e.View()
	got, _ := json.Marshal(v)
	want := `{"allow_tools":["whatsapp/send","email/send","extract/structured","image/generate"],"deny_tools":["code_execute","browser/act"],"enforced_deny_tools":["code_execute"],"rate_class_quota":{"light":120,"medium":30,"heavy":5},"daily_spend_cap_usd":5.0,"spend_reset_tz":"UTC","mode":"open","fail_mode":"strict"}`
	if string(got) != want {
		t.Errorf("View JSON = %s, want %s", got, want)
	}
	v.DenyTools[0] = "changed"
	v.EnforcedDenyTools[0] = "changed"
	if ok, r := e.Decide(tool(cat, "code_execute")); ok || r != policy.ReasonEnforcedDeny {
		t.Errorf("after editing a View, Decide(code_execute) = %t, %q; want false, enforced_deny", ok, r)
	}
	if again := e.View(); again.DenyTools[0] != "code_execute" {
		t.Errorf("View shares memory with the Effective: got %q, want code_execute", again.DenyTools[0])
	}
}

func TestEffective_Decide_Concurrent(t *testing.T) {
	cat := testCatalog()
	set := mustSet(t, `{"version":1}`, cat)
	e, err := set.Effective(policy.TierAPIKey, mustPolicy(t, seedOverride))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]policy.Reason, len(cat.Tools))
	for i, tl := range cat.Tools {
		_, want[i] = e.Decide(tl)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 1000; n++ {
				tl := cat.Tools[n%len(cat.Tools)]
				if _, r := e.Decide(tl); r != want[tl.Index] {
					t.Errorf("Decide(%s) = %q, want %q", tl.ID, r, want[tl.Index])
					return
				}
				_ = e.View()
			}
		}()
	}
	// Compiling overrides concurrently with decisions must be safe too.
	for n := 0; n < 20; n++ {
		if _, err := set.Effective(policy.TierWallet, mustPolicy(t, `{"spend_reset_tz":"Europe/Paris"}`)); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
}

func TestTier_String(t *testing.T) {
	tests := []struct {
		tier    policy.Tier
		want    string
		builtin bool
	}{
		{policy.TierAPIKey, "api_key", true},
		{policy.TierWallet, "wallet", true},
		{policy.TierUnknownWallet, "unknown_wallet", true},
		{"team-research", "team-research", false},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.tier.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if got := tt.tier.IsDefault(); got != tt.builtin {
				t.Errorf("IsDefault() = %t, want %t", got, tt.builtin)
			}
		})
	}
}

func TestDecodePolicy_Zones(t *testing.T) {
	tests := []struct {
		name string
		zone string
		ok   bool
	}{
		{"UTC", "UTC", true},
		{"Region", "Europe/Berlin", true},
		{"ThreeSegments", "America/Argentina/Buenos_Aires", true},
		{"EtcOffset", "Etc/GMT+5", true},
		{"Local", "Local", false},
		{"DoubleSlash", "America//New_York", false},
		{"Dot", "America/./New_York", false},
		{"Absolute", "/usr/share/zoneinfo/UTC", false},
		{"TrailingSlash", "Europe/", false},
		{"Unknown", "Mars/Base", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.DecodePolicy([]byte(`{"spend_reset_tz":"` + tt.zone + `"}`))
			if (err == nil) != tt.ok {
				t.Fatalf("DecodePolicy(%q) error = %v, want ok=%t", tt.zone, err, tt.ok)
			}
			if tt.ok && p.SpendResetTZ != tt.zone {
				t.Errorf("SpendResetTZ = %q, want %q", p.SpendResetTZ, tt.zone)
			}
		})
	}
}
