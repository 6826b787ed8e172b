package catalog

import (
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
				for _, p := range err.(*ValidationError).Problems {
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
