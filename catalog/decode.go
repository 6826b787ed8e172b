package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/toolgate/toolgate/money"
)

// DefaultTimeout is a tool's upstream timeout when tools.json gives none.
const DefaultTimeout = 30 * time.Second

// ReservedPrefixes are the gateway's own paths; no tool route may use them.
var ReservedPrefixes = []string{"/credits", "/wallets", "/authorization", "/audit", "/discovery", "/healthz", "/readyz", "/metrics", "/mcp", "/ui", "/stats", "/catalog", "/groups", "/approvals", "/policies"}

var toolFields = map[string]bool{
	"id": true, "path": true, "methods": true, "rate_class": true, "price_usd": true, "price": true,
	"upstream": true, "packs": true, "description": true, "settle": true, "verify_overlap": true,
	"timeout_ms": true, "discovery": true, "idle_timeout_ms": true, "max_response_bytes": true,
}

// DefaultIdleTimeout is how long an idle upstream connection is kept for
// reuse: below the shortest idle timeouts common upstreams use (Python's
// http.server with timeout=1, gunicorn's 2 s keep-alive), so the gateway
// closes an idle connection before the upstream does.
const DefaultIdleTimeout = 900 * time.Millisecond

// DefaultMaxResponseBytes bounds one upstream response (32 MiB); larger
// answers are refused with 502, unbilled.
const DefaultMaxResponseBytes = 32 << 20

// MaxResponseBytesLimit is the largest max_response_bytes accepted (1 GiB).
const MaxResponseBytesLimit = 1 << 30

// Options are the checks of a decode that depend on where the gateway
// runs. The zero value adds none.
type Options struct {
	// Listen is the gateway's own listen address ("127.0.0.1:8402",
	// ":8402"). When set, an upstream that would dial the gateway itself
	// (same port; same host, or both loopback, localhost or an unspecified
	// address) is refused at tools[i].upstream.
	Listen string
}

// Load reads and decodes a tools.json file.
func Load(path string) (*Catalog, error) { return LoadWith(path, Options{}) }

// LoadWith reads and decodes a tools.json file with the checks of o.
func LoadWith(path string, o Options) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	return DecodeWith(data, o)
}

// Decode parses a tools.json document strictly: unknown fields, wrong types,
// duplicate ids or routes, bad or absurd prices (above money.MaxAmount),
// ids and routes that are not clean paths, reserved paths, and upstream
// URLs with credentials, a query or a fragment are all reported, each with
// its JSON path, in one *ValidationError.
func Decode(data []byte) (*Catalog, error) { return DecodeWith(data, Options{}) }

