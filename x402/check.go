package x402

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
)

// Check is one listing self-check: what was checked (on which resource),
// whether it passed, and if not what was found and how to fix it.
type Check struct {
	Name     string `json:"check"`
	Resource string `json:"resource,omitempty"`
	OK       bool   `json:"ok"`
	Warning  bool   `json:"warning,omitempty"` // not fatal for a listing, but worth fixing
	Detail   string `json:"detail,omitempty"`
	Fix      string `json:"fix,omitempty"`
}

// CheckListing runs against a gateway at base (http://host:port) what a
// facilitator's listing validation runs (CDP's /validate preflight,
// x402-notes.md §6): the discovery listing is reachable; for each listed
// resource an unpaid, empty-body request with its declared method answers
// 402 with a decodable PAYMENT-REQUIRED (standard base64 of a v2
// PaymentRequired whose accepts are complete); the Bazaar extension
// declares info.input type and method and validates against its own
// schema; the description is at most MaxDescription characters; the
// resource URL is public https; each tool listed as an MCP resource
// answers an unpaid tools/call with a PaymentRequired naming the MCP
// endpoint whose MCP Bazaar declaration validates; and /readyz reports a
// reachable settlement backend.
func CheckListing(ctx context.Context, hc *http.Client, base string) []Check {
	base = strings.TrimRight(base, "/")
	var out []Check
	add := func(c Check) { out = append(out, c) }

	var list struct {
		Items []struct {
			Resource string `json:"resource"`
			Type     string `json:"type"`
			Metadata struct {
				ToolID string `json:"toolId"`
				Method string `json:"method"`
			} `json:"metadata"`
		} `json:"items"`
		Pagination struct {
			Total int `json:"total"`
		} `json:"pagination"`
	}
	status, _, body, err := get(ctx, hc, "GET", base+"/discovery/resources?type=http&limit=100", nil)
	switch {
	case err != nil:
		add(Check{Name: "reachable", Detail: err.Error(), Fix: "start toolgate serve, and give its address with --url"})
		return out
	case status != 200 || json.Unmarshal(body, &list) != nil:
		add(Check{Name: "reachable", Detail: fmt.Sprintf("GET /discovery/resources answered %d %s", status, snippet(body)),
			Fix: "run toolgate serve with --x402-pay-to so that x402 (and its listing) is on"})
		return out
	case len(list.Items) == 0:
		add(Check{Name: "reachable", Detail: "the listing has no resources",
			Fix: `give a tool a price ("price_usd") in tools.json; free tools are not listed`})
		return out
	}
	add(Check{Name: "reachable", OK: true, Detail: fmt.Sprintf("%d resources listed", list.Pagination.Total)})

	for _, it := range list.Items {
		u, err := url.Parse(it.Resource)
		if err != nil || u.Path == "" {
			add(Check{Name: "resource_url", Resource: it.Resource, Detail: "not a URL", Fix: "set --public-url to the gateway's external base URL"})
			continue
		}
		res := it.Metadata.ToolID
		if u.Scheme != "https" {
			add(Check{Name: "resource_url", Resource: res, OK: true, Warning: true, Detail: it.Resource + " is not https",
				Fix: "set --public-url to the public https URL payers and the Bazaar reach the gateway at"})
		} else {
			add(Check{Name: "resource_url", Resource: res, OK: true})
		}
		method := it.Metadata.Method
		if method == "" {
			method = "POST"
		}
		out = append(out, checkResource(ctx, hc, base+u.EscapedPath(), method, res)...)
	}

	out = append(out, checkMCPListing(ctx, hc, base)...)

	var ready struct {
		Checks map[string]string `json:"checks"`
	}
	_, _, body, err = get(ctx, hc, "GET", base+"/readyz", nil)
	switch {
	case err != nil || json.Unmarshal(body, &ready) != nil:
		add(Check{Name: "settle_path", Detail: "GET /readyz did not answer", Fix: "check the gateway is running"})
	case ready.Checks["x402"] == "ok":
		add(Check{Name: "settle_path", OK: true})
	case ready.Checks["x402"] == "":
		add(Check{Name: "settle_path", OK: true, Warning: true, Detail: "the settlement backend reports no health in /readyz",
			Fix: "use a facilitator or RPC toolgate can probe, so /readyz shows it"})
	default:
		add(Check{Name: "settle_path", Detail: ready.Checks["x402"],
			Fix: "give --x402-facilitator URL (for the Bazaar: the CDP facilitator) or --x402-rpc with --x402-relayer-key-file, and make it reachable"})
	}
	return out
}

