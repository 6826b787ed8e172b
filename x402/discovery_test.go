package x402

import (
	"encoding/json"
	"testing"
	"time"
)

func TestDiscoveryResources(t *testing.T) {
	var offers []*Offer
	for _, id := range []string{"a", "b", "c"} {
		o, err := NewOffer(vecConfig(), Resource{ToolID: id, Path: "/tools/" + id, Price: 1000, Description: "tool " + id})
		if err != nil {
			t.Fatal(err)
		}
		offers = append(offers, o)
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
