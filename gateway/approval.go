package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
)

// Human approval (docs/policies.md, "Human approval"). A call of a tool
// its policy's approval_tools matches is held at the end of decide:
// nothing is reserved, billed or forwarded; the call is stored (badger,
// prefix "a/", so it survives a restart) and answered 202 with its poll
// URL. An operator approves or denies it (POST /approvals/{id}); an
// approved call then runs through decide (policy, quotas and caps checked
// again, as of the approval) and the upstream exactly once, and its
// answer is what GET /approvals/{id} returns. A call not decided before
// its expiry is denied.

// approvalPrefix is the badger prefix this file owns: "a/<id>" → the
// approval's JSON.
const approvalPrefix = "a/"

// Approval states.
const (
	apPending  = "pending"
	apApproved = "approved" // decided, the call running
	apDone     = "done"     // approved and run: Result holds its answer
	apDenied   = "denied"
	apExpired  = "expired"
	apFailed   = "failed" // approved, but the gateway stopped before the call's answer was stored
)

// Ledger kinds of the approval admin records.
const (
	kindApprovalApproved = "approval_approved"
	kindApprovalDenied   = "approval_denied"
	kindApprovalExpired  = "approval_expired"
)

// approvalMaxWait bounds Prefer: wait=N.
const approvalMaxWait = 60

type approvalResult struct {
	Status      int             `json:"status"`
	ContentType string          `json:"content_type,omitempty"`
	Body        json.RawMessage `json:"body,omitempty"`      // a JSON answer
	BodyText    string          `json:"body_text,omitempty"` // any other
	RequestID   string          `json:"request_id"`
	CostUSD     json.RawMessage `json:"cost_usd"`
}

// approval is a held call, as stored.
type approval struct {
	ID          string          `json:"approval_id"`
	Status      string          `json:"status"`
	Tool        string          `json:"tool"`
	Principal   string          `json:"principal"`
	Tier        string          `json:"tier"`
	RequestID   string          `json:"request_id"`
	Method      string          `json:"method"`
	Query       string          `json:"query,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	Body        []byte          `json:"body"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	DecidedBy   string          `json:"decided_by,omitempty"`
	DecidedAt   time.Time       `json:"decided_at,omitzero"`
	Reason      string          `json:"reason,omitempty"`
	Result      *approvalResult `json:"result,omitempty"`
}

// approvalView is an approval as the API shows it (the body as JSON when
// it is JSON).
func (a *approval) view() map[string]any {
	v := map[string]any{"approval_id": a.ID, "status": a.Status, "tool": a.Tool, "principal": a.Principal,
		"request_id": a.RequestID, "created_at": a.CreatedAt.UTC(), "expires_at": a.ExpiresAt.UTC(),
		"poll": "/approvals/" + a.ID}
	if json.Valid(a.Body) {
		v["request_body"] = json.RawMessage(a.Body)
	} else {
		v["request_body_text"] = string(a.Body)
	}
	if a.DecidedBy != "" {
		v["decided_by"], v["decided_at"], v["reason"] = a.DecidedBy, a.DecidedAt.UTC(), a.Reason
	}
	if a.Result != nil {
		v["result"] = a.Result
	}
	return v
}

// approvals is the gateway's approval book: the store, one lock that
// orders every state change, and the waiters of Prefer: wait.
type approvals struct {
	mu      sync.Mutex
	db      *badger.DB
	waiters map[string]chan struct{} // closed when the approval is final
}

func (ab *approvals) load(id string) (*approval, error) {
	var a *approval
	err := ab.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(approvalPrefix + id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			a = &approval{}
			return json.Unmarshal(v, a)
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	return a, err
}

func (ab *approvals) save(a *approval) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return ab.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(approvalPrefix+a.ID), v) })
}

func (ab *approvals) list() ([]*approval, error) {
	var out []*approval
	err := ab.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(approvalPrefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			a := &approval{}
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, a) }); err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// waiter returns the channel closed when id is final; ab.mu is held.
func (ab *approvals) waiter(id string) chan struct{} {
	ch, ok := ab.waiters[id]
	if !ok {
		ch = make(chan struct{})
		ab.waiters[id] = ch
	}
	return ch
}

// final wakes the waiters of id; ab.mu is held.
func (ab *approvals) final(id string) {
	if ch, ok := ab.waiters[id]; ok {
		close(ch)
		delete(ab.waiters, id)
	}
}

