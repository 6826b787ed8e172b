package x402

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecodeWire: whenever the fast scanner accepts an input,
// encoding/json accepts it too and decodes exactly the same values.
func FuzzDecodeWire(f *testing.F) {
	for _, name := range []string{"vector_v1.b64", "vector_v2.b64"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, s := range []string{
		`{"x402Version":2,"accepted":null,"payload":{"authorization":null}}`,
		`{"x402Version":2,"x402Version":1}`,
		`{"X402Version":2}`,
		`{"x402Version":1.0}`,
		`{"x402Version":2,"accepted":{"extra":{"a":[1,2.5e-3,true,null,"x"]}},"resource":{"url":"u"}} `,
		`{"scheme":"ex\u0061ct"}`,
		`{"x402Version":2} {}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var fast wirePayment
		var s scanner
		if !s.payment(raw, &fast) {
			return
		}
		var slow wirePayment
		if err := json.Unmarshal(raw, &slow); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json says %v", raw, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\nfast %+v\nslow %+v", raw, fast, slow)
		}
	})
}

func TestDecodeWire_FastPathTaken(t *testing.T) {
	b, err := os.ReadFile("testdata/vector_v2.b64")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	var w wirePayment
	var s scanner
	if !s.payment(raw, &w) {
		t.Fatal("the reference v2 vector should take the fast path")
	}
	if w.Payload == nil || w.Payload.Authorization == nil || w.Accepted == nil || *w.X402Version != 2 {
		t.Fatalf("got %+v", w)
	}
}
