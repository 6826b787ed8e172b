// Package catalog loads tools.json: the tools the gateway fronts, how each
// is routed, priced, rate-classed and forwarded.
//
// A Catalog is immutable once decoded; the gateway swaps whole catalogs on
// reload. The package knows nothing of callers, policies or HTTP serving.
package catalog

import (
	"time"

	"github.com/toolgate/toolgate/money"
)

// Settle says when an x402 payment for a tool is settled.
type Settle uint8

const (
	// AfterUpstream forwards first, buffers the answer and settles only if
	// the upstream answered below 400 (the default).
	AfterUpstream Settle = iota
	// BeforeUpstream settles first; for side-effecting tools.
	BeforeUpstream
)

// Tool is one catalog entry, compiled. Tools are shared read-only.
type Tool struct {
	// Index is the tool's position in Catalog.Tools; policy bitsets use it.
	Index     int
	ID        string
	Path      string   // route, default "/tools/<id>"
	Methods   []string // allowed methods, default ["POST"]
	RateClass RateClass
	Price     money.Micros // 0 = free; for a metered tool, the most one call costs
	// Metered: the upstream reports each call's cost in the response
	// header X-Toolgate-Cost-Usd (at most Price); see docs/x402.md, "Metered prices".
	Metered     bool
	Upstream    string // absolute http(s) URL, or "demo:<name>"
	Packs       []string
	Description string
	Settle      Settle
	// VerifyOverlap (after_upstream only): an x402 payment is verified
	// while the upstream runs instead of before; the answer waits for
	// both. A payment found invalid then has had its call run unpaid (the
	// answer is discarded, nothing billed). For tools whose calls are
	// cheap to run for nothing and safe to repeat. See docs/x402.md.
	VerifyOverlap bool
	Timeout       time.Duration
	// IdleTimeout is how long an idle pooled connection to the upstream is
	// kept (default DefaultIdleTimeout); MaxResponseBytes bounds one
	// upstream response (default DefaultMaxResponseBytes).
	IdleTimeout      time.Duration
	MaxResponseBytes int64
	// Discovery is the raw `discovery` block for the x402 Bazaar declaration.
	Discovery []byte
	// MCPServer and MCPTool name the upstream MCP server and its tool for
	// a tool imported from "mcp_servers"; "" for a REST tool.
	MCPServer, MCPTool string
}

// Catalog is an immutable set of tools with their routes.
type Catalog struct {
	Tools []*Tool
	// MCPServers are the upstream MCP servers to import tools from; their
	// tools join Tools through WithImports.
	MCPServers []*MCPServer
	byPath     map[string]*Tool
	byID       map[string]*Tool
}
