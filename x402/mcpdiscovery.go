package x402

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MCPTransport is the MCP transport toolgate serves (Bazaar
// info.input.transport).
const MCPTransport = "streamable-http"

// buildMCPBazaar returns the extensions.bazaar declaration of res as an
// MCP tool (specs/extensions/bazaar.md, "MCP Tools"): info.input
// {type:"mcp", tool, description, inputSchema, transport, example} and the
// output example, with a schema that requires type, tool and inputSchema
// and checks the example against the tool's own input schema. It returns
// nil when res has no MCP endpoint (Resource.MCPPath "").
func buildMCPBazaar(res Resource) ([]byte, error) {
	if res.MCPPath == "" {
		return nil, nil
	}
	var d discoveryBlock
	if len(bytes.TrimSpace(res.Discovery)) > 0 {
		if err := json.Unmarshal(res.Discovery, &d); err != nil {
			return nil, fmt.Errorf("discovery: %v", err)
		}
	}
	if len(d.InputSchema) == 0 {
		d.InputSchema = d.InputSchema2
	}
	schemaIn := json.RawMessage(`{"type":"object"}`)
	if isJSONObject(d.InputSchema) {
		schemaIn = d.InputSchema
	}
	var b bytes.Buffer
	b.WriteString(`{"info":{"input":{"type":"mcp","tool":`)
	b.Write(mustJSON(res.ToolID))
	if res.Description != "" {
		b.WriteString(`,"description":`)
		b.Write(mustJSON(res.Description))
	}
	b.WriteString(`,"inputSchema":`)
	b.Write(schemaIn)
	b.WriteString(`,"transport":"` + MCPTransport + `"`)
	if isJSONObject(d.Input) { // the example arguments
		b.WriteString(`,"example":`)
		b.Write(d.Input)
	}
	b.WriteByte('}')
	if len(d.Output) > 0 {
		b.WriteString(`,"output":{"type":"json","example":`)
		b.Write(d.Output)
		b.WriteByte('}')
	}
	b.WriteString(`},"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"input":{"type":"object","properties":{`)
	b.WriteString(`"type":{"type":"string","const":"mcp"},"tool":{"type":"string"},"description":{"type":"string"},`)
	b.WriteString(`"transport":{"type":"string","enum":["streamable-http","sse"]},"inputSchema":{"type":"object"},"example":`)
	b.Write(schemaIn)
	b.WriteString(`},"required":["type","tool","inputSchema"],"additionalProperties":false},`)
	b.WriteString(`"output":{"type":"object","properties":{"type":{"type":"string"},"example":{}},"required":["type"]}},"required":["input"]}}`)
	var c bytes.Buffer
	if err := json.Compact(&c, b.Bytes()); err != nil {
		return nil, fmt.Errorf("discovery: %v", err)
	}
	return c.Bytes(), nil
}

// MCPResourceURL returns the MCP endpoint's public URL, "" when the offer
// has none (Resource.MCPPath).
func (o *Offer) MCPResourceURL() string {
	if o.res.MCPPath == "" {
		return ""
	}
	return o.cfg.PublicURL + o.res.MCPPath
}

// MCPBazaarDeclaration returns the extensions.bazaar declaration of the
// tool as an MCP tool (nil without an MCP endpoint).
func (o *Offer) MCPBazaarDeclaration() []byte { return o.mcpBazaar }

// MCPPaymentRequired returns the PaymentRequired (JSON, not base64) a
// tools/call of this tool answers without a payment (x402
// transports-v2/mcp.md): the MCP endpoint as resource, the same accepts,
// and the MCP Bazaar declaration; error is reason, or "Payment required".
// Without an MCP endpoint it is the HTTP PaymentRequired.
func (o *Offer) MCPPaymentRequired(reason string) []byte {
	if reason == "" {
		reason = defaultPaymentRequired
	}
	tail := o.prTail
	if o.mcpPrTail != nil {
		tail = o.mcpPrTail
	}
	q, _ := json.Marshal(reason)
	return append(append(append(make([]byte, 0, len(o.prHead)+len(q)+len(tail)), o.prHead...), q...), tail...)
}

// mcpPaymentRequiredTail is the MCP PaymentRequired after its error
// string.
func (o *Offer) mcpPaymentRequiredTail() []byte {
	resInfo := mustJSON(ResourceInfo{URL: o.MCPResourceURL(), Description: o.res.Description, MimeType: o.res.MimeType})
	tail := make([]byte, 0, 256+len(resInfo)+len(o.accepts)+len(o.mcpBazaar)+len(paymentIdentifierDecl))
	tail = append(tail, `,"resource":`...)
	tail = append(tail, resInfo...)
	tail = append(tail, `,"accepts":[`...)
	tail = append(tail, o.accepts...)
	tail = append(tail, `],"extensions":{"bazaar":`...)
	tail = append(tail, o.mcpBazaar...)
	tail = append(tail, `,"`+ExtPaymentIdentifier+`":`...)
	tail = append(tail, paymentIdentifierDecl...)
	return append(tail, "}}"...)
}
