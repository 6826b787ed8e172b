package gateway

import (
	"encoding/json"
	"net"
	"strings"

	"github.com/valyala/fasthttp"
)

// StartDemoUpstreams serves the quickstart's built-in tools on a loopback
// port, so that catalog entries with upstream "demo:<name>" work with
// nothing else running. Each answers a small JSON document describing what
// it received. It returns the base URL and a function that stops it.
//
// The demo upstreams are real HTTP servers: the gateway forwards to them
// exactly as it would to a real tool.
func StartDemoUpstreams() (baseURL string, stop func() error, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &fasthttp.Server{Handler: demoHandler, Name: "toolgate-demo"}
	go srv.Serve(ln) //nolint:errcheck // ends when ln closes
	return "http://" + ln.Addr().String(), srv.Shutdown, nil
}

func demoHandler(ctx *fasthttp.RequestCtx) {
	name := strings.TrimPrefix(string(ctx.Path()), "/")
	var input any
	if body := ctx.PostBody(); len(body) > 0 {
		if err := json.Unmarshal(body, &input); err != nil {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":"demo upstream expects a JSON body"}`)
			return
		}
	}
	out := map[string]any{
		"demo":      name,
		"ok":        true,
		"principal": string(ctx.Request.Header.Peek("X-Toolgate-Principal")),
		"input":     input,
	}
	switch name {
	case "extract":
		if m, ok := input.(map[string]any); ok {
			if s, ok := m["text"].(string); ok {
				out["result"] = map[string]any{"words": len(strings.Fields(s)), "chars": len(s)}
			}
		}
	case "email", "whatsapp":
		out["result"] = map[string]any{"queued": true, "message_id": "demo-" + string(ctx.Request.Header.Peek("X-Request-Id"))}
	}
	b, _ := json.Marshal(out)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
