package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
)

// apiAudit serves GET /audit (JSON lines, oldest first) and /audit/verify.
func (g *Gateway) apiAudit(ctx *fasthttp.RequestCtx, p string) bool {
	if !ctx.IsGet() {
		writeAPIError(ctx, errBadMethod)
		return true
	}
	if g.opts.Cluster != nil && g.auditFanout(ctx, p) { // auditfanout.go
		return true
	}
	switch p {
	case "/audit/verify":
		rep := g.led.Verify()
		g.lastVerify.Store(&verifyResult{At: g.now().UTC(), Report: rep})
		body, _ := json.Marshal(rep)
		ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
		writeJSON(ctx, 200, body)
		return true
	case "/audit/export":
		g.auditExport(ctx)
		return true
	case "/audit":
	default:
		return false
	}
	q, aerr := parseAuditQuery(ctx.QueryArgs(), g.now())
	if aerr != nil {
		writeAPIError(ctx, aerr)
		return true
	}
	// Collect first so that a store error still yields a clean status.
	var lines []byte
	n := 0
	err := g.led.QueryRaw(q, func(raw []byte) error {
		lines = append(append(lines, raw...), '\n')
		n++
		return nil
	})
	if err != nil {
		g.log.Error("audit query", "err", err)
		writeAPIError(ctx, apiErr(503, "Ledger unavailable"))
		return true
	}
	ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
	ctx.Response.Header.Set("X-Records", strconv.Itoa(n))
	ctx.SetContentType("application/x-ndjson")
	ctx.SetBody(lines)
	return true
}

// maxAuditLimit bounds one /audit answer; page with since= past the last at.
const maxAuditLimit = 100_000

func parseAuditQuery(args *fasthttp.Args, now time.Time) (ledger.Query, *Decision) {
	var q ledger.Query
	var bad []string
	args.VisitAll(func(k, v []byte) {
		key, val := string(k), string(v)
		switch key {
		case "principal":
			q.Principal = val
		case "outcome":
			q.Outcome = val
		case "tool":
			q.Tool = val
		case "type":
			q.Type = val
		case "order":
			switch val {
			case "asc":
			case "desc":
				q.Desc = true
			default:
				bad = append(bad, "order: want asc or desc")
			}
		case "since", "until":
			t, err := parseWhen(val, now)
			if err != nil {
				bad = append(bad, key+": "+err.Error())
				return
			}
			if key == "since" {
				q.Since = t
			} else {
				q.Until = t
			}
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 || n > maxAuditLimit {
				bad = append(bad, "limit: must be an integer between 1 and "+strconv.Itoa(maxAuditLimit))
				return
			}
			q.Limit = n
		default:
			bad = append(bad, key+": unknown parameter")
		}
	})
	if len(bad) > 0 {
		return q, badRequest("Invalid query: " + strings.Join(bad, "; "))
	}
	if q.Limit == 0 {
		q.Limit = maxAuditLimit
	}
	return q, nil
}

// parseWhen reads an RFC 3339 time or a duration back from now ("24h").
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			d = -d
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errBadWhen
	}
	return t, nil
}

var errBadWhen = errors.New("want an RFC 3339 time or a duration such as 24h")

// auditExport serves GET /audit/export?since=&until=: JSON lines of records
// and checkpoints, ending in a fresh signed checkpoint, verifiable offline.
func (g *Gateway) auditExport(ctx *fasthttp.RequestCtx) {
	now := g.now()
	since, until := now.Add(-24*time.Hour), now
	args := ctx.QueryArgs()
	var bad []string
	if v := args.Peek("since"); len(v) > 0 {
		t, err := parseWhen(string(v), now)
		if err != nil {
			bad = append(bad, "since: "+err.Error())
		}
		since = t
	}
	if v := args.Peek("until"); len(v) > 0 {
		t, err := parseWhen(string(v), now)
		if err != nil {
			bad = append(bad, "until: "+err.Error())
		}
		until = t
	}
	if len(bad) > 0 {
		writeAPIError(ctx, badRequest("Invalid query: "+strings.Join(bad, "; ")))
		return
	}
	var buf bytes.Buffer
	if err := g.led.Export(&buf, since, until); err != nil {
		g.log.Error("audit export", "err", err)
		writeAPIError(ctx, apiErr(503, "Ledger unavailable"))
		return
	}
	ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
	ctx.SetContentType("application/x-ndjson")
	ctx.SetBody(buf.Bytes())
}
