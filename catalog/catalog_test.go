package catalog

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// dump renders a catalog as stable text for golden files.
func dump(c *Catalog) string {
	var b strings.Builder
	for _, t := range c.Tools {
		settle := "after_upstream"
		if t.Settle == BeforeUpstream {
			settle = "before_upstream"
		}
		fmt.Fprintf(&b, "%d %s path=%s methods=%v class=%s price=%d upstream=%s packs=%v settle=%s timeout=%s discovery=%s\n",
			t.Index, t.ID, t.Path, t.Methods, t.RateClass, t.Price, t.Upstream, t.Packs, settle, t.Timeout, t.Discovery)
	}
	return b.String()
}

// TestDecode_Golden: each testdata/*.json decodes to its .golden text:
// the compiled catalog, or the exact list of problems.
func TestDecode_Golden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			c, err := Decode(in)
			if err != nil {
				var ve *ValidationError
				errors.As(err, &ve)
				for _, p := range ve.Problems {
					got += "error: " + p.String() + "\n"
				}
			} else {
				got = dump(c)
			}
			golden := strings.TrimSuffix(f, ".json") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Fatalf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestCatalog_Route(t *testing.T) {
	c, err := Load("../tools.json")
	if err != nil {
		t.Fatalf("repo tools.json: %v", err)
	}
	tool := c.Route([]byte("/tools/extract/structured"))
	if tool == nil || tool.ID != "extract/structured" || tool.Price != 10_000 {
		t.Fatalf("got %+v", tool)
	}
	if c.Route([]byte("/tools/nope")) != nil {
		t.Fatal("unknown path routed")
	}
	if !tool.AllowsMethod([]byte("POST")) || tool.AllowsMethod([]byte("GET")) {
		t.Fatal("methods")
	}
	if n := testing.AllocsPerRun(100, func() { c.Route([]byte("/tools/extract/structured")) }); n != 0 {
		t.Fatalf("Route allocates %v times", n)
	}
}

func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err == nil {
			for i, tool := range c.Tools {
				if tool.Index != i || c.Route([]byte(tool.Path)) != tool {
					t.Fatalf("tool %d inconsistent", i)
				}
			}
		}
	})
}

// TestDecode_UpstreamSecretsNotEchoed: a rejected upstream's password,
// user name, query or fragment never appears in the error text.
func TestDecode_UpstreamSecretsNotEchoed(t *testing.T) {
	in, err := os.ReadFile("testdata/upstream_forms.json")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Decode(in)
	if err == nil {
		t.Fatal("decoded, want problems")
	}
	for _, secret := range []string{"SECRET", "token@", "api_key"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error text contains %q: %v", secret, err)
		}
	}
}

// TestDecodeWith_Listen: an upstream that would dial the gateway's own
// listen address is refused at tools[i].upstream, with loopback,
// localhost and unspecified addresses treated as the same host.
func TestDecodeWith_Listen(t *testing.T) {
	tests := []struct {
		name, listen, upstream string
		self                   bool
	}{
		{"same address", "127.0.0.1:8402", "http://127.0.0.1:8402/x", true},
		{"localhost for 127.0.0.1", "127.0.0.1:8402", "http://localhost:8402/x", true},
		{"localhost upper case", "127.0.0.1:8402", "http://LOCALHOST:8402/x", true},
		{"0.0.0.0 dials loopback", "127.0.0.1:8402", "http://0.0.0.0:8402/x", true},
		{"::1 for localhost", "localhost:8402", "http://[::1]:8402/x", true},
		{"all interfaces, loopback upstream", ":8402", "http://127.0.0.1:8402/x", true},
		{"0.0.0.0, other loopback", "0.0.0.0:8402", "http://127.0.0.5:8402/x", true},
		{"[::], localhost", "[::]:8402", "http://localhost:8402/x", true},
		{"mapped IPv4", "127.0.0.1:8402", "http://[::ffff:127.0.0.1]:8402/x", true},
		{"same name", "gw.internal:8080", "http://GW.internal:8080/x", true},
		{"default http port", "127.0.0.1:80", "http://127.0.0.1/x", true},
		{"default https port", "[::1]:443", "https://[::1]/x", true},
		{"other port", "127.0.0.1:8402", "http://127.0.0.1:8403/x", false},
		{"other loopback address", "127.0.0.1:8402", "http://127.0.0.2:8402/x", false},
		{"remote host, all interfaces", ":8402", "http://10.0.0.7:8402/x", false},
		{"random listen port", "127.0.0.1:0", "http://127.0.0.1:80/x", false},
		{"no listen given", "", "http://127.0.0.1:8402/x", false},
		{"demo upstream", "127.0.0.1:8402", "demo:time", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := `{"tools":[{"id":"a","rate_class":"light","upstream":"http://10.9.9.9/ok"},
				{"id":"b","rate_class":"light","upstream":"` + tt.upstream + `"}]}`
			_, err := DecodeWith([]byte(doc), Options{Listen: tt.listen})
			if !tt.self {
				if err != nil {
					t.Fatalf("got %v, want no problem", err)
				}
				return
			}
			var ve *ValidationError
			ok := errors.As(err, &ve)
			if !ok || len(ve.Problems) != 1 || ve.Problems[0].Path != "tools[1].upstream" ||
				!strings.Contains(ve.Problems[0].Message, "own listen address") {
				t.Fatalf("got %v, want one problem at tools[1].upstream naming the listen address", err)
			}
		})
	}
	if _, err := Decode([]byte(`{"tools":[{"id":"b","rate_class":"light","upstream":"http://127.0.0.1:8402/x"}]}`)); err != nil {
		t.Errorf("Decode without Listen: got %v, want no problem", err)
	}
}
