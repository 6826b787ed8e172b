package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestDiscovery_Pagination: GET /discovery/resources per x402 v2 §8.1:
// limit 1–100 (default 20), offset, total, the type filter (every priced
// tool once as an HTTP endpoint and once as an MCP tool on /mcp, HTTP
// first); a bad limit or offset is a 400 naming it.
func TestDiscovery_Pagination(t *testing.T) {
	up := newUpstream(t)
	var tools []string
	for i := range 25 {
		tools = append(tools, fmt.Sprintf(`{"id":"t%02d","rate_class":"light","price_usd":"0.01","upstream":"%s/t"}`, i, up.srv.URL))
	}
	tools = append(tools, `{"id":"free","rate_class":"light","upstream":"`+up.srv.URL+`/free"}`)
	h := newHarnessWith(t, up, `{"tools":[`+strings.Join(tools, ",")+`]}`, withX402(t, &fakeSettler{}))
	type listing struct {
		X402Version int `json:"x402Version"`
		Items       []struct {
			Resource string `json:"resource"`
			Type     string `json:"type"`
			Metadata struct {
				ToolID    string `json:"toolId"`
				Tool      string `json:"tool"`
				Transport string `json:"transport"`
				Bazaar    struct {
					Input struct{ Type, Tool string } `json:"input"`
				} `json:"bazaar"`
			} `json:"metadata"`
		} `json:"items"`
		Pagination struct{ Limit, Offset, Total int }
	}
	get := func(q string) (int, listing, string) {
		t.Helper()
		resp, b := h.do("GET", "/discovery/resources"+q, "")
		var l listing
		_ = json.Unmarshal(b, &l)
		return resp.StatusCode, l, string(b)
	}
	for _, tc := range []struct {
		q                     string
		n, limit, offset, tot int
		first, typ            string
	}{
		{"", 20, 20, 0, 50, "t00", "http"},
		{"?limit=100", 50, 100, 0, 50, "t00", "http"},
		{"?limit=1", 1, 1, 0, 50, "t00", "http"},
		{"?limit=10&offset=20", 10, 10, 20, 50, "t20", "http"},
		{"?limit=10&offset=25", 10, 10, 25, 50, "t00", "mcp"},
		{"?offset=60", 0, 20, 60, 50, "", ""},
		{"?type=http&limit=5&offset=5", 5, 5, 5, 25, "t05", "http"},
		{"?type=mcp&limit=100", 25, 100, 0, 25, "t00", "mcp"},
		{"?type=mcp&offset=24", 1, 20, 24, 25, "t24", "mcp"},
		{"?type=a2a", 0, 20, 0, 0, "", ""},
	} {
		status, l, b := get(tc.q)
		if status != 200 || l.X402Version != 2 || len(l.Items) != tc.n || l.Pagination.Limit != tc.limit ||
			l.Pagination.Offset != tc.offset || l.Pagination.Total != tc.tot {
			t.Fatalf("%q: got %d %s, want %d items, limit %d, offset %d, total %d", tc.q, status, b, tc.n, tc.limit, tc.offset, tc.tot)
		}
		if tc.n > 0 && (l.Items[0].Metadata.ToolID != tc.first || l.Items[0].Type != tc.typ) {
			t.Fatalf("%q: first item %+v, want %s %s", tc.q, l.Items[0], tc.typ, tc.first)
		}
		for _, it := range l.Items {
			mcp := it.Type == "mcp"
			if mcp != strings.HasSuffix(it.Resource, "/mcp") || mcp != (it.Metadata.Tool == it.Metadata.ToolID) ||
				mcp != (it.Metadata.Transport == "streamable-http") || mcp != (it.Metadata.Bazaar.Input.Type == "mcp") ||
				mcp && it.Metadata.Bazaar.Input.Tool != it.Metadata.ToolID {
				t.Fatalf("%q: item %+v: an MCP item is the tool on /mcp with an MCP Bazaar input, an HTTP item its endpoint", tc.q, it)
			}
		}
	}
	for _, q := range []string{"?limit=0", "?limit=101", "?limit=x", "?limit=-1", "?offset=-1", "?offset=abc"} {
		if status, _, b := get(q); status != 400 || !strings.Contains(b, strings.SplitN(q[1:], "=", 2)[0]+" must be") {
			t.Fatalf("%q: got %d %s, want 400 naming the parameter", q, status, b)
		}
	}
}
