package ledger

import (
	"strings"
	"testing"
)

// TestRecord_Node: with Options.Node every record appended without a
// node names this one, in the stored form, the JSON form and the hashed
// bytes (changing it breaks the chain); records without a node keep
// their earlier versions' bytes and hashes; a stored version-5 record
// without a node is refused.
func TestRecord_Node(t *testing.T) {
	l, _, _ := newLedger(t, Options{Sync: SyncInterval, Node: "web-1"})
	if err := l.Append(&Record{Type: TypeCall, Principal: "key:k_N", Tool: "t", Outcome: OutcomeAllowed},
		&Record{Type: TypeTxn, Principal: "key:k_N", Kind: KindDebit, Amount: 5, Node: "web-2"}).Wait(); err != nil {
		t.Fatal(err)
	}
	var got []Record
	if err := l.Query(Query{Principal: "key:k_N"}, func(r *Record) error {
		got = append(got, *r)
		j, _ := r.MarshalJSON()
		var back Record
		if err := back.UnmarshalJSON(j); err != nil || back.Node != r.Node || !strings.Contains(string(j), `"node":"`+r.Node+`"`) {
			t.Errorf("JSON round trip of %s: %+v, %v", j, back, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Node != "web-1" || got[1].Node != "web-2" {
		t.Fatalf("records' nodes: %+v", got)
	}
	if rep := l.Verify(); !rep.OK {
		t.Fatalf("verify: %+v", rep)
	}
	// The node is hashed: the same record under another node hashes
	// otherwise.
	var prev [32]byte
	r := got[0]
	_, h1 := hashRecord(nil, &prev, &r)
	r.Node = "web-9"
	_, h2 := hashRecord(nil, &prev, &r)
	if h1 == h2 {
		t.Fatal("the node is not part of the hashed bytes")
	}
	// Without a node: the version and the canonical bytes of before.
	var h [32]byte
	old := Record{Type: TypeCall, TokenID: "x"}
	if b := old.appendBinary(nil, &h, &h); b[0] != binaryVersion4 {
		t.Fatalf("a record without a node is stored as version %d, want 4", b[0])
	}
	if c := string(old.appendCanonical(nil)); strings.Contains(c, `"node"`) {
		t.Fatalf("canonical bytes of a record without a node: %s", c)
	}
	withNode := Record{Type: TypeCall, Node: "web-1"}
	b := withNode.appendBinary(nil, &h, &h)
	if b[0] != binaryVersion5 {
		t.Fatalf("version %d, want 5", b[0])
	}
	var back Record
	if err := back.decodeBinary(b); err != nil || back.Node != "web-1" {
		t.Fatalf("decode: %+v, %v", back, err)
	}
	b = append(b[:len(b)-64-1-len("web-1")], 0) // an empty node
	b = append(b, make([]byte, 64)...)
	if err := back.decodeBinary(b); err == nil {
		t.Fatal("a version-5 record without a node decoded")
	}
}
