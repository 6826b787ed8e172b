package policy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/**/*.golden")

// testCatalog is the fixed catalog the golden files are compiled against.
func testCatalog() *catalog.Catalog {
	specs := []struct {
		id    string
		class catalog.RateClass
		packs []string
	}{
		{"email/send", catalog.Medium, []string{"comms"}},
		{"email/read", catalog.Light, []string{"comms"}},
		{"whatsapp/send", catalog.Medium, []string{"comms"}},
		{"extract/structured", catalog.Light, []string{"research"}},
		{"search/web", catalog.Light, []string{"research"}},
		{"image/generate", catalog.Heavy, []string{"media"}},
		{"code_execute", catalog.Heavy, []string{"dev"}},
		{"browser/act", catalog.Heavy, []string{"research", "dev"}},
	}
	cat := &catalog.Catalog{}
	for i, s := range specs {
		cat.Tools = append(cat.Tools, &catalog.Tool{Index: i, ID: s.id, RateClass: s.class, Packs: s.packs})
	}
	return cat
}

// dump renders an effective policy and its decision for every tool.
func dump(b *strings.Builder, e *policy.Effective, cat *catalog.Catalog) {
	capText := "none"
	if c, ok := e.SpendCap(); ok {
		capText = c.String()
	}
	fmt.Fprintf(b, "  mode=%s fail_mode=%s fail_closed=%t tz=%s cap=%s\n",
		e.Mode(), e.FailMode(), e.FailClosed(), e.Location(), capText)
	b.WriteString("  quota")
	for c := catalog.RateClass(0); c < catalog.NumRateClasses; c++ {
		fmt.Fprintf(b, " %s=%d", c, e.Quota(c))
	}
	b.WriteString("\n")
	for _, t := range cat.Tools {
		ok, r := e.Decide(t)
		verdict := "allow"
		if !ok {
			verdict = "deny"
		}
		fmt.Fprintf(b, "  %-20s %-5s %s\n", t.ID, verdict, r)
	}
}

func errorText(err error) string {
	var ve *catalog.ValidationError
	if !errors.As(err, &ve) {
		return "error (not a ValidationError): " + err.Error() + "\n"
	}
	var b strings.Builder
	b.WriteString("error:\n")
	for _, p := range ve.Problems {
		b.WriteString(p.String())
		b.WriteString("\n")
	}
	return b.String()
}

func indent(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		t.Fatalf("indent %s: %v", raw, err)
	}
	return out.String() + "\n"
}

func checkGolden(t *testing.T, input, got string) {
	t.Helper()
	golden := strings.TrimSuffix(input, ".json") + ".golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run go test ./policy -update): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s mismatch\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

func inputs(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs in testdata/%s: %v", dir, err)
	}
	return files
}

// TestDecodeDocument_Golden decodes every testdata/documents/*.json and
// compares the normalized document and each tier's decisions, or the
// problem list, with its .golden file.
func TestDecodeDocument_Golden(t *testing.T) {
	cat := testCatalog()
	for _, in := range inputs(t, "documents") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			doc, err := policy.Load(in)
			if err != nil {
				checkGolden(t, in, errorText(err))
				return
			}
			set, err := policy.Compile(doc, cat)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			var b strings.Builder
			b.WriteString(indent(t, doc))
			for _, tier := range set.Tiers() {
				fmt.Fprintf(&b, "tier %s\n", tier)
				dump(&b, set.Tier(tier), cat)
			}
			checkGolden(t, in, b.String())
		})
	}
}

// overrideBase is the document the override golden files layer onto:
// the example of DESIGN.md section 3 with an enforced deny and two named
// tiers that only an override's "tier" field selects (overrides without
// one layer onto api_key, so these tiers do not change their output).
const overrideBase = `{
  "version": 1,
  "fail_mode": "open",
  "defaults": { "rate_class_quota": { "light": 120, "medium": 30, "heavy": 10 } },
  "tiers": {
    "api_key":        { "daily_spend_cap_usd": 50 },
    "wallet":         { "daily_spend_cap_usd": 20 },
    "unknown_wallet": { "deny_tools": ["code_execute"], "daily_spend_cap_usd": 2 },
    "oauth":          { "deny_tools": ["image/generate"], "rate_class_quota": { "light": 10 } },
    "team-research":  { "mode": "strict", "allow_tools": ["pack/research"], "daily_spend_cap_usd": "7.5", "spend_reset_tz": "Asia/Tokyo" }
  },
  "enforced": { "deny_tools": ["browser/*"] }
}`

// TestDecodePolicy_Golden decodes every testdata/overrides/*.json as a PUT
// body and compares the normalized override and the effective policy of an
// api_key principal with it (over the tier the override selects, if any),
// or the problem list of decoding or compiling it, with its .golden file.
func TestDecodePolicy_Golden(t *testing.T) {
	cat := testCatalog()
	doc, err := policy.DecodeDocument([]byte(overrideBase))
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(doc, cat)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs(t, "overrides") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			p, err := policy.DecodePolicy(data)
			if err != nil {
				checkGolden(t, in, errorText(err))
				return
			}
			e, err := set.Effective(policy.TierAPIKey, p)
			if err != nil {
				checkGolden(t, in, errorText(err))
				return
			}
			var b strings.Builder
			b.WriteString(indent(t, p))
			if p.Tier != "" {
				fmt.Fprintf(&b, "api_key + override selecting tier %s (compiled as %s)\n", p.Tier, e.Tier())
			} else {
				b.WriteString("api_key + override\n")
			}
			dump(&b, e, cat)
			b.WriteString("view ")
			b.WriteString(indent(t, e.View()))
			checkGolden(t, in, b.String())
		})
	}
}
