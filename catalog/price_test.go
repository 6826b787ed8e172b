package catalog_test

import (
	"strings"
	"testing"

	"github.com/toolgate/toolgate/catalog"
)

func TestDecode_MeteredPrice(t *testing.T) {
	tool := func(price string) string {
		return `{"tools":[{"id":"llm","rate_class":"light",` + price + `"upstream":"http://127.0.0.1:9/llm"}]}`
	}
	t.Run("OK", func(t *testing.T) {
		c, err := catalog.Decode([]byte(tool(`"price":{"max_usd":"0.10","metered":true},`)))
		if err != nil {
			t.Fatal(err)
		}
		if tl := c.Tools[0]; !tl.Metered || tl.Price != 100000 {
			t.Fatalf("got metered %v price %d, want true 100000", tl.Metered, tl.Price)
		}
	})
	for _, tc := range []struct{ name, price, want string }{
		{"NotObject", `"price":"0.10",`, `tools[0].price: must be an object`},
		{"UnknownField", `"price":{"max_usd":"0.10","metered":true,"min_usd":"0"},`, `tools[0].price: must be an object`},
		{"NoMax", `"price":{"metered":true},`, `tools[0].price.max_usd: required`},
		{"ZeroMax", `"price":{"max_usd":"0","metered":true},`, `tools[0].price.max_usd: must be above 0`},
		{"NotMetered", `"price":{"max_usd":"0.10"},`, `tools[0].price.metered: must be true`},
		{"Both", `"price_usd":"0.01","price":{"max_usd":"0.10","metered":true},`, `tools[0].price: give price_usd or price, not both`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.Decode([]byte(tool(tc.price)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
