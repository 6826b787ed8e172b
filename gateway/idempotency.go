package gateway

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/x402"
)

// Idempotent retries (docs/x402.md, "Idempotent retries"). A caller that
// retries a call it did not see answered must not pay twice nor run the
// tool twice. Three kinds of retry get the answer recorded for the first
// attempt instead of a second run:
//
//   - an API-key call with the same Idempotency-Key, tool, method, query
//     and body as a call of the same key in the last 24 h;
//   - an x402 payment carrying the payment-identifier extension with the
//     same id (per payer) and the same payment and request;
//   - the same x402 payment again after its settlement was left pending:
//     the answer, with PAYMENT-RESPONSE brought up to date once
//     reconciliation knows the outcome.
//
// The same key or id with anything else different is 409. A concurrent
// duplicate waits for the first attempt and gets its answer. Only answers
// of calls that ran (the upstream was called) or moved money are
// recorded; a refused call is not, so a retry is decided afresh (and is
// refused again, nothing charged either time).

// Retention and bounds of recorded answers.
const (
	answerRetention = 24 * time.Hour
	answerBodyMax   = 64 << 10 // bodies above this are not kept: a replay has the status and headers only
	keyMax          = 255      // longest Idempotency-Key accepted
)

// answerPrefix is the badger prefix of recorded answers: "i/k/" API keys
// (principal, key), "i/p/" payment ids (payer, id), "i/n/" pending
// payments (nonce key).
const answerPrefix = "i/"

// recordedAnswer is what a replay answers with.
type recordedAnswer struct {
	FP          []byte    `json:"fp"` // SHA-256 of what must be the same
	Status      int       `json:"status"`
	ContentType string    `json:"content_type,omitempty"`
	Body        []byte    `json:"body,omitempty"`
	BodyKept    bool      `json:"body_kept"`
	Allowed     bool      `json:"allowed"`
	PayHeader   string    `json:"pay_header,omitempty"`   // PAYMENT-RESPONSE or X-PAYMENT-RESPONSE
	PayResponse string    `json:"pay_response,omitempty"` // its base64 value
	Pending     bool      `json:"pending,omitempty"`      // the settlement was pending when recorded
	MCPResult   bool      `json:"mcp_result,omitempty"`   // Body is an upstream MCP server's tools/call result
	Cost        int64     `json:"cost_micros"`
	RequestID   string    `json:"request_id"` // the call that was billed
	At          time.Time `json:"at"`
}

// answers records answers in an AnswerStore and tracks attempts in
// flight (on this node).
type answers struct {
	store AnswerStore
	now   func() time.Time

	mu       sync.Mutex
	inflight map[string]*attempt
}

// attempt is a first attempt in flight; done closes when its answer is
// recorded (or known not to be).
type attempt struct {
	fp      [32]byte
	done    chan struct{}
	claimed bool // holds the shared store's claim (AnswerClaimer)
}

func newAnswers(store AnswerStore, now func() time.Time) *answers {
	return &answers{store: store, now: now, inflight: make(map[string]*attempt)}
}

func (a *answers) get(key string) (*recordedAnswer, bool, error) {
	v, ok, err := a.store.GetAnswer(key)
	if err != nil {
		return nil, false, fmt.Errorf("recorded answer: %w", err)
	}
	if !ok {
		return nil, false, nil
	}
	var rec recordedAnswer
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, false, fmt.Errorf("recorded answer: %w", err)
	}
	return &rec, true, nil
}

func (a *answers) put(key string, rec *recordedAnswer, ttl time.Duration) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return a.store.PutAnswer(key, v, ttl)
}

// BadgerAnswers is the local AnswerStore: badger, keys under "i/" as given.
type BadgerAnswers struct{ DB *badger.DB }

var _ AnswerStore = BadgerAnswers{}

// GetAnswer reads key's value.
func (b BadgerAnswers) GetAnswer(key string) ([]byte, bool, error) {
	var v []byte
	err := b.DB.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(key))
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

// PutAnswer sets key to value for ttl.
func (b BadgerAnswers) PutAnswer(key string, value []byte, ttl time.Duration) error {
	return b.DB.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry([]byte(key), value).WithTTL(ttl))
	})
}

// claim is an idempotency claim held by a call: its keys and fingerprint.
type claim struct {
	keys []string // where the answer is recorded (first: the one claimed)
	fp   [32]byte
	kind string // ledger reason of a replay: idempotency_key, payment_identifier, same_payment
}

var errConflict = errors.New("idempotency: same key, different request")

