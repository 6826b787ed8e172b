package storetest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

// ApprovalContract checks an ApprovalStore: an approval stored whole and
// listed oldest first, one move out of pending among 100 concurrent
// Decides, Finish only of an approved approval and only once, Recover
// failing the approved approvals that were not finished, and Sweep
// deleting only the approvals that ended before its cutoff.
func ApprovalContract(t *testing.T, newStore func(t *testing.T) gateway.ApprovalStore) {
	held := func(i int) *gateway.Approval {
		return &gateway.Approval{ID: fmt.Sprintf("ap_%032d", i), Status: gateway.ApprovalPending, Tool: "email/send",
			Principal: "key:k_" + fmt.Sprint(i), Tier: "api_key", RequestID: fmt.Sprintf("r-%d", i), Method: "POST",
			Query: "q=1", ContentType: "application/json", Body: []byte(`{"to":"ops@example.com"}`),
			CreatedAt: t0.Add(time.Duration(i) * time.Second), ExpiresAt: t0.Add(time.Hour)}
	}
	create := func(t *testing.T, s gateway.ApprovalStore, a *gateway.Approval) {
		t.Helper()
		if err := s.Create(a); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	get := func(t *testing.T, s gateway.ApprovalStore, id string) *gateway.Approval {
		t.Helper()
		a, err := s.Get(id)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		return a
	}
	same := func(t *testing.T, got, want *gateway.Approval) {
		t.Helper()
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("got  %s\nwant %s", g, w)
		}
	}
	approve := gateway.ApprovalDecision{Status: gateway.ApprovalApproved, By: "admin", At: t0.Add(time.Minute), Reason: "ok"}
	t.Run("CreateGet", func(t *testing.T) {
		s := newStore(t)
		a := held(1)
		create(t, s, a)
		same(t, get(t, s, a.ID), a)
		if got := get(t, s, "ap_unknown"); got != nil {
			t.Fatalf("unknown id: got %+v, want nil", got)
		}
		if err := s.Create(held(1)); err == nil {
			t.Fatal("Create of an existing id: got nil error")
		}
	})
	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		for _, i := range []int{3, 1, 2} {
			create(t, s, held(i))
		}
		if _, ok, err := s.Decide(held(2).ID, approve); !ok || err != nil {
			t.Fatalf("Decide: %v, %v", ok, err)
		}
		ids := func(status string) []string {
			list, err := s.List(status)
			if err != nil {
				t.Fatalf("List(%q): %v", status, err)
			}
			var out []string
			for _, a := range list {
				out = append(out, a.ID[len(a.ID)-1:]+"/"+a.Status)
			}
			return out
		}
		if got, want := ids(""), []string{"1/pending", "2/approved", "3/pending"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("List(\"\"): got %v, want %v", got, want)
		}
		if got, want := ids(gateway.ApprovalPending), []string{"1/pending", "3/pending"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("List(pending): got %v, want %v", got, want)
		}
		if got := ids(gateway.ApprovalDone); len(got) != 0 {
			t.Fatalf("List(done): got %v, want none", got)
		}
	})
	t.Run("DecideOnceUnderConcurrency", func(t *testing.T) {
		s := newStore(t)
		for round := range 3 {
			a := held(10 + round)
			create(t, s, a)
			var wins atomic.Int32
			var winner atomic.Value
			concurrently(100, func(i int) {
				d := gateway.ApprovalDecision{Status: gateway.ApprovalApproved, By: fmt.Sprintf("op-%d", i), At: t0.Add(time.Minute), Reason: "r"}
				if i%2 == 1 {
					d.Status = gateway.ApprovalDenied
				}
				got, ok, err := s.Decide(a.ID, d)
				if err != nil {
					t.Error(err)
					return
				}
				if got == nil || got.Status == gateway.ApprovalPending {
					t.Errorf("Decide returned %+v, want the approval out of pending", got)
					return
				}
				if ok {
					wins.Add(1)
					winner.Store(d)
				}
			})
			if n := wins.Load(); n != 1 {
				t.Fatalf("round %d: %d Decides won, want 1", round, n)
			}
			d := winner.Load().(gateway.ApprovalDecision)
			want := *a
			want.Status, want.DecidedBy, want.DecidedAt, want.Reason = d.Status, d.By, d.At, d.Reason
			got := get(t, s, a.ID)
			want.Node = got.Node // the store's node, when it approves
			same(t, got, &want)
			if d.Status == gateway.ApprovalDenied && got.Node != "" {
				t.Fatalf("a denied approval names node %q, want none", got.Node)
			}
		}
	})
	t.Run("DecideNotPending", func(t *testing.T) {
		s := newStore(t)
		a := held(1)
		create(t, s, a)
		expire := gateway.ApprovalDecision{Status: gateway.ApprovalExpired, By: "toolgate", At: t0.Add(time.Hour), Reason: "not decided before expires_at"}
		if got, ok, err := s.Decide(a.ID, expire); !ok || err != nil || got.Status != gateway.ApprovalExpired {
			t.Fatalf("expire: got %+v, %v, %v", got, ok, err)
		}
		got, ok, err := s.Decide(a.ID, approve)
		if ok || err != nil || got == nil || got.Status != gateway.ApprovalExpired || got.DecidedBy != "toolgate" {
			t.Fatalf("approve after expiry: got %+v, %v, %v, want the expired approval, false", got, ok, err)
		}
		if got, ok, err := s.Decide("ap_unknown", approve); got != nil || ok || err != nil {
			t.Fatalf("unknown id: got %+v, %v, %v, want nil, false, nil", got, ok, err)
		}
		if _, ok, err := s.Decide(a.ID, gateway.ApprovalDecision{Status: gateway.ApprovalDone}); ok || err == nil {
			t.Fatalf("a decision to done: got %v, %v, want an error", ok, err)
		}
	})
	t.Run("Finish", func(t *testing.T) {
		s := newStore(t)
		a := held(1)
		create(t, s, a)
		res := &gateway.ApprovalResult{Status: 200, ContentType: "application/json", Body: json.RawMessage(`{"sent":true}`),
			RequestID: "r-run", CostUSD: json.RawMessage(`0.010`)}
		if ok, err := s.Finish(a.ID, res); ok || err != nil {
			t.Fatalf("Finish of a pending approval: got %v, %v, want false", ok, err)
		}
		dec, _, _ := s.Decide(a.ID, approve)
		if ok, err := s.Finish(a.ID, res); !ok || err != nil {
			t.Fatalf("Finish: got %v, %v, want true", ok, err)
		}
		if ok, err := s.Finish(a.ID, &gateway.ApprovalResult{Status: 500}); ok || err != nil {
			t.Fatalf("second Finish: got %v, %v, want false", ok, err)
		}
		want := *dec
		want.Status, want.Result = gateway.ApprovalDone, res
		same(t, get(t, s, a.ID), &want)
		if ok, _ := s.Finish("ap_unknown", res); ok {
			t.Fatal("Finish of an unknown id: got true")
		}
	})
	t.Run("Recover", func(t *testing.T) {
		s := newStore(t)
		for i := 1; i <= 4; i++ {
			create(t, s, held(i))
		}
		s.Decide(held(1).ID, approve) // running when the node stopped
		s.Decide(held(2).ID, approve) // finished
		s.Finish(held(2).ID, &gateway.ApprovalResult{Status: 200, RequestID: "r", CostUSD: json.RawMessage(`0`)})
		s.Decide(held(3).ID, gateway.ApprovalDecision{Status: gateway.ApprovalDenied, By: "admin", At: t0, Reason: "no"})
		n, err := s.Recover("stopped")
		if n != 1 || err != nil {
			t.Fatalf("Recover: got %d, %v, want 1", n, err)
		}
		for i, want := range []string{gateway.ApprovalFailed, gateway.ApprovalDone, gateway.ApprovalDenied, gateway.ApprovalPending} {
			if got := get(t, s, held(i+1).ID); got.Status != want {
				t.Fatalf("approval %d: got %s, want %s", i+1, got.Status, want)
			}
		}
		if got := get(t, s, held(1).ID); got.Reason != "stopped" || got.Result != nil {
			t.Fatalf("failed approval: got %+v, want reason \"stopped\", no result", got)
		}
		if ok, _ := s.Finish(held(1).ID, &gateway.ApprovalResult{Status: 200}); ok {
			t.Fatal("Finish of a failed approval: got true")
		}
		if n, err := s.Recover("stopped"); n != 0 || err != nil {
			t.Fatalf("second Recover: got %d, %v, want 0", n, err)
		}
	})
	t.Run("Sweep", func(t *testing.T) {
		s := newStore(t)
		for i := 1; i <= 6; i++ {
			create(t, s, held(i))
		}
		s.Decide(held(2).ID, approve) // running: never swept
		s.Decide(held(3).ID, approve)
		s.Finish(held(3).ID, &gateway.ApprovalResult{Status: 200, RequestID: "r", CostUSD: json.RawMessage(`0`)})
		s.Decide(held(4).ID, gateway.ApprovalDecision{Status: gateway.ApprovalDenied, By: "admin", At: t0, Reason: "no"})
		s.Decide(held(5).ID, gateway.ApprovalDecision{Status: gateway.ApprovalExpired, By: "toolgate", At: t0.Add(time.Hour), Reason: "late"})
		s.Decide(held(6).ID, gateway.ApprovalDecision{Status: gateway.ApprovalDenied, By: "admin", At: t0.Add(2 * time.Hour), Reason: "no"})
		n, err := s.Sweep(t0.Add(90 * time.Minute))
		if n != 3 || err != nil {
			t.Fatalf("Sweep: got %d, %v, want 3 (the done, denied and expired ones decided before the cutoff)", n, err)
		}
		for i := 1; i <= 6; i++ {
			a, err := s.Get(held(i).ID)
			if err != nil {
				t.Fatal(err)
			}
			if gone := i >= 3 && i <= 5; (a == nil) != gone {
				t.Fatalf("approval %d after Sweep: got %+v, want gone %v", i, a, gone)
			}
		}
		if all, err := s.List(""); err != nil || len(all) != 3 {
			t.Fatalf("List after Sweep: got %d, %v, want 3", len(all), err)
		}
		if n, err := s.Sweep(t0.Add(90 * time.Minute)); n != 0 || err != nil {
			t.Fatalf("second Sweep: got %d, %v, want 0", n, err)
		}
	})
}
