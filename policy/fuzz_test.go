package policy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/toolgate/toolgate/policy"
)

func addSeeds(f *testing.F, dir string) {
	files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	for _, name := range files {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
}

// FuzzDecodeDocument checks that decoding never panics and that a decoded
// document marshals to JSON that decodes to the same document and compiles.
func FuzzDecodeDocument(f *testing.F) {
	addSeeds(f, "documents")
	cat := testCatalog()
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := policy.DecodeDocument(data)
		if err != nil {
			if doc != nil {
				t.Fatalf("got document %+v with error %v, want nil", doc, err)
			}
			return
		}
		out, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := policy.DecodeDocument(out)
		if err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if !reflect.DeepEqual(again, doc) {
			t.Fatalf("re-decoded %+v, want %+v", again, doc)
		}
		set, err := policy.Compile(doc, cat)
		if err != nil {
			t.Fatalf("compile a decoded document: %v", err)
		}
		for _, tier := range set.Tiers() {
			for _, tl := range cat.Tools {
				set.Tier(tier).Decide(tl)
			}
		}
	})
}

// FuzzDecodePolicy checks the same for a policy object and that it compiles
// as an override unless it selects a tier the document does not declare.
func FuzzDecodePolicy(f *testing.F) {
	addSeeds(f, "overrides")
	f.Add([]byte(seedOverride))
	cat := testCatalog()
	set, err := policy.Compile(&policy.Document{Version: 1}, cat)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.DecodePolicy(data)
		if err != nil {
			if p != nil {
				t.Fatalf("got policy %+v with error %v, want nil", p, err)
			}
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := policy.DecodePolicy(out)
		if err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("re-decoded %+v, want %+v", again, p)
		}
		if out2, _ := json.Marshal(again); !bytes.Equal(out2, out) {
			t.Fatalf("second marshal %s, want %s", out2, out)
		}
		e, err := set.Effective(policy.TierWallet, p)
		if errors.Is(err, policy.ErrUnknownTier) && p.Tier != "" && set.Tier(p.Tier) == nil {
			return // a decoded override compiles unless it names a tier the document lacks
		}
		if err != nil {
			t.Fatalf("compile a decoded override: %v", err)
		}
		for _, tl := range cat.Tools {
			e.Decide(tl)
		}
		if _, err := json.Marshal(e.View()); err != nil {
			t.Fatalf("marshal view: %v", err)
		}
	})
}
