package policy

import (
	"strings"
	"testing"
)

// TestDecodePolicy_Governance: every governance field validates with its
// JSON path, all problems at once, and a valid one marshals back as it
// was decoded.
func TestDecodePolicy_Governance(t *testing.T) {
	bad := `{"max_in_flight":-1,"max_in_flight_class":{"huge":1},
 "quotas":[{"class":"heavy","per":"1x","limit":5},{"tool":"a*b","per":"1h","limit":1},{"per":"1h","limit":1},{"class":"light","tool":"x","per":"1h","limit":1},{"class":"light","per":"40d","limit":1},{"class":"light","per":"1h"}],
 "loop_breaker":{"repeats":0,"within_s":0,"extra":1},"spend_burst":{"within_s":5},
 "approval_tools":["x*y"],"approval_timeout_s":0,"group":"a b","shadow":{"mode":"shadow","tier":"x"},"mode":"loose"}`
	_, err := DecodePolicy([]byte(bad))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"$.max_in_flight: must be an integer from 0",
		"$.max_in_flight_class.huge: unknown rate class",
		`$.quotas[0].per: "1x" is not a window length`,
		`$.quotas[1].tool: pattern "a*b"`,
		`$.quotas[2]: needs exactly one of "class" or "tool"`,
		`$.quotas[3]: needs exactly one of "class" or "tool"`,
		`$.quotas[4].per: "40d" is longer than 31 days`,
		`$.quotas[5].limit: missing`,
		"$.loop_breaker.repeats: must be an integer from 1",
		"$.loop_breaker.within_s: must be an integer from 1",
		"$.loop_breaker.extra: unknown field",
		"$.spend_burst.usd: missing",
		`$.approval_tools[0]: pattern "x*y"`,
		"$.approval_timeout_s: must be an integer from 1",
		`$.group: group name "a b"`,
		`$.shadow.mode: a shadow policy's mode`,
		"$.shadow.tier: only an override selects a tier",
		`$.mode: must be "open", "strict" or "shadow"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing problem %q in\n%v", want, err)
		}
	}
	good := `{"group":"team-a","max_in_flight":5,"max_in_flight_class":{"heavy":2},"quotas":[{"class":"heavy","per":"1h","limit":100},{"tool":"email/send","per":"24h","limit":500}],"loop_breaker":{"repeats":20,"within_s":60,"cooldown_s":300},"spend_burst":{"usd":1.00,"within_s":60},"approval_tools":["email/send"],"approval_timeout_s":600,"shadow":{"deny_tools":["x"]}}`
	p, err := DecodePolicy([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.MarshalJSON()
	canonical := `{"group":"team-a","approval_tools":["email/send"],"approval_timeout_s":600,"shadow":{"deny_tools":["x"]},"max_in_flight":5,"max_in_flight_class":{"heavy":2},"quotas":[{"class":"heavy","per":"1h","limit":100},{"tool":"email/send","per":"24h","limit":500}],"loop_breaker":{"repeats":20,"within_s":60,"cooldown_s":300},"spend_burst":{"usd":1.00,"within_s":60}}`
	if string(b) != canonical {
		t.Fatalf("round trip:\n got %s\nwant %s", b, canonical)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}
