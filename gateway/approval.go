package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"sync"
	"time"

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

// Approval states (Approval.Status).
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved" // decided, the call running
	ApprovalDone     = "done"     // approved and run: Result holds its answer
	ApprovalDenied   = "denied"
	ApprovalExpired  = "expired"
	ApprovalFailed   = "failed" // approved, but the node running it stopped before its answer was stored
)

const (
	apPending  = ApprovalPending
	apApproved = ApprovalApproved
	apDone     = ApprovalDone
	apDenied   = ApprovalDenied
	apExpired  = ApprovalExpired
	apFailed   = ApprovalFailed
)

// Ledger kinds of the approval admin records.
const (
	kindApprovalApproved = "approval_approved"
	kindApprovalDenied   = "approval_denied"
	kindApprovalExpired  = "approval_expired"
)

// approvalMaxWait bounds Prefer: wait=N.
const approvalMaxWait = 60

// ApprovalResult is the answer of an approved call, as its caller reads
// it from GET /approvals/{id}.
type ApprovalResult struct {
	Status      int             `json:"status"`
	ContentType string          `json:"content_type,omitempty"`
	Body        json.RawMessage `json:"body,omitempty"`      // a JSON answer
	BodyText    string          `json:"body_text,omitempty"` // any other
	RequestID   string          `json:"request_id"`
	CostUSD     json.RawMessage `json:"cost_usd"`
}

// Approval is a held call, as an ApprovalStore keeps it (JSON: the
// stored form). The call's fields are set at creation and never change;
// Status, the decision fields, Node and Result change by the store's
// moves.
type Approval struct {
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
	Node        string          `json:"node,omitempty"` // the node running an approved call (cluster)
	Result      *ApprovalResult `json:"result,omitempty"`
}

// ApprovalDecision is a move of an approval out of pending: to Status
// (approved, denied or expired), by whom, when and why.
type ApprovalDecision struct {
	Status string
	By     string
	At     time.Time
	Reason string
}

type (
	approval       = Approval
	approvalResult = ApprovalResult
)

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

// approvals is the gateway's approval book: the store, and the waiters
// of Prefer: wait on this node.
type approvals struct {
	store   ApprovalStore
	mu      sync.Mutex         // guards waiters
	waiters map[string]*waiter // the approvals calls wait on
}

// waiter is the calls waiting on one approval: ch is closed when this
// node makes it final; n counts the waiting calls.
type waiter struct {
	ch chan struct{}
	n  int
}

// wait registers a waiting call on id and returns the channel closed
// when this node makes id final; the call ends with done.
func (ab *approvals) wait(id string) chan struct{} {
	ab.mu.Lock()
	defer ab.mu.Unlock()
	w, ok := ab.waiters[id]
	if !ok {
		w = &waiter{ch: make(chan struct{})}
		ab.waiters[id] = w
	}
	w.n++
	return w.ch
}

// done ends a waiting call on id (ch from wait): the last one forgets it.
func (ab *approvals) done(id string, ch chan struct{}) {
	ab.mu.Lock()
	defer ab.mu.Unlock()
	if w, ok := ab.waiters[id]; ok && w.ch == ch {
		if w.n--; w.n <= 0 {
			delete(ab.waiters, id)
		}
	}
}

// final wakes this node's waiters of id.
func (ab *approvals) final(id string) {
	ab.mu.Lock()
	defer ab.mu.Unlock()
	if w, ok := ab.waiters[id]; ok {
		close(w.ch)
		delete(ab.waiters, id)
	}
}