// recoverApprovals runs at start: a call approved but not answered when
// the gateway stopped is not run again (at most once); it is marked
// failed.
func (g *Gateway) recoverApprovals() error {
	list, err := g.approvals.list()
	if err != nil {
		return fmt.Errorf("load approvals: %w", err)
	}
	for _, a := range list {
		if a.Status == apApproved {
			a.Status = apFailed
			a.Reason = "the gateway stopped while the approved call ran; it is not run again"
			if err := g.approvals.save(a); err != nil {
				return err
			}
		}
	}
	return nil
}

var errApprovalNeedsKey = fixed(403, outDenied, "approval_requires_key", "Tool requires human approval; approvals hold API-key calls only")

// admitApproval holds a call of an approval tool (the last step of
// decide): it stores the call and answers 202 with its poll URL. A call
// run by an approval (c.approvalID set) is not held again.
func (g *Gateway) admitApproval(c *call) *Decision {
	if c.approvalID != "" || !c.eff.NeedsApproval(c.rt.tool) {
		return nil
	}
	if c.pay != nil || c.who.Kind != identity.KindKey {
		return errApprovalNeedsKey
	}
	var rb [16]byte
	rand.Read(rb[:])
	a := &approval{ID: "ap_" + hex.EncodeToString(rb[:]), Status: apPending, Tool: c.rt.tool.ID,
		Principal: c.principal(), Tier: c.tier.String(), RequestID: string(c.reqID),
		Method: string(c.req.method), Query: string(c.req.query), Body: bytes.Clone(c.req.body),
		CreatedAt: c.start, ExpiresAt: c.start.Add(c.eff.ApprovalTimeout())}
	if c.req.header != nil {
		a.ContentType = string(c.req.header.Peek("Content-Type"))
	}
	if err := g.approvals.save(a); err != nil {
		g.log.Error("store approval", "request_id", string(c.reqID), "err", err)
		return fixed(503, outStoreUnavailable, "store_unavailable", "Gateway store unavailable; the call was not held")
	}
	c.approvalID = a.ID
	d := c.decide(202, outPendingApproval, "approval_required", "").
		str("status", "pending_approval").str("approval_id", a.ID).str("poll", "/approvals/"+a.ID).
		at("expires_at", a.ExpiresAt)
	return d
}

// expire denies a pending approval past its expiry; ab.mu is held.
// It reports whether it did.
func (g *Gateway) expire(a *approval, now time.Time) bool {
	if a.Status != apPending || now.Before(a.ExpiresAt) {
		return false
	}
	a.Status, a.DecidedBy, a.DecidedAt, a.Reason = apExpired, "toolgate", now, "not decided before expires_at"
	if err := g.approvals.save(a); err != nil {
		g.log.Error("expire approval", "approval_id", a.ID, "err", err)
		return false
	}
	g.recordApproval(a, kindApprovalExpired)
	g.approvals.final(a.ID)
	return true
}

func (g *Gateway) recordApproval(a *approval, kind string) {
	st := map[string]any{"approval_id": a.ID, "status": a.Status, "tool": a.Tool, "request_id": a.RequestID,
		"decided_at": a.DecidedAt.UTC(), "reason": a.Reason}
	if err := appendAdmin(g.led, g.now(), a.DecidedBy, a.Principal, kind, st); err != nil {
		g.log.Error("record approval decision", "approval_id", a.ID, "err", err)
	}
}

// apiApprovals serves GET /approvals, GET /approvals/{id} and POST
// /approvals/{id}. The caller that made a held call may read it with its
// own key; everything else needs the admin token.
func (g *Gateway) apiApprovals(ctx *fasthttp.RequestCtx, id string) (any, *Decision) {
	now := g.now()
	if id == "" {
		if !g.canRead(ctx) {
			return nil, errAdminOnly
		}
		if !ctx.IsGet() {
			return nil, errBadMethod
		}
		want := string(ctx.QueryArgs().Peek("status"))
		if want == "" {
			want = apPending
		}
		g.approvals.mu.Lock()
		list, err := g.approvals.list()
		out := []map[string]any{}
		for _, a := range list {
			g.expire(a, now)
			if want == "all" || a.Status == want {
				out = append(out, a.view())
			}
		}
		g.approvals.mu.Unlock()
		if err != nil {
			g.log.Error("list approvals", "err", err)
			return nil, apiErr(503, "Store unavailable")
		}
		return map[string]any{"approvals": out}, nil
	}
	g.approvals.mu.Lock()
	a, err := g.approvals.load(id)
	if err == nil && a != nil {
		g.expire(a, now)
	}
	g.approvals.mu.Unlock()
	if err != nil {
		g.log.Error("load approval", "approval_id", id, "err", err)
		return nil, apiErr(503, "Store unavailable")
	}
	if ctx.IsPost() {
		if d := g.allowed(ctx, adminWrite); d != nil {
			return nil, d
		}
		if a == nil {
			return nil, apiErr(404, "Unknown approval")
		}
		return g.decideApproval(ctx, id)
	}
	if a == nil || !g.canRead(ctx) && !g.presentsPrincipal(ctx, a.Principal, now) {
		return nil, apiErr(404, "Unknown approval")
	}
	if ctx.IsGet() {
		return a.view(), nil
	}
	return nil, errBadMethod
}

