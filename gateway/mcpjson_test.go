package gateway

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecodeRPC: whenever the fast JSON-RPC decoder answers, encoding/json
// accepts the same text and decodes exactly the same message.
func FuzzDecodeRPC(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a/b","arguments":{"x":"y\n","n":[1,2.5e3,-0]},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"x402/payment":{"x402Version":2}}}}`,
		`{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":null}`,
		`{"Method":"x","jsonrpc":"2.0","id":1}`,
		`{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}`,
		` { "jsonrpc" : "2.0" , "id" : 12 , "method" : "ping" } `,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":"\u00e9\ud83d"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast, std rpcMessage
		if !parseRPC(body, &fast) {
			return
		}
		if err := json.Unmarshal(body, &std); err != nil {
			t.Fatalf("fast path accepted %q; encoding/json: %v", body, err)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Fatalf("%q:\nfast %+v\n std %+v", body, fast, std)
		}
	})
}

// TestDecodeRPC_FastPathTaken: the common request shapes take the fast
// path (so the benchmark measures it), and what it cannot read falls back.
func TestDecodeRPC_FastPathTaken(t *testing.T) {
	var m rpcMessage
	if !parseRPC([]byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"text":"a \"quoted\" line\n"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`), &m) {
		t.Fatal("a plain tools/call did not take the fast path")
	}
	if m.Params.Name != "t" || string(m.Params.Arguments) != `{"text":"a \"quoted\" line\n"}` || *m.Params.Meta.ProtocolVersion != "2026-07-28" {
		t.Fatalf("decoded %+v", m)
	}
	for _, s := range []string{`{"method":"t\u0061"}`, `{"jsonrpc":"2.0","id":{},"method":"x"}`, `[1]`} {
		if parseRPC([]byte(s), &m) {
			t.Fatalf("%s took the fast path", s)
		}
	}
}
