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

// DiscoveryResources returns the body of GET /discovery/resources for
// offers (x402 spec v2 §8.1): {"x402Version":2,"items":[{"resource",
// "type":"http","x402Version":2,"accepts":[…],"lastUpdated":<unix>,
// "metadata":{…}}],"pagination":{"limit","offset","total"}}. limit ≤ 0
// means DiscoveryLimitDefault; larger than DiscoveryLimitMax is capped;
// offset < 0 is 0. lastUpdated is the catalog's load time. Metadata holds
// the tool ID, description, mimeType, method and the Bazaar info object.
func DiscoveryResources(offers []*Offer, limit, offset int, lastUpdated time.Time) []byte {
	if limit <= 0 {
		limit = DiscoveryLimitDefault
	}
	limit = min(limit, DiscoveryLimitMax)
	offset = max(offset, 0)
	page := offers[min(offset, len(offers)):min(offset+limit, len(offers))]

	b := make([]byte, 0, 256+len(page)*1024)
	b = append(b, `{"x402Version":2,"items":[`...)
	for i, o := range page {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"resource":`...)
		b = append(b, mustJSON(o.resourceURL)...)
		b = append(b, `,"type":"http","x402Version":2,"accepts":[`...)
		b = append(b, o.reqV2...)
		b = append(b, `],"lastUpdated":`...)
		b = strconv.AppendInt(b, lastUpdated.Unix(), 10)
		b = append(b, `,"metadata":`...)
		b = append(b, mustJSON(struct {
			ToolID      string          `json:"toolId"`
			Description string          `json:"description,omitempty"`
			MimeType    string          `json:"mimeType"`
			Method      string          `json:"method"`
			Bazaar      json.RawMessage `json:"bazaar,omitempty"`
		}{o.res.ToolID, o.res.Description, o.res.MimeType, o.res.Method, o.bazaarInfo})...)
		b = append(b, '}')
	}
	b = append(b, `],"pagination":{"limit":`...)
	b = strconv.AppendInt(b, int64(limit), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, int64(offset), 10)
	b = append(b, `,"total":`...)
	b = strconv.AppendInt(b, int64(len(offers)), 10)
	return append(b, "}}"...)
}