// recoverApprovals runs at start: a call this node approved but had not
// answered when it stopped is not run again (at most once); it is marked
// failed.
func (g *Gateway) recoverApprovals() error {
	if _, err := g.approvals.store.Recover("the gateway stopped while the approved call ran; it is not run again"); err != nil {
		return fmt.Errorf("recover approvals: %w", err)
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
	if err := g.approvals.store.Create(a); err != nil {
		g.log.Error("store approval", "request_id", string(c.reqID), "err", err)
		return fixed(503, outStoreUnavailable, "store_unavailable", "Gateway store unavailable; the call was not held")
	}
	c.approvalID = a.ID
	d := c.decide(202, outPendingApproval, "approval_required", "").
		str("status", "pending_approval").str("approval_id", a.ID).str("poll", "/approvals/"+a.ID).
		at("expires_at", a.ExpiresAt)
	return d
}

// expire denies a pending approval past its expiry (once, whichever
// node sees it first) and returns it as it is now.
func (g *Gateway) expire(a *approval, now time.Time) *approval {
	if a.Status != apPending || now.Before(a.ExpiresAt) {
		return a
	}
	b, ok, err := g.approvals.store.Decide(a.ID, ApprovalDecision{Status: apExpired, By: "toolgate", At: now, Reason: "not decided before expires_at"})
	if err != nil || b == nil {
		g.log.Error("expire approval", "approval_id", a.ID, "err", err)
		return a
	}
	if ok {
		g.recordApproval(b, kindApprovalExpired)
		g.approvals.final(b.ID)
	}
	return b
}

// DefaultApprovalRetention is Options.ApprovalRetention's default: an
// ended approval, its held request and its answer stay readable for 30
// days.
const DefaultApprovalRetention = 30 * 24 * time.Hour

// approvalSweepEvery is how often SweepApprovals runs in the background.
const approvalSweepEvery = 10 * time.Minute

// SweepApprovals expires the pending approvals past their expires_at that
// nobody has looked at (each recorded as when it is seen), then deletes
// the approvals that ended more than the retention ago. It returns how
// many it expired and deleted. The gateway runs it every 10 minutes; in a
// cluster every node does, and each move happens once.
func (g *Gateway) SweepApprovals() (expired, deleted int, err error) {
	now := g.now()
	pending, err := g.approvals.store.List(apPending)
	if err != nil {
		g.log.Error("sweep approvals", "err", err)
		return 0, 0, err
	}
	for _, a := range pending {
		if b := g.expire(a, now); b != a && b.Status == apExpired {
			expired++
		}
	}
	keep := g.opts.ApprovalRetention
	if keep <= 0 {
		keep = DefaultApprovalRetention
	}
	deleted, err = g.approvals.store.Sweep(now.Add(-keep))
	if err != nil {
		g.log.Error("sweep approvals", "err", err)
	} else if expired+deleted > 0 {
		g.log.Info("approvals swept", "expired", expired, "deleted", deleted, "retention", keep.String())
	}
	return expired, deleted, err
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
		from := "" // every approval: a pending one may have expired
		if want == apPending {
			from = apPending
		}
		list, err := g.approvals.store.List(from)
		out := []map[string]any{}
		for _, a := range list {
			if a = g.expire(a, now); want == "all" || a.Status == want {
				out = append(out, a.view())
			}
		}
		if err != nil {
			g.log.Error("list approvals", "err", err)
			return nil, apiErr(503, "Store unavailable")
		}
		return map[string]any{"approvals": out}, nil
	}
	a, err := g.approvals.store.Get(id)
	if err == nil && a != nil {
		a = g.expire(a, now)
	}
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
	a, err := g.approvals.store.Get(id)
	if err != nil || a == nil {
		return nil, apiErr(503, "Store unavailable")
	}
	g.expire(a, now)
	dec := ApprovalDecision{Status: apApproved, By: g.actorOf(ctx), At: now, Reason: reason}
	kind := kindApprovalApproved
	if decision == "deny" {
		dec.Status, kind = apDenied, kindApprovalDenied
	}
	a, ok, err := g.approvals.store.Decide(id, dec)
	if err != nil || a == nil {
		g.log.Error("store approval decision", "approval_id", id, "err", err)
		return nil, apiErr(503, "Store unavailable; nothing was decided")
	}
	if !ok {
		return nil, apiErr(409, "Approval already decided").str("status", a.Status)
	}
	g.recordApproval(a, kind)
	if a.Status == apDenied {
		g.approvals.final(id)
		return a.view(), nil
	}
	// Approved: this request alone moved the approval out of pending (on
	// every node sharing the store), so the call runs here, once.
	a.Result = g.runApproved(a)
	if done, err := g.approvals.store.Finish(id, a.Result); err != nil || !done {
		g.log.Error("store approved call's answer", "approval_id", id, "finished", done, "err", err)
	}
	a.Status = apDone
	g.approvals.final(id)
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
	a, err := g.awaitFinal(id, time.Duration(secs)*time.Second)
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

// approvalPoll is how often a waiting call looks at its approval in the
// store, for a decision made on another node (this node's own decisions
// wake it at once).
const approvalPoll = 100 * time.Millisecond

// awaitFinal waits up to d for approval id to leave pending and approved,
// and returns it as it is then.
func (g *Gateway) awaitFinal(id string, d time.Duration) (*approval, error) {
	final := func(a *approval, err error) bool {
		return err != nil || a == nil || a.Status != apPending && a.Status != apApproved
	}
	a, err := g.approvals.store.Get(id)
	if final(a, err) {
		return a, err
	}
	ch := g.approvals.wait(id)
	defer g.approvals.done(id, ch)
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	poll := time.NewTicker(approvalPoll)
	defer poll.Stop()
	for {
		select {
		case <-ch:
			return g.approvals.store.Get(id)
		case <-deadline.C:
			return g.approvals.store.Get(id)
		case <-poll.C:
			if a, err := g.approvals.store.Get(id); final(a, err) {
				return a, err
			}
		}
	}
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