// presentsPrincipal reports whether the request authenticates with the
// API key of principal.
func (g *Gateway) presentsPrincipal(ctx *fasthttp.RequestCtx, principal string, now time.Time) bool {
	p, err := identity.ParsePrincipal(principal)
	if err != nil || p.Kind != identity.KindKey {
		return false
	}
	k, ok := g.keys.Lookup(p.ID)
	return ok && g.presentsKey(ctx, k, now)
}

// decideApproval applies POST /approvals/{id} {"decision": "approve" |
// "deny", "reason": "…"}: the first decision wins; an approved call runs
// once, now, and its answer is stored before the response.
func (g *Gateway) decideApproval(ctx *fasthttp.RequestCtx, id string) (any, *Decision) {
	f, aerr := readObject(ctx, false)
	if aerr != nil {
		return nil, aerr
	}
	var ps catalog.Problems
	var decision, reason string
	for k, raw := range f {
		switch k {
		case "decision":
			if json.Unmarshal(raw, &decision) != nil || decision != "approve" && decision != "deny" {
				ps.Add("decision", `must be "approve" or "deny"`)
			}
		case "reason":
			if json.Unmarshal(raw, &reason) != nil || len(reason) > 1000 {
				ps.Add("reason", "must be a string of at most 1000 characters")
			}
		default:
			ps.Add(k, "unknown field")
		}
	}
	if _, ok := f["decision"]; !ok {
		ps.Add("decision", "required")
	}
	if err := ps.Err(); err != nil {
		return nil, invalidBody(err)
	}
	now := g.now()
	g.approvals.mu.Lock()
	a, err := g.approvals.load(id)
	if err != nil || a == nil {
		g.approvals.mu.Unlock()
		return nil, apiErr(503, "Store unavailable")
	}
	g.expire(a, now)
	if a.Status != apPending {
		g.approvals.mu.Unlock()
		d := apiErr(409, "Approval already decided").str("status", a.Status)
		return nil, d
	}
	a.DecidedBy, a.DecidedAt, a.Reason = g.actorOf(ctx), now, reason
	kind := kindApprovalApproved
	if decision == "deny" {
		a.Status, kind = apDenied, kindApprovalDenied
	} else {
		a.Status = apApproved
	}
	if err := g.approvals.save(a); err != nil {
		g.approvals.mu.Unlock()
		g.log.Error("store approval decision", "approval_id", id, "err", err)
		return nil, apiErr(503, "Store unavailable; nothing was decided")
	}
	if a.Status == apDenied {
		g.approvals.final(id)
	}
	g.approvals.mu.Unlock()
	g.recordApproval(a, kind)
	if a.Status == apDenied {
		return a.view(), nil
	}
	// Approved: this request alone moved the approval out of pending, so
	// the call runs here, once.
	a.Result = g.runApproved(a)
	a.Status = apDone
	g.approvals.mu.Lock()
	if err := g.approvals.save(a); err != nil {
		g.log.Error("store approved call's answer", "approval_id", id, "err", err)
	}
	g.approvals.final(id)
	g.approvals.mu.Unlock()
	return a.view(), nil
}

