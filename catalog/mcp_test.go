package catalog

import (
	"errors"
	"strings"
	"testing"
)

// TestDecode_MCPServers: mcp_servers entries are validated like tools,
// every problem with its JSON path; imports apply the per-tool overrides.
func TestDecode_MCPServers(t *testing.T) {
	_, err := Decode([]byte(`{"tools":[],"mcp_servers":[
 {"id":"files","url":"http://127.0.0.1:9/mcp","rate_class":"huge","tools":{"delete":{"price_usd":"-1","upstream":"x"}}},
 {"id":"a/b","url":"http://u:p@127.0.0.1:9/mcp","colour":1},
 {"url":"http://127.0.0.1:9/mcp"},
 {"id":"files","url":"ftp://x"}]}`))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a ValidationError", err)
	}
	got := make([]string, 0, len(ve.Problems))
	for _, p := range ve.Problems {
		got = append(got, p.Path)
	}
	for _, want := range []string{
		"mcp_servers[0].rate_class", `mcp_servers[0].tools["delete"].upstream`, `mcp_servers[0].tools["delete"].price_usd`,
		"mcp_servers[1].id", "mcp_servers[1].colour", "mcp_servers[1].url",
		"mcp_servers[2].id", "mcp_servers[3].id", "mcp_servers[3].url",
	} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("no problem at %s (got %s)", want, strings.Join(got, ", "))
		}
	}
	if strings.Contains(err.Error(), "u:p@") {
		t.Errorf("the URL's credentials are shown: %v", err)
	}

	c, err := Decode([]byte(`{"tools":[{"id":"files/read","rate_class":"light","upstream":"http://127.0.0.1:9/x"}],"mcp_servers":[
 {"id":"files","url":"http://127.0.0.1:9/mcp","price_usd":"0.001","packs":["fs"],"tools":{"delete":{"rate_class":"heavy","price_usd":"0.01","settle":"before_upstream"}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	out, skipped := c.WithImports(map[string][]ImportedTool{"files": {
		{Name: "delete", Description: "Delete", InputSchema: []byte(`{"type":"object","properties":{"path":{"type":"string"}}}`)},
		{Name: "list"}, {Name: "read"}, {Name: "a/b"}}})
	if len(skipped) != 2 {
		t.Fatalf("skipped %q, want the taken id files/read and the name a/b", skipped)
	}
	del, list := out.ByID("files/delete"), out.ByID("files/list")
	if del == nil || list == nil || out.Route([]byte("/tools/files/delete")) != del {
		t.Fatalf("imported tools missing: %v %v", del, list)
	}
	if del.RateClass != Heavy || del.Price != 10000 || del.Settle != BeforeUpstream || del.Description != "Delete" ||
		del.MCPServer != "files" || del.MCPTool != "delete" || !strings.Contains(string(del.Discovery), `"input_schema"`) {
		t.Fatalf("files/delete: %+v", del)
	}
	if list.RateClass != Light || list.Price != 1000 || len(list.Packs) != 1 || list.Packs[0] != "fs" {
		t.Fatalf("files/list (server defaults): %+v", list)
	}
	if c.ByID("files/delete") != nil {
		t.Fatal("WithImports changed the catalog it was called on")
	}
}
