package storetest

import (
	"testing"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policy"
)

// OverrideContract checks an OverrideStore: put and delete visible
// through Load and through the change feed, in order, with increasing
// versions.
func OverrideContract(t *testing.T, newStore func(t *testing.T) gateway.OverrideStore) {
	pol := func(t *testing.T, js string) *policy.Policy {
		t.Helper()
		p, err := policy.DecodePolicy([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	load := func(t *testing.T, s gateway.OverrideStore) (map[string]*policy.Policy, uint64) {
		t.Helper()
		m, v, err := s.Load()
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		return m, v
	}
	changes := func(t *testing.T, s gateway.OverrideStore, since uint64) ([]policy.OverrideChange, uint64) {
		t.Helper()
		cs, v, err := s.Changes(since)
		if err != nil {
			t.Fatalf("Changes(%d): %v", since, err)
		}
		return cs, v
	}
	t.Run("PutVisibleThroughFeed", func(t *testing.T) {
		s := newStore(t)
		m, v0 := load(t, s)
		if len(m) != 0 {
			t.Fatalf("Load of an empty store: got %d overrides, want 0", len(m))
		}
		if cs, v := changes(t, s, v0); len(cs) != 0 || v != v0 {
			t.Fatalf("Changes before any write: got %v, %d, want none, %d", cs, v, v0)
		}
		if err := s.Put("key:a", pol(t, `{"deny_tools":["code_execute"]}`)); err != nil {
			t.Fatal(err)
		}
		cs, v1 := changes(t, s, v0)
		if len(cs) != 1 || cs[0].Principal != "key:a" || cs[0].Policy == nil || cs[0].Version != v1 || v1 <= v0 {
			t.Fatalf("Changes after Put: got %+v, version %d, want one put of key:a at a version after %d", cs, v1, v0)
		}
		if got := cs[0].Policy.DenyTools; len(got) != 1 || got[0] != "code_execute" {
			t.Fatalf("fed policy: got deny_tools %v, want [code_execute]", got)
		}
		m, v := load(t, s)
		if v != v1 || m["key:a"] == nil || len(m) != 1 {
			t.Fatalf("Load after Put: got %v at version %d, want key:a at %d", m, v, v1)
		}
		if cs, v := changes(t, s, v1); len(cs) != 0 || v != v1 {
			t.Fatalf("Changes at the latest version: got %v, %d, want none, %d", cs, v, v1)
		}
	})
	t.Run("DeleteVisibleThroughFeed", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put("wallet:0x00000000000000000000000000000000000000b1", pol(t, `{"allow_tools":["search"]}`)); err != nil {
			t.Fatal(err)
		}
		_, v1 := load(t, s)
		if err := s.Delete("wallet:0x00000000000000000000000000000000000000b1"); err != nil {
			t.Fatal(err)
		}
		cs, v2 := changes(t, s, v1)
		if len(cs) != 1 || cs[0].Policy != nil || cs[0].Principal != "wallet:0x00000000000000000000000000000000000000b1" || v2 <= v1 {
			t.Fatalf("Changes after Delete: got %+v, %d, want one delete after %d", cs, v2, v1)
		}
		if m, _ := load(t, s); len(m) != 0 {
			t.Fatalf("Load after Delete: got %v, want none", m)
		}
		if err := s.Delete("key:none"); err != nil {
			t.Fatalf("Delete of an absent override: %v, want nil", err)
		}
	})
	t.Run("FeedInOrder", func(t *testing.T) {
		s := newStore(t)
		_, v0 := load(t, s)
		ops := []struct {
			principal string
			js        string // "" deletes
		}{
			{"key:a", `{"deny_tools":["a"]}`},
			{"key:b", `{"deny_tools":["b"]}`},
			{"key:a", `{"deny_tools":["c"]}`},
			{"key:b", ""},
		}
		for _, op := range ops {
			var err error
			if op.js == "" {
				err = s.Delete(op.principal)
			} else {
				err = s.Put(op.principal, pol(t, op.js))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		cs, v := changes(t, s, v0)
		if len(cs) != len(ops) || cs[len(cs)-1].Version != v {
			t.Fatalf("Changes: got %d ending at %d, want %d ending at %d", len(cs), cs[len(cs)-1].Version, len(ops), v)
		}
		prev := v0
		for i, c := range cs {
			if c.Principal != ops[i].principal || (c.Policy == nil) != (ops[i].js == "") || c.Version <= prev {
				t.Fatalf("change %d: got %+v, want %s in order after version %d", i, c, ops[i].principal, prev)
			}
			prev = c.Version
		}
		if got := cs[2].Policy.DenyTools; len(got) != 1 || got[0] != "c" {
			t.Fatalf("third change: got deny_tools %v, want [c]", got)
		}
		// A reader part-way through sees only the rest.
		rest, _ := changes(t, s, cs[1].Version)
		if len(rest) != 2 || rest[0].Version != cs[2].Version {
			t.Fatalf("Changes from the second: got %+v, want the last two", rest)
		}
		m, _ := load(t, s)
		if len(m) != 1 || m["key:a"] == nil || m["key:a"].DenyTools[0] != "c" {
			t.Fatalf("Load: got %v, want key:a denying c", m)
		}
	})
}
