package cluster_test

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/gateway/storetest"
)

func TestApprovalContract(t *testing.T) {
	setup(t)
	storetest.ApprovalContract(t, func(t *testing.T) gateway.ApprovalStore { return cluster.NewApprovals(fresh(t)) })
}

// TestApprovals_AcrossNodes: three nodes' stores on one Redis share the
// approvals. Concurrent approvals of one held call on the three nodes:
// one wins, and the approval names its node; each node's Recover fails
// only the approvals it was running.
func TestApprovals_AcrossNodes(t *testing.T) {
	setup(t)
	base := fresh(t)
	nodes := []*cluster.Approvals{cluster.NewApprovals(base.WithNode("a")), cluster.NewApprovals(base.WithNode("b")),
		cluster.NewApprovals(base.WithNode("c"))}
	now := time.Now().UTC()
	held := func(i int) *gateway.Approval {
		return &gateway.Approval{ID: fmt.Sprintf("ap_%d", i), Status: gateway.ApprovalPending, Tool: "email/send",
			Principal: "key:k_a", Method: "POST", Body: []byte(`{}`), CreatedAt: now.Add(time.Duration(i)), ExpiresAt: now.Add(time.Hour)}
	}
	for round := range 5 {
		a := held(round)
		if err := nodes[round%3].Create(a); err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var winner atomic.Value
		done := make(chan struct{})
		for i := range 30 {
			go func() {
				defer func() { done <- struct{}{} }()
				n := i % 3
				_, ok, err := nodes[n].Decide(a.ID, gateway.ApprovalDecision{Status: gateway.ApprovalApproved, By: fmt.Sprint("op-", i), At: now})
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
					winner.Store("abc"[n : n+1])
				}
			}()
		}
		for range 30 {
			<-done
		}
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d decisions won, want 1", round, wins.Load())
		}
		for i, n := range nodes {
			got, err := n.Get(a.ID)
			if err != nil || got.Status != gateway.ApprovalApproved || got.Node != winner.Load().(string) {
				t.Fatalf("round %d, node %d reads %+v, %v, want approved, run by node %s", round, i, got, err, winner.Load())
			}
		}
	}
	// Each approval is run by its winner; a restart of one node fails its
	// own and leaves the others' running.
	running := map[string]int{}
	for round := range 5 {
		a, _ := nodes[0].Get(held(round).ID)
		running[a.Node]++
	}
	for i, name := range []string{"a", "b", "c"} {
		n, err := nodes[i].Recover("restarted")
		if err != nil || n != running[name] {
			t.Fatalf("Recover on node %s: got %d, %v, want %d", name, n, err, running[name])
		}
		for round := range 5 {
			// Nodes a..name have recovered: theirs failed, the rest run.
			a, _ := nodes[(i+1)%3].Get(held(round).ID)
			want := gateway.ApprovalApproved
			if a.Node <= name {
				want = gateway.ApprovalFailed
			}
			if a.Status != want {
				t.Fatalf("after node %s recovered: %s run by node %s is %s, want %s", name, a.ID, a.Node, a.Status, want)
			}
		}
	}
	// An answer stored on one node is read on all.
	a := held(9)
	nodes[0].Create(a)
	nodes[1].Decide(a.ID, gateway.ApprovalDecision{Status: gateway.ApprovalApproved, By: "op", At: now})
	res := &gateway.ApprovalResult{Status: 200, ContentType: "application/json", Body: json.RawMessage(`{"sent":true}`), RequestID: "r", CostUSD: json.RawMessage(`0.010`)}
	if ok, err := nodes[1].Finish(a.ID, res); !ok || err != nil {
		t.Fatalf("Finish: %v, %v", ok, err)
	}
	for i, n := range nodes {
		got, _ := n.Get(a.ID)
		if got.Status != gateway.ApprovalDone || got.Result == nil || string(got.Result.Body) != `{"sent":true}` {
			t.Fatalf("node %d reads %+v", i, got)
		}
	}
}
