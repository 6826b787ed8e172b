package ledger

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/money"
)

func TestRecord_Binary(t *testing.T) {
	bal := money.Micros(-1 << 40)
	full := &Record{Seq: 1 << 40, Type: TypeCall, At: time.Unix(0, -5).UTC(), RequestID: "r", Principal: "key:k",
		Tier: "pro", Tool: "a/b", RateClass: "heavy", Outcome: OutcomeSettleFailed, Reason: "x\x00y é",
		Status: 502, Cost: 1 << 50, SpendDay: "2026-11-26", LatencyUS: -1, UpstreamStatus: 500, UpstreamLatencyUS: 300,
		Payment: &Payment{Version: 1, Scheme: "exact", Network: "n", Payer: "0x1", Amount: 9, Nonce: "0x2"},
		Kind:    KindTopup, Amount: -7, BalanceAfter: &bal, Payer: "p", Network: "n2", TxHash: "0xh"}
	var prev, hash [32]byte
	prev[0], hash[31] = 1, 2
	for _, tt := range []struct {
		name string
		rec  *Record
	}{
		{"Zero", &Record{Type: TypeTxn, At: time.Unix(0, 0).UTC()}},
		{"Full", full},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.rec.appendBinary(nil, &prev, &hash)
			var got Record
			var gp, gh [32]byte
			if err := got.decodeBinaryHashes(v, &gp, &gh); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(&got, tt.rec) || gp != prev || gh != hash {
				t.Errorf("round trip:\n got %+v\nwant %+v", &got, tt.rec)
			}
			for i := range v { // every proper prefix is rejected
				if err := got.decodeBinaryHashes(v[:i], &gp, &gh); err == nil {
					t.Fatalf("decode of %d of %d bytes: got nil error", i, len(v))
				}
			}
		})
	}
	t.Run("ReusesStrings", func(t *testing.T) {
		v := full.appendBinary(nil, &prev, &hash)
		var r Record
		r.decodeBinary(v)
		kept := *full.Payment
		allocs := testing.AllocsPerRun(100, func() { r.decodeBinary(v) })
		// Payment, BalanceAfter, Prev and Hash: fresh each time; strings reused.
		if allocs > 4 {
			t.Errorf("allocs per decode: got %v, want <= 4", allocs)
		}
		if !reflect.DeepEqual(kept, *full.Payment) {
			t.Errorf("earlier Payment changed")
		}
	})
}

// TestRecord_Protocol: a record's protocol (MCP calls) survives the stored
// form and the chain, and records without one keep their version-1 bytes.
func TestRecord_Protocol(t *testing.T) {
	l, _, _ := newLedger(t, Options{Sync: SyncInterval})
	if err := l.Append(&Record{Type: TypeCall, Principal: "key:k_P", Tool: "t", Outcome: OutcomeAllowed, Protocol: "mcp"},
		&Record{Type: TypeCall, Principal: "key:k_P", Tool: "t", Outcome: OutcomeAllowed}).Wait(); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := l.Query(Query{Principal: "key:k_P"}, func(r *Record) error {
		got = append(got, r.Protocol)
		j, _ := r.MarshalJSON()
		if strings.Contains(string(j), `"protocol"`) != (r.Protocol != "") {
			t.Errorf("JSON %s: protocol field present iff set", j)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "mcp" || got[1] != "" {
		t.Fatalf("protocols %q, want [mcp, \"\"]", got)
	}
	if rep := l.Verify(); !rep.OK {
		t.Fatalf("verify: %+v", rep)
	}
	var r Record
	r.Type, r.Protocol = TypeCall, ""
	var h [32]byte
	if v := r.appendBinary(nil, &h, &h); v[0] != binaryVersion {
		t.Fatalf("a record without protocol, actor or state is stored as version %d, want 1", v[0])
	}
}

// TestRecord_Token: a token call's jti and client_id survive the stored
// form, the JSON form and the chain; a stored version-4 record without
// either is refused (it would have been written as version 3 or lower).
func TestRecord_Token(t *testing.T) {
	l, _, _ := newLedger(t, Options{Sync: SyncInterval})
	if err := l.Append(&Record{Type: TypeCall, Principal: "oidc:corp:alice", Tool: "t", Outcome: OutcomeAllowed, TokenID: "j-1", ClientID: "agent"},
		&Record{Type: TypeCall, Principal: "oidc:corp:alice", Tool: "t", Outcome: OutcomeAllowed, ClientID: "agent", Protocol: "mcp"}).Wait(); err != nil {
		t.Fatal(err)
	}
	var got []Record
	if err := l.Query(Query{Principal: "oidc:corp:alice"}, func(r *Record) error {
		got = append(got, *r)
		j, _ := r.MarshalJSON()
		var back Record
		if err := back.UnmarshalJSON(j); err != nil || back.TokenID != r.TokenID || back.ClientID != r.ClientID {
			t.Errorf("JSON round trip of %s: %+v, %v", j, back, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].TokenID != "j-1" || got[0].ClientID != "agent" || got[1].TokenID != "" || got[1].ClientID != "agent" || got[1].Protocol != "mcp" {
		t.Fatalf("records %+v", got)
	}
	if rep := l.Verify(); !rep.OK {
		t.Fatalf("verify: %+v", rep)
	}
	var h [32]byte
	r := Record{Type: TypeCall, TokenID: "x"}
	b := r.appendBinary(nil, &h, &h)
	if b[0] != binaryVersion4 {
		t.Fatalf("version %d, want 4", b[0])
	}
	r = Record{Type: TypeCall, Protocol: "mcp"}
	b = r.appendBinary(nil, &h, &h)
	b[0] = binaryVersion4
	b = append(b[:len(b)-64], 0, 0) // empty jti and client_id
	b = append(b, make([]byte, 64)...)
	var back Record
	if err := back.decodeBinary(b); err == nil {
		t.Fatal("a version-4 record without jti or client_id decoded")
	}
}