// begin claims key for fp. It returns the recorded answer when there is
// one for fp, errConflict when key is recorded or in flight for another
// request, or nil, nil when the caller is the first attempt and holds the
// claim (end releases it). A duplicate in flight is waited for, at most
// wait: on this node through inflight, on other nodes through the store's
// claim when it is shared (AnswerClaimer).
func (a *answers) begin(key string, fp [32]byte, wait time.Duration) (*recordedAnswer, error) {
	deadline := a.now().Add(wait)
	for {
		a.mu.Lock()
		if at, ok := a.inflight[key]; ok {
			a.mu.Unlock()
			if at.fp != fp {
				return nil, errConflict
			}
			left := deadline.Sub(a.now())
			if left <= 0 {
				return nil, errConflict
			}
			t := time.NewTimer(left)
			select {
			case <-at.done:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		at := &attempt{fp: fp, done: make(chan struct{})}
		a.inflight[key] = at
		a.mu.Unlock()
		if cl, ok := a.store.(AnswerClaimer); ok {
			rec, err := a.claimShared(cl, key, fp, wait, deadline)
			if err != nil || rec != nil {
				a.release(key)
				return rec, err
			}
			at.claimed = true
		}
		rec, ok, err := a.get(key)
		if err != nil || ok {
			a.release(key)
		}
		switch {
		case err != nil:
			return nil, err
		case ok && string(rec.FP) != string(fp[:]):
			return nil, errConflict
		case ok:
			return rec, nil
		}
		return nil, nil
	}
}

// claimPoll is how often a duplicate looks again for the answer of an
// attempt in flight on another node.
const claimPoll = 10 * time.Millisecond

// claimShared takes key's claim in a shared store: nil, nil once this node
// holds it; the recorded answer when the attempt that held it recorded
// one for fp meanwhile; errConflict when another request holds or
// recorded it, or the holder did not finish by deadline.
func (a *answers) claimShared(cl AnswerClaimer, key string, fp [32]byte, wait time.Duration, deadline time.Time) (*recordedAnswer, error) {
	for {
		ok, holder, err := cl.ClaimAnswer(key, fp[:], wait)
		switch {
		case err != nil:
			return nil, fmt.Errorf("claim answer: %w", err)
		case ok:
			return nil, nil
		case string(holder) != string(fp[:]):
			return nil, errConflict
		}
		// The same request runs on another node: wait for its answer.
		rec, found, err := a.get(key)
		switch {
		case err != nil:
			return nil, err
		case found && string(rec.FP) != string(fp[:]):
			return nil, errConflict
		case found:
			return rec, nil
		}
		if !a.now().Before(deadline) {
			return nil, errConflict
		}
		time.Sleep(claimPoll) // polling the other node's answer, bounded by deadline
	}
}

// release ends the attempt in flight on key (and its shared claim).
func (a *answers) release(key string) {
	a.mu.Lock()
	at := a.inflight[key]
	delete(a.inflight, key)
	a.mu.Unlock()
	if at == nil {
		return
	}
	if at.claimed {
		if cl, ok := a.store.(AnswerClaimer); ok {
			// A claim left behind lapses after its TTL; until then a
			// duplicate elsewhere waits, then runs.
			_ = cl.ReleaseAnswer(key, at.fp[:])
		}
	}
	close(at.done)
}

// Keys of the recorded answers.
func apiKeyAnswerKey(principal string, key []byte) string {
	return answerPrefix + "k/" + principal + "\x00" + string(key)
}
func paymentIDAnswerKey(payer, id string) string {
	return answerPrefix + "p/" + payer + "\x00" + id
}
func nonceAnswerKey(k x402.NonceKey) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], k.ChainID)
	return answerPrefix + "n/" + hex.EncodeToString(b[:]) + hex.EncodeToString(k.Asset[:]) +
		hex.EncodeToString(k.From[:]) + hex.EncodeToString(k.Nonce[:])
}

// requestFP is the fingerprint of what a retry must repeat: the tool, the
// method, query and body, and for a payment its authorization and
// signature.
func requestFP(c *call, pc *paidCall) [32]byte {
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(c.rt.tool.ID))
	if c.req.protocol != "rest" {
		// An answer is replayed in the protocol it was given in: the
		// same key or id over the other protocol is another request.
		field([]byte(c.req.protocol))
	}
	field(c.req.method)
	field(c.req.query)
	field(c.req.body)
	if pc != nil {
		a := &pc.p.Authorization
		field(a.From[:])
		field(a.To[:])
		field(a.Value.Bytes())
		field(a.ValidAfter.Bytes())
		field(a.ValidBefore.Bytes())
		field(a.Nonce[:])
		field(pc.p.Signature)
	}
	var fp [32]byte
	h.Sum(fp[:0])
	return fp
}

// replayWait bounds how long a duplicate waits for the first attempt: the
// tool's timeout, a settlement, and a margin.
func (g *Gateway) replayWait(c *call) time.Duration {
	w := c.rt.tool.Timeout + 5*time.Second
	if g.opts.X402 != nil {
		w += g.opts.X402.VerifyTimeout + g.opts.X402.SettleTimeout
	}
	return w
}

// Decisions of idempotency.
const outConflict = "conflict"

var answersUnavailable = fixed(503, outStoreUnavailable, "answer_store_unavailable", "Idempotency store unavailable; nothing was charged").flag("retry", true)

