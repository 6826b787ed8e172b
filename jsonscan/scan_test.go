package jsonscan

import (
	"encoding/json"
	"testing"
)

func TestSkip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the value's text; "" when Skip refuses
	}{
		{`{"a": [1, -2.5e+3, true, false, null, "x\u00e9\n"], "b": {}} ,`, `{"a": [1, -2.5e+3, true, false, null, "x\u00e9\n"], "b": {}}`},
		{`  "plain"`, `"plain"`},
		{`[]`, `[]`},
		{`0`, `0`},
		{`-0.1E-2]`, `-0.1E-2`},
		{`"\q"`, ""},                   // not an escape
		{`"\u12g4"`, ""},               // not hex
		{"\"a\x01\"", ""},              // control byte
		{`{"a" 1}`, ""},                // no colon
		{`{"a":1,}`, ""},               // trailing comma
		{`[1 2]`, ""},                  // no comma
		{`tru`, ""},                    // cut literal
		{`-`, ""},                      // no digits
		{`1.`, ""},                     // no fraction digits
		{`1e`, ""},                     // no exponent digits
		{`"open`, ""},                  // unterminated
		{`{"a":` + deep(70) + `}`, ""}, // deeper than maxDepth
	} {
		s := Scanner{B: []byte(tc.in)}
		got, ok := s.Skip(0)
		if tc.want == "" {
			if ok {
				t.Errorf("Skip(%q): accepted %q, want refused", tc.in, got)
			}
			continue
		}
		if !ok || string(got) != tc.want {
			t.Errorf("Skip(%q): got %q, %v, want %q", tc.in, got, ok, tc.want)
		}
	}
}

func deep(n int) string {
	s := "1"
	for range n {
		s = "[" + s + "]"
	}
	return s
}

func TestStr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{` "abc"`, "abc", true},
		{`""`, "", true},
		{`"a\"b"`, "", false},          // escapes take the fallback
		{"\"caf\xc3\xa9\"", "", false}, // non-ASCII takes the fallback
		{`abc`, "", false},
	} {
		s := Scanner{B: []byte(tc.in)}
		got, ok := s.Str()
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("Str(%q): got %q, %v, want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFoldsTo(t *testing.T) {
	if !FoldsTo([]byte("METHOD"), "id", "method") || FoldsTo([]byte("methods"), "method") || FoldsTo([]byte("x"), "y") {
		t.Error("FoldsTo: wrong answer")
	}
}

// FuzzSkip: whatever Skip accepts as the whole input is valid JSON, and
// the text it returns is exactly the value.
func FuzzSkip(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"x\u0041"`, `-1.5e3`, `[true,false]`, `{"a" :1 , "b":"c"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Scanner{B: b}
		v, ok := s.Skip(0)
		if !ok || !s.End() {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("Skip accepted %q, which encoding/json refuses", b)
		}
		if !json.Valid(v) {
			t.Fatalf("Skip returned %q for %q, not a value", v, b)
		}
	})
}
