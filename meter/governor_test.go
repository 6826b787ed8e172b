package meter

import (
	"testing"
	"time"
)

func TestGovernor_ReleaseAfterSweep(t *testing.T) {
	// A hold remembers the entry Admit found; once Sweep evicted it, the
	// hold's Release does not touch the principal's fresh entry.
	g := NewGovernor()
	t0 := time.Unix(1_800_000_000, 0)
	rules := []WindowRule{{Key: 1, Per: time.Second, Limit: 1}}
	call := GovCall{InFlightAll: -1, InFlightClass: -1, Windows: rules}
	var a, b, c GovHold
	if r := g.Admit("key:a", &call, t0, &a); r.Refused != GovNone {
		t.Fatalf("first call refused: %+v", r)
	}
	t1 := t0.Add(2 * time.Second)
	if n := g.Sweep(t1, time.Hour); n != 1 || g.Len() != 0 {
		t.Fatalf("Sweep evicted %d, Len %d, want 1, 0", n, g.Len())
	}
	if r := g.Admit("key:a", &call, t1, &b); r.Refused != GovNone {
		t.Fatalf("call after the sweep refused: %+v", r)
	}
	g.Release("key:a", &a) // the evicted entry's hold
	if r := g.Admit("key:a", &call, t1, &c); r.Refused != GovWindow || r.Window.Used != 1 {
		t.Fatalf("second call in the fresh window: got %+v, want refused with 1 used", r)
	}
	g.Release("key:a", &b)
	if r := g.Admit("key:a", &call, t1, &c); r.Refused != GovNone {
		t.Fatalf("after the live hold's Release: got %+v, want admitted", r)
	}
}

func TestGovernor_HoldKeepsEntry(t *testing.T) {
	// A call in flight keeps its entry through Sweep; Served gives its
	// slot back through the entry the hold remembers.
	g := NewGovernor()
	now := time.Unix(1_800_000_000, 0)
	call := GovCall{InFlightAll: 1, InFlightClass: -1}
	var a, b GovHold
	if r := g.Admit("key:a", &call, now, &a); r.Refused != GovNone || !a.InFlight() {
		t.Fatalf("first call: %+v", r)
	}
	if n := g.Sweep(now.Add(48*time.Hour), time.Hour); n != 0 {
		t.Fatalf("Sweep evicted %d, want 0 (a call in flight)", n)
	}
	if r := g.Admit("key:a", &call, now, &b); r.Refused != GovInFlight || r.InFlight.InFlight != 1 {
		t.Fatalf("second call: got %+v, want refused at 1 in flight", r)
	}
	g.Served("key:a", &a, true)
	if all, _ := g.InFlight("key:a", 0); all != 0 {
		t.Fatalf("in flight after Served: %d, want 0", all)
	}
	g.Served("key:a", &a, true) // idempotent
	if r := g.Admit("key:a", &call, now, &b); r.Refused != GovNone {
		t.Fatalf("after Served: got %+v, want admitted", r)
	}
}