// checkResource probes one resource unpaid and checks its 402.
func checkResource(ctx context.Context, hc *http.Client, u, method, res string) []Check {
	var out []Check
	status, hdr, body, err := get(ctx, hc, method, u, nil)
	if err != nil {
		return append(out, Check{Name: "returns_402", Resource: res, Detail: err.Error(), Fix: "check the gateway is reachable"})
	}
	if status != 402 {
		c := Check{Name: "returns_402", Resource: res,
			Detail: fmt.Sprintf("an unpaid %s with an empty body answered %d %s, not 402: the Bazaar will not index it", method, status, snippet(body))}
		switch status {
		case 403:
			c.Fix = "no wallet may call this tool (policy): allow it for unknown_wallet in policies.json, or do not price it"
		case 404, 405:
			c.Fix = "declare the method the tool takes first in its tools.json methods"
		default:
			c.Fix = "priced tools must answer unpaid calls with 402 before any input validation"
		}
		return append(out, c)
	}
	out = append(out, Check{Name: "returns_402", Resource: res, OK: true})

	raw, err := base64.StdEncoding.DecodeString(hdr.Get(HeaderPaymentRequired))
	var pr struct {
		X402Version int `json:"x402Version"`
		Resource    struct {
			Description string `json:"description"`
		} `json:"resource"`
		Accepts    []Requirements             `json:"accepts"`
		Extensions map[string]json.RawMessage `json:"extensions"`
	}
	if err != nil || json.Unmarshal(raw, &pr) != nil || pr.X402Version != 2 {
		return append(out, Check{Name: "payment_required", Resource: res,
			Detail: "PAYMENT-REQUIRED is missing or not standard base64 of a v2 PaymentRequired",
			Fix:    "serve the 402 from toolgate itself, not a proxy that rewrites headers"})
	}
	if p := acceptsProblem(pr.Accepts); p != "" {
		out = append(out, Check{Name: "payment_required", Resource: res, Detail: p,
			Fix: "give --x402-pay-to, --x402-network and the asset's EIP-712 name and version (--x402-asset-name, --x402-asset-version)"})
	} else {
		out = append(out, Check{Name: "payment_required", Resource: res, OK: true})
	}
	if n := utf8.RuneCountInString(pr.Resource.Description); n > MaxDescription {
		out = append(out, Check{Name: "description", Resource: res, Detail: fmt.Sprintf("%d characters, limit %d", n, MaxDescription),
			Fix: "shorten the tool's description in tools.json"})
	} else if n == 0 {
		out = append(out, Check{Name: "description", Resource: res, OK: true, Warning: true, Detail: "empty",
			Fix: "give the tool a description in tools.json: it is what the listing shows"})
	} else {
		out = append(out, Check{Name: "description", Resource: res, OK: true})
	}
	out = append(out, checkBazaar(pr.Extensions["bazaar"], res))
	return out
}

func acceptsProblem(accepts []Requirements) string {
	if len(accepts) == 0 {
		return "accepts is empty"
	}
	for i, a := range accepts {
		var extra struct{ Name, Version string }
		_ = json.Unmarshal(a.Extra, &extra)
		switch {
		case a.Scheme == "" || a.Network == "" || a.Amount == "" || a.Asset == "" || a.PayTo == "":
			return fmt.Sprintf("accepts[%d] lacks scheme, network, amount, asset or payTo", i)
		case a.MaxTimeoutSeconds <= 0:
			return fmt.Sprintf("accepts[%d].maxTimeoutSeconds is %d", i, a.MaxTimeoutSeconds)
		case extra.Name == "" || extra.Version == "":
			return fmt.Sprintf("accepts[%d].extra lacks the asset's EIP-712 name and version", i)
		}
	}
	return ""
}

// checkBazaar checks an extensions.bazaar declaration: info.input with
// type and method, and info valid against the declaration's schema.
func checkBazaar(decl json.RawMessage, res string) Check {
	c := Check{Name: "bazaar_extension", Resource: res,
		Fix: `fix the tool's "discovery" block in tools.json: "input" must be valid against "input_schema"`}
	if len(decl) == 0 {
		c.Detail = "PAYMENT-REQUIRED has no extensions.bazaar"
		return c
	}
	var d struct {
		Info   json.RawMessage `json:"info"`
		Schema json.RawMessage `json:"schema"`
	}
	var info struct {
		Input struct{ Type, Method string } `json:"input"`
	}
	if json.Unmarshal(decl, &d) != nil || json.Unmarshal(d.Info, &info) != nil || info.Input.Type == "" || info.Input.Method == "" {
		c.Detail = "info.input lacks type or method (required for discovery)"
		return c
	}
	if detail := validateInfo(d.Info, d.Schema); detail != "" {
		c.Detail = detail
		return c
	}
	return Check{Name: "bazaar_extension", Resource: res, OK: true}
}

// checkBazaarMCP checks an MCP tool's extensions.bazaar declaration:
// info.input with type "mcp", tool and inputSchema, and info valid against
// the declaration's schema.
func checkBazaarMCP(decl json.RawMessage) Check {
	c := Check{Name: "bazaar_extension_mcp"}
	var d struct {
		Info   json.RawMessage `json:"info"`
		Schema json.RawMessage `json:"schema"`
	}
	var info struct {
		Input struct {
			Type, Tool  string
			InputSchema json.RawMessage `json:"inputSchema"`
		} `json:"input"`
	}
	if json.Unmarshal(decl, &d) != nil || json.Unmarshal(d.Info, &info) != nil || info.Input.Type != "mcp" ||
		info.Input.Tool == "" || !isJSONObject(info.Input.InputSchema) {
		c.Detail = "info.input lacks type mcp, tool or inputSchema"
		return c
	}
	if detail := validateInfo(d.Info, d.Schema); detail != "" {
		c.Detail = detail
		return c
	}
	c.OK = true
	return c
}

