package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// MCPServer is an upstream MCP server whose tools the catalog imports
// (tools.json "mcp_servers"): each tool T it lists becomes the tool
// "<ID>/T", routed at /tools/<ID>/T, with the server's class, price, packs,
// settle mode and timeouts unless its entry in Tools overrides them.
type MCPServer struct {
	ID  string
	URL string // the server's Streamable HTTP endpoint
	// template is the tool object every imported tool starts from (JSON,
	// validated); overrides are the per-tool objects laid over it.
	template  map[string]json.RawMessage
	overrides map[string]map[string]json.RawMessage
	Defaults  Tool // the server's defaults, compiled (class, price, timeouts, limits)
}

// ImportedTool is one tool an MCP server listed.
type ImportedTool struct {
	Name        string
	Description string
	InputSchema json.RawMessage
}

var mcpServerFields = map[string]bool{
	"id": true, "url": true, "rate_class": true, "price_usd": true, "packs": true, "settle": true,
	"timeout_ms": true, "idle_timeout_ms": true, "max_response_bytes": true, "tools": true, "description": true,
}

var mcpToolFields = map[string]bool{
	"rate_class": true, "price_usd": true, "packs": true, "settle": true, "timeout_ms": true,
	"description": true, "max_response_bytes": true,
}

// decodeMCPServers decodes and validates the "mcp_servers" array.
func decodeMCPServers(raw json.RawMessage, ps *Problems, o Options) []*MCPServer {
	var raws []json.RawMessage
	if err := json.Unmarshal(raw, &raws); err != nil {
		ps.Add("mcp_servers", "must be an array of server objects")
		return nil
	}
	var out []*MCPServer
	seen := map[string]bool{}
	for i, r := range raws {
		at := fmt.Sprintf("mcp_servers[%d]", i)
		var f map[string]json.RawMessage
		if err := strictUnmarshal(r, &f); err != nil || f == nil {
			ps.Add(at, "must be an object")
			continue
		}
		keys := make([]string, 0, len(f))
		for k := range f {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !mcpServerFields[k] {
				ps.Add(at+"."+k, "unknown field")
			}
		}
		var id, url string
		json.Unmarshal(f["id"], &id)
		json.Unmarshal(f["url"], &url)
		switch {
		case f["id"] == nil:
			ps.Add(at+".id", "required")
		case id == "" || strings.Contains(id, "/") || !validToolID(id):
			ps.Add(at+".id", fmt.Sprintf("%q: one segment of letters, digits and - _ .", id))
		case seen[id]:
			ps.Add(at+".id", fmt.Sprintf("duplicate MCP server id %q", id))
		}
		seen[id] = true
		if f["url"] == nil {
			ps.Add(at+".url", "required")
		}
		tmpl := map[string]json.RawMessage{}
		for k, v := range f {
			if mcpServerFields[k] && k != "id" && k != "url" && k != "tools" {
				tmpl[k] = v
			}
		}
		if tmpl["rate_class"] == nil {
			tmpl["rate_class"] = json.RawMessage(`"light"`)
		}
		s := &MCPServer{ID: id, URL: url, template: tmpl, overrides: map[string]map[string]json.RawMessage{}}
		// The template must make a valid tool (its problems named at the
		// server's own paths).
		t := s.decode("", nil, at, ps, o)
		if t != nil {
			s.Defaults = *t
		}
		if v := f["tools"]; v != nil {
			var tools map[string]json.RawMessage
			if err := json.Unmarshal(v, &tools); err != nil {
				ps.Add(at+".tools", "must be an object of tool names to overrides")
			}
			names := make([]string, 0, len(tools))
			for n := range tools {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				tat := fmt.Sprintf("%s.tools[%q]", at, n)
				var of map[string]json.RawMessage
				if err := strictUnmarshal(tools[n], &of); err != nil || of == nil {
					ps.Add(tat, "must be an object")
					continue
				}
				for k := range of {
					if !mcpToolFields[k] {
						ps.Add(tat+"."+k, "unknown field")
						delete(of, k) // the rest is still checked
					}
				}
				s.overrides[n] = of
				s.decode(n, nil, tat, ps, o)
			}
		}
		out = append(out, s)
	}
	return out
}

// decode builds the tool for the server's tool name (the server's
// defaults when name is ""), reporting problems under at.
func (s *MCPServer) decode(name string, imp *ImportedTool, at string, ps *Problems, o Options) *Tool {
	obj := make(map[string]json.RawMessage, len(s.template)+4)
	for k, v := range s.template {
		obj[k] = v
	}
	id := s.ID
	if id == "" {
		id = "x"
	}
	if name != "" {
		id += "/" + name
	}
	if imp != nil && imp.Description != "" && obj["description"] == nil {
		obj["description"], _ = json.Marshal(imp.Description)
	}
	for k, v := range s.overrides[name] {
		obj[k] = v
	}
	obj["id"], _ = json.Marshal(id)
	obj["upstream"], _ = json.Marshal(s.URL)
	if imp != nil && len(imp.InputSchema) > 0 && imp.InputSchema[0] == '{' {
		var buf bytes.Buffer
		if json.Compact(&buf, imp.InputSchema) == nil {
			obj["discovery"] = json.RawMessage(`{"input_schema":` + buf.String() + `}`)
		}
	}
	raw, _ := json.Marshal(obj)
	var local Problems
	t := decodeTool(raw, at, &local, o)
	for _, p := range local.List {
		p.Path = strings.Replace(p.Path, at+".upstream", at+".url", 1)
		ps.List = append(ps.List, p)
	}
	if t != nil {
		t.MCPServer, t.MCPTool = s.ID, name
	}
	return t
}

// WithImports returns a catalog holding c's tools and the tools the MCP
// servers listed (by server id), in server order and, within a server,
// the order listed. A listed tool whose name cannot make a tool id, or
// whose id is taken, is left out and reported in skipped (the rest are
// imported). c itself is not changed.
func (c *Catalog) WithImports(listed map[string][]ImportedTool) (out *Catalog, skipped []string) {
	out = &Catalog{byPath: make(map[string]*Tool, len(c.Tools)), byID: make(map[string]*Tool, len(c.Tools)), MCPServers: c.MCPServers}
	add := func(t *Tool) bool {
		if out.byID[t.ID] != nil || out.byPath[t.Path] != nil {
			return false
		}
		cp := *t
		cp.Index = len(out.Tools)
		out.Tools = append(out.Tools, &cp)
		out.byID[cp.ID], out.byPath[cp.Path] = &cp, &cp
		return true
	}
	for _, t := range c.Tools {
		if t.MCPServer == "" {
			add(t)
		}
	}
	for _, s := range c.MCPServers {
		for _, imp := range listed[s.ID] {
			var ps Problems
			if strings.Contains(imp.Name, "/") || !validToolID(imp.Name) {
				skipped = append(skipped, fmt.Sprintf("%s: tool name %q cannot make a tool id", s.ID, imp.Name))
				continue
			}
			t := s.decode(imp.Name, &imp, "mcp_servers."+s.ID, &ps, Options{})
			if t == nil {
				skipped = append(skipped, fmt.Sprintf("%s/%s: %v", s.ID, imp.Name, ps.Err()))
				continue
			}
			if !add(t) {
				skipped = append(skipped, fmt.Sprintf("%s/%s: id or route already used", s.ID, imp.Name))
			}
		}
	}
	return out, skipped
}