// DecodeWith is Decode with the checks of o.
func DecodeWith(data []byte, o Options) (*Catalog, error) {
	var ps Problems
	var top map[string]json.RawMessage
	if err := strictUnmarshal(data, &top); err != nil || top == nil {
		ps.Add("$", "must be a JSON object with a \"tools\" array")
		return nil, ps.Err()
	}
	for k := range top {
		if k != "tools" && k != "mcp_servers" {
			ps.Add(k, "unknown field")
		}
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(top["tools"], &raws); err != nil || top["tools"] == nil {
		ps.Add("tools", "must be an array of tool objects")
		return nil, ps.Err()
	}
	c := &Catalog{byPath: make(map[string]*Tool), byID: make(map[string]*Tool)}
	if v := top["mcp_servers"]; v != nil {
		c.MCPServers = decodeMCPServers(v, &ps, o)
	}
	for i, raw := range raws {
		at := fmt.Sprintf("tools[%d]", i)
		t := decodeTool(raw, at, &ps, o)
		if t == nil {
			continue
		}
		if _, dup := c.byID[t.ID]; dup {
			ps.Add(at+".id", fmt.Sprintf("duplicate tool id %q", t.ID))
			continue
		}
		if other, dup := c.byPath[t.Path]; dup {
			ps.Add(at+".path", fmt.Sprintf("route %q already used by %q", t.Path, other.ID))
			continue
		}
		t.Index = len(c.Tools)
		c.Tools = append(c.Tools, t)
		c.byID[t.ID] = t
		c.byPath[t.Path] = t
	}
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeTool(raw json.RawMessage, at string, ps *Problems, o Options) *Tool {
	var f map[string]json.RawMessage
	if err := strictUnmarshal(raw, &f); err != nil || f == nil {
		ps.Add(at, "must be an object")
		return nil
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !toolFields[k] {
			ps.Add(at+"."+k, "unknown field")
		}
	}
	before := len(ps.List)
	t := &Tool{Methods: []string{"POST"}, Timeout: DefaultTimeout, IdleTimeout: DefaultIdleTimeout, MaxResponseBytes: DefaultMaxResponseBytes}
	str := func(name string, required bool) string {
		v, ok := f[name]
		if !ok {
			if required {
				ps.Add(at+"."+name, "required")
			}
			return ""
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			ps.Add(at+"."+name, "must be a string")
		}
		return s
	}
	t.ID = str("id", true)
	if t.ID != "" && !validToolID(t.ID) {
		ps.Add(at+".id", fmt.Sprintf("%q: use letters, digits and - _ . / in non-empty segments other than . and .. (no leading or trailing /, no *, not pack/…)", t.ID))
	}
	t.Path = str("path", false)
	if t.Path == "" && t.ID != "" {
		t.Path = "/tools/" + t.ID
	}
	routeOK := true
	if _, ok := f["path"]; ok {
		msgs := routeProblems(t.Path)
		for _, msg := range msgs {
			ps.Add(at+".path", fmt.Sprintf("%q %s", t.Path, msg))
		}
		routeOK = len(msgs) == 0
	}
	for _, p := range ReservedPrefixes {
		if routeOK && (t.Path == p || strings.HasPrefix(t.Path, p+"/")) {
			ps.Add(at+".path", fmt.Sprintf("%q is reserved for the gateway", t.Path))
		}
	}
	if v, ok := f["methods"]; ok {
		var ms []string
		if err := json.Unmarshal(v, &ms); err != nil || len(ms) == 0 {
			ps.Add(at+".methods", "must be a non-empty array of HTTP methods")
		} else {
			t.Methods = t.Methods[:0]
			for j, m := range ms {
				switch m {
				case "GET", "POST", "PUT", "PATCH", "DELETE":
					t.Methods = append(t.Methods, m)
				default:
					ps.Add(fmt.Sprintf("%s.methods[%d]", at, j), fmt.Sprintf("unsupported method %q", m))
				}
			}
		}
	}
	if rc := str("rate_class", true); rc != "" {
		c, ok := ParseRateClass(rc)
		if !ok {
			ps.Add(at+".rate_class", fmt.Sprintf("%q is not one of light, medium, heavy", rc))
		}
		t.RateClass = c
	}
	if v, ok := f["price_usd"]; ok {
		p, err := money.ParseAmount(v)
		if err != nil {
			ps.Add(at+".price_usd", fmt.Sprintf("%s: %v", v, err))
		}
		t.Price = p
	}
	if v, ok := f["price"]; ok {
		decodePrice(v, at+".price", t, ps, f["price_usd"] != nil)
	}
	t.Upstream = str("upstream", true)
	if t.Upstream != "" && !strings.HasPrefix(t.Upstream, "demo:") {
		for _, msg := range upstreamProblems(t.Upstream, o.Listen) {
			ps.Add(at+".upstream", msg)
		}
	}
	if v, ok := f["packs"]; ok {
		if err := json.Unmarshal(v, &t.Packs); err != nil {
			ps.Add(at+".packs", "must be an array of strings")
		}
		for j, p := range t.Packs {
			if p == "" || strings.ContainsAny(p, "/* ") {
				ps.Add(fmt.Sprintf("%s.packs[%d]", at, j), fmt.Sprintf("%q is not a valid pack name", p))
			}
		}
	}
	t.Description = str("description", false)
	switch s := str("settle", false); s {
	case "", "after_upstream":
		t.Settle = AfterUpstream
	case "before_upstream":
		t.Settle = BeforeUpstream
	default:
		ps.Add(at+".settle", fmt.Sprintf("%q is not after_upstream or before_upstream", s))
	}
	if v, ok := f["verify_overlap"]; ok {
		if err := json.Unmarshal(v, &t.VerifyOverlap); err != nil {
			ps.Add(at+".verify_overlap", "must be true or false")
		} else if t.VerifyOverlap && t.Settle != AfterUpstream {
			ps.Add(at+".verify_overlap", "needs settle after_upstream (a before_upstream payment is settled before the call)")
		}
	}
	if v, ok := f["timeout_ms"]; ok {
		var ms int64
		if err := json.Unmarshal(v, &ms); err != nil || ms <= 0 || ms > 600_000 {
			ps.Add(at+".timeout_ms", "must be an integer between 1 and 600000")
		} else {
			t.Timeout = time.Duration(ms) * time.Millisecond
		}
	}
	if v, ok := f["idle_timeout_ms"]; ok {
		var ms int64
		if err := json.Unmarshal(v, &ms); err != nil || ms <= 0 || ms > 3_600_000 {
			ps.Add(at+".idle_timeout_ms", "must be an integer between 1 and 3600000")
		} else {
			t.IdleTimeout = time.Duration(ms) * time.Millisecond
		}
	}
	if v, ok := f["max_response_bytes"]; ok {
		var n int64
		if err := json.Unmarshal(v, &n); err != nil || n <= 0 || n > MaxResponseBytesLimit {
			ps.Add(at+".max_response_bytes", fmt.Sprintf("must be an integer between 1 and %d", MaxResponseBytesLimit))
		} else {
			t.MaxResponseBytes = n
		}
	}
	if v, ok := f["discovery"]; ok {
		if len(v) == 0 || v[0] != '{' {
			ps.Add(at+".discovery", "must be an object")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, v); err == nil {
			t.Discovery = buf.Bytes()
		}
	}
	if len(ps.List) > before {
		return nil
	}
	return t
}

// validToolID reports whether id is a tool id: at most 128 bytes of
// letters, digits and - _ . / in non-empty segments, none of them "." or
// "..", so that "/tools/<id>" is a clean path a request can match.
func validToolID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == '/':
		default:
			return false
		}
	}
	for seg := range strings.SplitSeq(id, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return !strings.HasPrefix(id, "pack/")
}