// claimAnswer applies an idempotency key (key, kind) to c: nil to go on
// (c holds the claim), or the decision that ends the call (the replay, a
// 409, a 503).
func (g *Gateway) claimAnswer(c *call, pc *paidCall, key, kind string) *Decision {
	fp := requestFP(c, pc)
	rec, err := g.answers.begin(key, fp, g.replayWait(c))
	switch {
	case errors.Is(err, errConflict):
		msg := "Idempotency-Key reused for a different request"
		if kind != "idempotency_key" {
			msg = "payment-identifier reused for a different payment or request"
		}
		return c.decide(409, outConflict, kind+"_reused", msg).str("tool", c.rt.tool.ID)
	case err != nil:
		g.log.Error("idempotency store", "request_id", string(c.reqID), "err", err)
		return answersUnavailable
	case rec != nil:
		return g.replay(c, rec, kind)
	}
	c.claim = &claim{keys: []string{key}, fp: fp, kind: kind}
	return nil
}

// replay is the decision that answers with rec.
func (g *Gateway) replay(c *call, rec *recordedAnswer, kind string) *Decision {
	g.metrics.replays.WithLabelValues(kind).Inc()
	d := c.decide(rec.Status, outReplayed, kind, "")
	d.Replay = rec
	return d
}

// keepAnswer records the answer of a call that holds a claim (or whose
// settlement is pending), then releases the claim. d is run's result
// (nil: the upstream's answer).
func (g *Gateway) keepAnswer(c *call, d *Decision) {
	cl := c.claim
	pending := c.pay != nil && c.pay.settled && c.pay.result.Pending
	if cl == nil && !pending {
		return
	}
	if cl == nil {
		cl = &claim{fp: requestFP(c, c.pay)}
		c.claim = cl
	}
	defer func() {
		if len(cl.keys) > 0 && cl.kind != "" {
			g.answers.release(cl.keys[0])
		}
	}()
	ran := c.allowed || (c.pay != nil && c.pay.settled)
	if !ran || d == ledgerUnavailable {
		return // nothing ran or moved: a retry is decided afresh
	}
	rec := &recordedAnswer{FP: cl.fp[:], Allowed: c.allowed, Cost: int64(c.cost), RequestID: string(c.reqID), At: c.start}
	if d == nil {
		rec.Status = c.upStatus
		rec.ContentType = string(c.upResp.Header.ContentType())
		body := c.upResp.Body()
		if c.body != nil {
			body = c.body.b
		}
		if len(body) <= answerBodyMax {
			rec.Body, rec.BodyKept = append([]byte(nil), body...), true
		}
		rec.MCPResult = c.mcpResult
	} else {
		rec.Status, rec.ContentType, rec.BodyKept = d.Status, string(strJSON), true
		rec.Body = d.appendRESTBody(nil)
	}
	ttl := answerRetention
	if c.pay != nil && c.pay.settled {
		rec.PayHeader = string(c.paymentResponseHeader())
		rec.PayResponse = string(x402.AppendSettleResponse(nil, c.pay.result.Response()))
		rec.Pending = c.pay.result.Pending
		if rec.Pending {
			cl.keys = append(cl.keys, nonceAnswerKey(c.pay.verified.Key))
			// Kept while the authorization can be settled, and a day past.
			if until := c.pay.verified.ValidBefore.Sub(c.start) + answerRetention; until > ttl {
				ttl = until
			}
		}
	}
	for _, k := range cl.keys {
		if err := g.answers.put(k, rec, ttl); err != nil {
			g.log.Error("record answer for retries", "request_id", string(c.reqID), "err", err)
		}
	}
}

// settleAnswers brings the recorded answers of a pending settlement up to
// date with its outcome.
func (g *Gateway) settleAnswers(keys []string, res x402.SettleResult) {
	for _, k := range keys {
		rec, ok, err := g.answers.get(k)
		if err != nil || !ok {
			continue
		}
		rec.PayResponse = string(x402.AppendSettleResponse(nil, res.Response()))
		if err := g.answers.put(k, rec, answerRetention); err != nil {
			g.log.Error("update recorded answer", "err", err)
		}
	}
}

// claimKey applies an API-key caller's Idempotency-Key.
func (g *Gateway) claimKey(c *call) *Decision {
	k := c.req.idemKey
	if len(k) > keyMax || !printableASCII(k) {
		return c.decide(400, outConflict, "bad_idempotency_key", "Bad Idempotency-Key").
			str("hint", "1 to 255 printable ASCII characters")
	}
	return g.claimAnswer(c, nil, apiKeyAnswerKey(c.principal(), k), "idempotency_key")
}

func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// pendingReplay answers the same payment again after its settlement was
// left pending: the recorded answer, with the outcome known since. nil
// when there is none (the replay is refused as a used nonce).
func (g *Gateway) pendingReplay(c *call, pc *paidCall) *Decision {
	rec, ok, err := g.answers.get(nonceAnswerKey(pc.verified.Key))
	if err != nil {
		g.log.Error("idempotency store", "request_id", string(c.reqID), "err", err)
		return nil
	}
	fp := requestFP(c, pc)
	if !ok || string(rec.FP) != string(fp[:]) {
		return nil
	}
	return g.replay(c, rec, "same_payment")
}
