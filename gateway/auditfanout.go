package gateway

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// ClusterPeer is one live node of a cluster and where its management API
// answers the other nodes.
type ClusterPeer struct {
	Node string
	URL  string // http://host:port
	// What the node published at its last heartbeat: the public key of
	// its checkpoints (hex), its chain head, and when.
	PublicKey string
	HeadSeq   uint64
	HeadHash  string
	SeenAt    time.Time
}

// publishedChain is a node's published chain in /audit/verify's answer.
type publishedChain struct {
	PublicKey string    `json:"public_key,omitempty"`
	HeadSeq   uint64    `json:"head_seq"`
	HeadHash  string    `json:"head_hash,omitempty"`
	SeenAt    time.Time `json:"seen_at,omitzero"`
}

// ClusterPeers lists the live nodes (a ClusterView that also implements
// it gets /audit and /audit/verify answered for the whole cluster).
type ClusterPeers interface {
	Peers() []ClusterPeer
}

// hdrFanout marks a request one node sends another while answering for
// the cluster: the peer answers for itself only.
const hdrFanout = "X-Toolgate-Fanout"

// fromPeer reports whether the request is a peer's, asking for this
// node's own answer.
func fromPeer(ctx *fasthttp.RequestCtx) bool { return len(ctx.Request.Header.Peek(hdrFanout)) > 0 }

// fanoutTimeout bounds each peer's answer.
const fanoutTimeout = 3 * time.Second

type peerAnswer struct {
	peer   ClusterPeer
	status int
	body   []byte
	err    string
}

