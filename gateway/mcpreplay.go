package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
)

// Idempotent replays over MCP (docs/mcp.md, "Idempotent retries"). The
// same claims as REST, through the same stages (idempotency.go): an x402
// payment carrying the payment-identifier extension in _meta
// ["x402/payment"], the same payment again after a pending settlement, and
// for key and token callers _meta["toolgate/idempotency-key"], MCP's
// place for what REST sends as the Idempotency-Key header. A recorded
// answer is replayed only over MCP (the protocol is part of the request's
// fingerprint): the tools/call result rebuilt from it, with
// _meta["toolgate/replayed"] true.

// mcpIdempotencyKey reads _meta["toolgate/idempotency-key"]: absent or
// null is no key; anything but a string is not ok.
func mcpIdempotencyKey(raw json.RawMessage) (key []byte, ok bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil, false
	}
	if s == "" {
		return nil, true
	}
	return []byte(s), true
}

// mcpReplayResult is the tools/call result of a recorded answer: an
// upstream MCP server's result as it was, or the upstream's answer (or the
// decision) as a tool result; the cost of this call (nothing), its request
// id and the billed call's, and the payment's receipt as it stands now.
func (g *Gateway) mcpReplayResult(c *call, rec *recordedAnswer) map[string]any {
	meta := map[string]any{
		"toolgate/cost_usd":            "0.000",
		"toolgate/request_id":          string(c.reqID),
		"toolgate/replayed":            true,
		"toolgate/replayed_request_id": rec.RequestID,
	}
	if rec.PayResponse != "" {
		if raw, err := base64.StdEncoding.DecodeString(rec.PayResponse); err == nil && json.Valid(raw) {
			meta["x402/payment-response"] = json.RawMessage(raw)
		}
	}
	if !rec.BodyKept {
		// Too large to keep: the outcome without the output.
		meta["toolgate/body_kept"] = false
		return map[string]any{"content": []map[string]any{}, "isError": rec.Status >= 400, "_meta": meta}
	}
	if rec.MCPResult {
		return withMeta(rec.Body, meta)
	}
	meta["toolgate/upstream_status"] = rec.Status
	out := map[string]any{
		"content": []map[string]any{{"type": "text", "text": string(rec.Body)}},
		"isError": rec.Status >= 400,
		"_meta":   meta,
	}
	if t := bytes.TrimSpace(rec.Body); len(t) > 0 && t[0] == '{' && json.Valid(t) {
		out["structuredContent"] = json.RawMessage(t)
	}
	return out
}