// validateInfo validates a Bazaar info object against the declaration's
// JSON Schema; it returns what is wrong, "" when it validates.
func validateInfo(info, schema json.RawMessage) string {
	var s jsonschema.Schema
	if err := json.Unmarshal(schema, &s); err != nil {
		return "schema is not a JSON Schema: " + err.Error()
	}
	rs, err := s.Resolve(nil)
	if err != nil {
		return "schema does not resolve: " + err.Error()
	}
	var inst any
	_ = json.Unmarshal(info, &inst)
	if err := rs.Validate(inst); err != nil {
		return "info does not validate against the declaration's schema: " + err.Error()
	}
	return ""
}

// mcpProbeVersion is the MCP revision the self-check's tools/call speaks:
// the stateless one, one POST without a session.
const mcpProbeVersion = "2026-07-28"

// checkMCPListing probes each tool listed as an MCP resource
// (/discovery/resources?type=mcp) with an unpaid tools/call on its MCP
// endpoint and checks the PaymentRequired it answers.
func checkMCPListing(ctx context.Context, hc *http.Client, base string) []Check {
	var list struct {
		Items []struct {
			Resource string `json:"resource"`
			Metadata struct {
				Tool string `json:"tool"`
			} `json:"metadata"`
		} `json:"items"`
	}
	status, _, body, err := get(ctx, hc, "GET", base+"/discovery/resources?type=mcp&limit=100", nil)
	if err != nil || status != 200 || json.Unmarshal(body, &list) != nil {
		return nil // reachable already said what is wrong
	}
	var out []Check
	for _, it := range list.Items {
		tool := it.Metadata.Tool
		res := "mcp:" + tool
		u, err := url.Parse(it.Resource)
		if err != nil || u.Path == "" || tool == "" {
			out = append(out, Check{Name: "mcp_payment_required", Resource: res, Detail: "listing names no MCP endpoint or tool",
				Fix: "set --public-url to the gateway's external base URL"})
			continue
		}
		call, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": map[string]any{
			"name": tool, "arguments": map[string]any{},
			"_meta": map[string]any{"io.modelcontextprotocol/protocolVersion": mcpProbeVersion, "io.modelcontextprotocol/clientCapabilities": map[string]any{}},
		}})
		req, err := http.NewRequestWithContext(ctx, "POST", base+u.EscapedPath(), bytes.NewReader(call))
		if err != nil {
			continue
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", mcpProbeVersion)
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", tool)
		resp, err := hc.Do(req)
		if err != nil {
			out = append(out, Check{Name: "mcp_payment_required", Resource: res, Detail: err.Error(), Fix: "check the gateway is reachable"})
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var rpc struct {
			Result struct {
				IsError           bool `json:"isError"`
				StructuredContent struct {
					X402Version int `json:"x402Version"`
					Resource    struct {
						URL string `json:"url"`
					} `json:"resource"`
					Accepts    []Requirements             `json:"accepts"`
					Extensions map[string]json.RawMessage `json:"extensions"`
				} `json:"structuredContent"`
			} `json:"result"`
		}
		pr := &rpc.Result.StructuredContent
		if json.Unmarshal(b, &rpc) != nil || !rpc.Result.IsError || pr.X402Version != 2 {
			c := Check{Name: "mcp_payment_required", Resource: res,
				Detail: fmt.Sprintf("an unpaid tools/call answered %d %s, not a PaymentRequired tool error", resp.StatusCode, snippet(b)),
				Fix:    "priced tools must answer unpaid calls with their payment requirements"}
			if bytes.Contains(b, []byte("denied by policy")) {
				c.Fix = "no wallet may call this tool (policy): allow it for unknown_wallet in policies.json, or do not price it"
			}
			out = append(out, c)
			continue
		}
		switch p := acceptsProblem(pr.Accepts); {
		case p != "":
			out = append(out, Check{Name: "mcp_payment_required", Resource: res, Detail: p,
				Fix: "give --x402-pay-to, --x402-network and the asset's EIP-712 name and version"})
		case pr.Resource.URL != it.Resource:
			out = append(out, Check{Name: "mcp_payment_required", Resource: res,
				Detail: fmt.Sprintf("resource.url is %q, the listing says %q", pr.Resource.URL, it.Resource),
				Fix:    "serve the MCP endpoint from toolgate itself"})
		default:
			out = append(out, Check{Name: "mcp_payment_required", Resource: res, OK: true})
		}
		c := checkBazaarMCP(pr.Extensions["bazaar"])
		c.Resource = res
		if !c.OK {
			c.Fix = `fix the tool's "discovery" block in tools.json: "input" must be valid against "input_schema"`
		}
		out = append(out, c)
	}
	return out
}

func get(ctx context.Context, hc *http.Client, method, u string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, b, err
}