// runApproved runs an approved call through decide, the upstream and
// conclude, as its caller would have, and returns its answer.
func (g *Gateway) runApproved(a *approval) *approvalResult {
	c := acquireCall()
	defer releaseCall(c)
	c.start = g.now()
	c.st = g.state.Load()
	c.reqID = g.appendRequestID(c.reqID)
	c.approvalID = a.ID
	c.req = request{protocol: "rest", method: []byte(a.Method), body: a.Body, query: []byte(a.Query),
		header: approvalHeaders{contentType: a.ContentType}}
	res := &approvalResult{RequestID: string(c.reqID)}
	answer := func(d *Decision) *approvalResult {
		res.Status, res.ContentType = d.Status, "application/json"
		res.Body = d.AppendJSON(nil)
		res.CostUSD = c.cost.AppendDecimal(nil, 3)
		return res
	}
	t := c.st.cat.ByID(a.Tool)
	if t == nil {
		return answer(fixed(404, outUnknownTool, "no_route", "Unknown tool").str("tool", a.Tool))
	}
	c.rt = c.st.routes[t.Index]
	p, err := identity.ParsePrincipal(a.Principal)
	k, ok := g.keys.Lookup(p.ID)
	if err != nil || !ok || !k.Active(c.start) {
		return answer(g.finish(c, fixed(401, outUnauthenticated, "invalid_api_key", "Invalid API key")))
	}
	c.who = p
	c.tier = c.st.tierOf(p)
	c.eff = c.st.effective(c.tier, c.principal())
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	c.upResp = resp
	d := g.decide(c)
	if d != nil {
		return answer(g.finish(c, d))
	}
	if d := g.conclude(c, g.upstream(c)); d != nil {
		return answer(d)
	}
	body := c.upResp.Body()
	if c.body != nil {
		body = c.body.b
	}
	res.Status = c.upStatus
	res.ContentType = string(c.upResp.Header.ContentType())
	if json.Valid(body) {
		res.Body = bytes.Clone(body)
	} else {
		res.BodyText = string(body)
	}
	res.CostUSD = c.cost.AppendDecimal(nil, 3)
	return res
}

// approvalHeaders are the caller's headers an approved call forwards:
// its Content-Type.
type approvalHeaders struct{ contentType string }

func (h approvalHeaders) All() iter.Seq2[[]byte, []byte] {
	return func(yield func([]byte, []byte) bool) {
		if h.contentType != "" {
			yield([]byte("Content-Type"), []byte(h.contentType))
		}
	}
}

func (h approvalHeaders) Peek(key string) []byte {
	if strings.EqualFold(key, "Content-Type") && h.contentType != "" {
		return []byte(h.contentType)
	}
	return nil
}

// awaitApproval serves Prefer: wait=N for a held REST call: it waits up
// to N seconds (at most approvalMaxWait) for the decision and, when the
// call ran, answers with its result. It reports whether it answered.
func (g *Gateway) awaitApproval(ctx *fasthttp.RequestCtx, c *call, d *Decision) bool {
	if d == nil || d.Outcome != outPendingApproval || c.approvalID == "" {
		return false
	}
	secs := preferWait(ctx.Request.Header.Peek("Prefer"))
	if secs <= 0 {
		return false
	}
	id := c.approvalID
	g.approvals.mu.Lock()
	a, err := g.approvals.load(id)
	var ch chan struct{}
	if err == nil && a != nil && (a.Status == apPending || a.Status == apApproved) {
		ch = g.approvals.waiter(id)
	}
	g.approvals.mu.Unlock()
	if ch != nil {
		t := time.NewTimer(time.Duration(secs) * time.Second)
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
	a, err = g.approvals.load(id)
	if err != nil || a == nil || a.Status == apPending || a.Status == apApproved {
		return false // still pending: the 202
	}
	h := &ctx.Response.Header
	h.SetBytesKV(hdrRequestID, c.reqID)
	h.SetBytesK(hdrTool, c.rt.tool.ID)
	h.SetBytesKV(hdrCacheControl, strNoStore)
	h.Set("Toolgate-Approval-Id", id)
	if a.Result == nil {
		body, _ := json.Marshal(a.view())
		writeJSON(ctx, 403, body)
		h.SetBytesKV(hdrPolicyAllowed, strFalse)
		return true
	}
	ctx.SetStatusCode(a.Result.Status)
	if a.Result.ContentType != "" {
		ctx.SetContentType(a.Result.ContentType)
	}
	if a.Result.Body != nil {
		ctx.SetBody(a.Result.Body)
	} else {
		ctx.SetBodyString(a.Result.BodyText)
	}
	if a.Result.Status < 400 {
		h.SetBytesKV(hdrPolicyAllowed, strTrue)
	} else {
		h.SetBytesKV(hdrPolicyAllowed, strFalse)
	}
	h.SetBytesV("X-Cost-Usd", a.Result.CostUSD)
	return true
}

// preferWait reads "wait=N" from a Prefer header (RFC 7240), bounded.
func preferWait(v []byte) int {
	for _, part := range bytes.Split(v, []byte(",")) {
		for _, p := range bytes.Split(part, []byte(";")) {
			k, val, ok := bytes.Cut(bytes.TrimSpace(p), []byte("="))
			if ok && bytes.EqualFold(k, []byte("wait")) {
				n, err := strconv.Atoi(string(bytes.TrimSpace(val)))
				if err == nil && n > 0 {
					return min(n, approvalMaxWait)
				}
			}
		}
	}
	return 0
}
