package x402

import (
	"encoding/json"
	"strconv"
	"time"
)

// DiscoveryLimitDefault and DiscoveryLimitMax bound a discovery page
// (x402 spec v2 §8.1: 1–100, default 20).
const (
	DiscoveryLimitDefault = 20
	DiscoveryLimitMax     = 100
)

// DiscoveryItem is one resource of a discovery listing: an offer's HTTP
// endpoint, or (MCP) the same tool on the MCP endpoint.
type DiscoveryItem struct {
	Offer *Offer
	MCP   bool
}

// DiscoveryResources returns the body of GET /discovery/resources for
// items (x402 spec v2 §8.1): {"x402Version":2,"items":[{"resource",
// "type":"http"|"mcp","x402Version":2,"accepts":[…],"lastUpdated":<unix>,
// "metadata":{…}}],"pagination":{"limit","offset","total"}}. limit ≤ 0
// means DiscoveryLimitDefault; larger than DiscoveryLimitMax is capped;
// offset < 0 is 0. lastUpdated is the catalog's load time. Metadata holds
// the tool ID, description, mimeType, the method (HTTP) or the tool name
// and transport (MCP: the resource is the MCP endpoint, the same for every
// tool, so an MCP tool is identified by resource and tool, as the Bazaar
// spec says), and the Bazaar info object.
func DiscoveryResources(items []DiscoveryItem, limit, offset int, lastUpdated time.Time) []byte {
	if limit <= 0 {
		limit = DiscoveryLimitDefault
	}
	limit = min(limit, DiscoveryLimitMax)
	offset = max(offset, 0)
	page := items[min(offset, len(items)):min(offset+limit, len(items))]

	b := make([]byte, 0, 256+len(page)*1024)
	b = append(b, `{"x402Version":2,"items":[`...)
	for i, it := range page {
		o := it.Offer
		if i > 0 {
			b = append(b, ',')
		}
		url, typ := o.resourceURL, "http"
		if it.MCP {
			url, typ = o.MCPResourceURL(), "mcp"
		}
		b = append(b, `{"resource":`...)
		b = append(b, mustJSON(url)...)
		b = append(b, `,"type":"`+typ+`","x402Version":2,"accepts":[`...)
		b = append(b, o.accepts...)
		b = append(b, `],"lastUpdated":`...)
		b = strconv.AppendInt(b, lastUpdated.Unix(), 10)
		b = append(b, `,"metadata":`...)
		if it.MCP {
			b = append(b, mustJSON(struct {
				ToolID      string          `json:"toolId"`
				Description string          `json:"description,omitempty"`
				MimeType    string          `json:"mimeType"`
				Tool        string          `json:"tool"`
				Transport   string          `json:"transport"`
				Bazaar      json.RawMessage `json:"bazaar,omitempty"`
			}{o.res.ToolID, o.res.Description, o.res.MimeType, o.res.ToolID, MCPTransport, o.mcpBazaarInfo})...)
		} else {
			b = append(b, mustJSON(struct {
				ToolID      string          `json:"toolId"`
				Description string          `json:"description,omitempty"`
				MimeType    string          `json:"mimeType"`
				Method      string          `json:"method"`
				Bazaar      json.RawMessage `json:"bazaar,omitempty"`
			}{o.res.ToolID, o.res.Description, o.res.MimeType, o.res.Method, o.bazaarInfo})...)
		}
		b = append(b, '}')
	}
	b = append(b, `],"pagination":{"limit":`...)
	b = strconv.AppendInt(b, int64(limit), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, int64(offset), 10)
	b = append(b, `,"total":`...)
	b = strconv.AppendInt(b, int64(len(items)), 10)
	return append(b, "}}"...)
}