// strictUnmarshal decodes one JSON value and rejects trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

// Route returns the tool served at path, or nil. It does not allocate.
func (c *Catalog) Route(path []byte) *Tool { return c.byPath[string(path)] }

// ByID returns the tool with the given id, or nil.
func (c *Catalog) ByID(id string) *Tool { return c.byID[id] }

// AllowsMethod reports whether the tool is served for HTTP method m.
func (t *Tool) AllowsMethod(m []byte) bool {
	for _, x := range t.Methods {
		if x == string(m) {
			return true
		}
	}
	return false
}

// decodePrice reads a tool's "price" object: {"max_usd": "0.10",
// "metered": true}. A metered tool's upstream reports what each call
// cost; max_usd caps it and is what a call reserves.
func decodePrice(raw json.RawMessage, at string, t *Tool, ps *Problems, hasPriceUSD bool) {
	var p struct {
		MaxUSD  json.RawMessage `json:"max_usd"`
		Metered *bool           `json:"metered"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		ps.Add(at, `must be an object {"max_usd": "0.10", "metered": true}`)
		return
	}
	if hasPriceUSD {
		ps.Add(at, "give price_usd or price, not both")
	}
	if p.MaxUSD == nil {
		ps.Add(at+".max_usd", "required")
	} else if m, err := money.ParseAmount(p.MaxUSD); err != nil {
		ps.Add(at+".max_usd", fmt.Sprintf("%s: %v", p.MaxUSD, err))
	} else if m <= 0 {
		ps.Add(at+".max_usd", "must be above 0")
	} else {
		t.Price = m
	}
	if p.Metered == nil || !*p.Metered {
		ps.Add(at+".metered", `must be true (a fixed price is "price_usd")`)
		return
	}
	t.Metered = true
}
