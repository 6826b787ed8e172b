package x402

import (
	"encoding/json"
	"testing"
	"time"
)

func TestDiscoveryResources(t *testing.T) {
	var offers []DiscoveryItem
	for _, id := range []string{"a", "b", "c"} {
		o, err := NewOffer(vecConfig(), Resource{ToolID: id, Path: "/tools/" + id, Price: 1000, Description: "tool " + id})
		if err != nil {
			t.Fatal(err)
		}
		offers = append(offers, DiscoveryItem{Offer: o})
	}
	at := time.Unix(1_700_000_000, 0)
	type item struct {
		Resource    string           `json:"resource"`
		Type        string           `json:"type"`
		X402Version int              `json:"x402Version"`
		Accepts     []map[string]any `json:"accepts"`
		LastUpdated int64            `json:"lastUpdated"`
		Metadata    map[string]any   `json:"metadata"`
	}
	type listing struct {
		X402Version int    `json:"x402Version"`
		Items       []item `json:"items"`
		Pagination  struct{ Limit, Offset, Total int }
	}
	tests := []struct {
		name                  string
		limit, offset         int
		wantIDs               []string
		wantLimit, wantOffset int
	}{
		{"All", 0, 0, []string{"a", "b", "c"}, DiscoveryLimitDefault, 0},
		{"Page", 2, 1, []string{"b", "c"}, 2, 1},
		{"PastEnd", 5, 10, nil, 5, 10},
		{"Capped", 1000, -3, []string{"a", "b", "c"}, DiscoveryLimitMax, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l listing
			if err := json.Unmarshal(DiscoveryResources(offers, tt.limit, tt.offset, at), &l); err != nil {
				t.Fatal(err)
			}
			if l.X402Version != 2 || l.Pagination.Total != 3 || l.Pagination.Limit != tt.wantLimit || l.Pagination.Offset != tt.wantOffset {
				t.Errorf("got %+v", l.Pagination)
			}
			if len(l.Items) != len(tt.wantIDs) {
				t.Fatalf("got %d items, want %d", len(l.Items), len(tt.wantIDs))
			}
			for i, it := range l.Items {
				if it.Metadata["toolId"] != tt.wantIDs[i] || it.Resource != "https://gw.example.com/tools/"+tt.wantIDs[i] ||
					it.Type != "http" || it.X402Version != 2 || it.LastUpdated != at.Unix() || len(it.Accepts) != 1 || it.Accepts[0]["amount"] != "1000" {
					t.Errorf("item %d: got %+v", i, it)
				}
				if _, ok := it.Metadata["bazaar"].(map[string]any)["input"]; !ok {
					t.Errorf("item %d: bazaar info missing", i)
				}
			}
		})
	}
}

// TestMCPDiscovery: a tool with an MCP endpoint is listed as an MCP
// resource (specs/extensions/bazaar.md "MCP Tools"): the endpoint as
// resource, type mcp, info.input {type:"mcp", tool, description,
// inputSchema (the tool's own), transport, example}, and a declaration
// whose info validates against its own schema (which requires type, tool
// and inputSchema and checks the example against the input schema). The
// PaymentRequired of an unpaid tools/call names the MCP endpoint and
// carries that declaration.
func TestMCPDiscovery(t *testing.T) {
	disc := `{"input":{"text":"Invoice 42"},"input_schema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]},"output":{"total":120}}`
	o, err := NewOffer(vecConfig(), Resource{ToolID: "extract/structured", Path: "/tools/extract/structured", Price: 1000,
		Description: "Extract", Discovery: json.RawMessage(disc), MCPPath: "/mcp"})
	if err != nil {
		t.Fatal(err)
	}
	if got := o.MCPResourceURL(); got != "https://gw.example.com/mcp" {
		t.Errorf("MCP resource URL %q", got)
	}
	var l struct {
		Items []struct {
			Resource string `json:"resource"`
			Type     string `json:"type"`
			Metadata struct {
				Tool, Transport string
				Bazaar          struct {
					Input struct {
						Type, Tool, Description, Transport string
						InputSchema                        map[string]any `json:"inputSchema"`
						Example                            map[string]any `json:"example"`
					} `json:"input"`
					Output struct{ Type string } `json:"output"`
				} `json:"bazaar"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(DiscoveryResources([]DiscoveryItem{{Offer: o}, {Offer: o, MCP: true}}, 0, 0, time.Now()), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 2 || l.Items[0].Type != "http" || l.Items[1].Type != "mcp" {
		t.Fatalf("got %+v", l.Items)
	}
	m := l.Items[1]
	in := m.Metadata.Bazaar.Input
	if m.Resource != "https://gw.example.com/mcp" || m.Metadata.Tool != "extract/structured" || m.Metadata.Transport != "streamable-http" ||
		in.Type != "mcp" || in.Tool != "extract/structured" || in.Description != "Extract" || in.Transport != "streamable-http" ||
		in.InputSchema["required"] == nil || in.Example["text"] != "Invoice 42" || m.Metadata.Bazaar.Output.Type != "json" {
		t.Errorf("MCP item: got %+v", m)
	}
	if c := checkBazaarMCP(o.MCPBazaarDeclaration()); !c.OK {
		t.Errorf("MCP declaration does not validate against its own schema: %s", c.Detail)
	}
	// An example that breaks the tool's input schema fails the declaration's schema.
	bad, err := NewOffer(vecConfig(), Resource{ToolID: "x", Path: "/tools/x", Price: 1000, MCPPath: "/mcp",
		Discovery: json.RawMessage(`{"input":{"text":5},"input_schema":{"type":"object","properties":{"text":{"type":"string"}}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if c := checkBazaarMCP(bad.MCPBazaarDeclaration()); c.OK {
		t.Error("an example against the input schema validated")
	}

	var pr struct {
		X402Version int    `json:"x402Version"`
		Error       string `json:"error"`
		Resource    struct{ URL string }
		Accepts     []Requirements `json:"accepts"`
		Extensions  map[string]json.RawMessage
	}
	if err := json.Unmarshal(o.MCPPaymentRequired("invalid_exact_evm_signature"), &pr); err != nil {
		t.Fatal(err)
	}
	if pr.X402Version != 2 || pr.Error != "invalid_exact_evm_signature" || pr.Resource.URL != "https://gw.example.com/mcp" ||
		len(pr.Accepts) != 1 || pr.Accepts[0].Amount != "1000" || string(pr.Extensions["bazaar"]) != string(o.MCPBazaarDeclaration()) ||
		pr.Extensions[ExtPaymentIdentifier] == nil {
		t.Errorf("MCP PaymentRequired: got %+v", pr)
	}
	// Without an MCP endpoint: no MCP listing, the HTTP PaymentRequired.
	plain := vecOffer(t)
	if plain.MCPResourceURL() != "" || plain.MCPBazaarDeclaration() != nil {
		t.Error("an offer without MCPPath has an MCP listing")
	}
	if err := json.Unmarshal(plain.MCPPaymentRequired(""), &pr); err != nil || pr.Error != "Payment required" || pr.Resource.URL != plain.ResourceURL() {
		t.Errorf("without MCP: got %+v %v", pr, err)
	}
}