// auditFanout answers GET /audit and /audit/verify for the whole cluster
// (docs/cluster.md): it asks every live node (itself included, through
// its advertised URL) for its own answer, with the caller's credentials,
// and merges them. /audit: every node's records, each with "node", merged
// by time (oldest first, at most limit), then one line {"type":
// "unreachable","node":…,"error":…} per node that did not answer (also in
// X-Cluster-Unreachable). /audit/verify: {"ok", "nodes": {node: report},
// "published": {node: its public key and chain head from its last
// heartbeat}, "unreachable": {node: why}}; ok only when every node
// answered ok. It
// reports false when the request is itself a peer's (answer locally).
func (g *Gateway) auditFanout(ctx *fasthttp.RequestCtx, p string) bool {
	cp, ok := g.opts.Cluster.(ClusterPeers)
	if !ok || (p != "/audit" && p != "/audit/verify") || fromPeer(ctx) {
		return false
	}
	peers := cp.Peers()
	if len(peers) == 0 {
		return false
	}
	answers := askPeers(ctx, peers, p, ctx.QueryArgs().QueryString())
	if p == "/audit/verify" {
		out := map[string]any{}
		reports := map[string]json.RawMessage{}
		why := map[string]string{}
		allOK := true
		for _, a := range answers {
			if a.err != "" {
				why[a.peer.Node], allOK = a.err, false
				continue
			}
			reports[a.peer.Node] = a.body
			var r struct {
				OK bool `json:"ok"`
			}
			if json.Unmarshal(a.body, &r) != nil || !r.OK {
				allOK = false
			}
		}
		published := make(map[string]publishedChain, len(peers))
		for _, pe := range peers {
			published[pe.Node] = publishedChain{pe.PublicKey, pe.HeadSeq, pe.HeadHash, pe.SeenAt}
		}
		out["ok"], out["nodes"], out["published"] = allOK, reports, published
		if len(why) > 0 {
			out["unreachable"] = why
		}
		body, _ := json.Marshal(out)
		writeJSON(ctx, 200, body)
		return true
	}
	q, aerr := parseAuditQuery(ctx.QueryArgs(), g.now())
	if aerr != nil {
		writeAPIError(ctx, aerr)
		return true
	}
	type line struct {
		at  time.Time
		raw []byte
	}
	var lines []line
	for _, a := range answers {
		if a.err != "" {
			continue
		}
		prefix := []byte(`{"node":` + strconv.Quote(a.peer.Node) + `,`)
		for _, l := range bytes.Split(a.body, []byte("\n")) {
			if len(l) < 2 || l[0] != '{' {
				continue
			}
			var r struct {
				At   time.Time `json:"at"`
				Node string    `json:"node"`
			}
			json.Unmarshal(l, &r)
			raw := append([]byte(nil), l...) // a record that names its node (hashed) as it is
			if r.Node == "" {
				raw = append(append(raw[:0], prefix...), l[1:]...)
			}
			lines = append(lines, line{r.At, raw})
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	if q.Desc {
		for i, j := 0, len(lines)-1; i < j; i, j = i+1, j-1 {
			lines[i], lines[j] = lines[j], lines[i]
		}
	}
	if q.Limit > 0 && len(lines) > q.Limit {
		lines = lines[:q.Limit]
	}
	var body []byte
	for _, l := range lines {
		body = append(append(body, l.raw...), '\n')
	}
	for _, a := range answers {
		if a.err != "" {
			b, _ := json.Marshal(map[string]string{"type": "unreachable", "node": a.peer.Node, "error": a.err})
			body = append(append(body, b...), '\n')
		}
	}
	ctx.Response.Header.Set("X-Records", strconv.Itoa(len(lines)))
	ctx.SetContentType("application/x-ndjson")
	ctx.SetStatusCode(200)
	ctx.SetBody(body)
	return true
}

// askPeers gets path?query from every peer at once, as peer requests
// with the caller's credentials (its bearer token or its session cookie:
// sessions are shared in a cluster), and names the nodes asked and those
// that did not answer in X-Cluster-Nodes and X-Cluster-Unreachable.
func askPeers(ctx *fasthttp.RequestCtx, peers []ClusterPeer, path string, query []byte) []peerAnswer {
	cred := peerCreds{
		auth:   append([]byte(nil), ctx.Request.Header.Peek("Authorization")...),
		cookie: append([]byte(nil), ctx.Request.Header.Cookie(sessionCookie)...),
	}
	query = append([]byte(nil), query...)
	answers := make([]peerAnswer, len(peers))
	var wg sync.WaitGroup
	for i, pe := range peers {
		wg.Go(func() { answers[i] = askPeer(pe, path, query, cred) })
	}
	wg.Wait()
	ctx.Response.Header.SetBytesKV(hdrCacheControl, strNoStore)
	var unreachable []string
	for _, a := range answers {
		if a.err != "" {
			unreachable = append(unreachable, a.peer.Node)
		}
	}
	if len(unreachable) > 0 {
		ctx.Response.Header.Set("X-Cluster-Unreachable", strings.Join(unreachable, ","))
	}
	nodes := make([]string, len(peers))
	for i, pe := range peers {
		nodes[i] = pe.Node
	}
	ctx.Response.Header.Set("X-Cluster-Nodes", strings.Join(nodes, ","))
	return answers
}

// peerCreds are the caller's credentials a fan-out passes on.
type peerCreds struct{ auth, cookie []byte }

// askPeer gets path?query from one node as a peer request.
func askPeer(pe ClusterPeer, path string, query []byte, cred peerCreds) peerAnswer {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	u := strings.TrimSuffix(pe.URL, "/") + path
	if len(query) > 0 {
		u += "?" + string(query)
	}
	req.SetRequestURI(u)
	req.Header.SetMethod("GET")
	if len(cred.auth) > 0 {
		req.Header.SetBytesV("Authorization", cred.auth)
	}
	if len(cred.cookie) > 0 {
		req.Header.SetCookieBytesKV([]byte(sessionCookie), cred.cookie)
	}
	req.Header.Set(hdrFanout, "1")
	a := peerAnswer{peer: pe}
	if pe.URL == "" {
		a.err = "no advertised URL"
		return a
	}
	if err := fasthttp.DoTimeout(req, resp, fanoutTimeout); err != nil {
		a.err = "did not answer: " + err.Error()
		return a
	}
	a.status = resp.StatusCode()
	if a.status != 200 {
		a.err = "answered " + strconv.Itoa(a.status)
		return a
	}
	a.body = append([]byte(nil), resp.Body()...)
	return a
}
