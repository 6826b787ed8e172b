package gateway

import (
	"context"
	"time"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/x402"
)

// SettlementClaims hands each settlement left pending (outcome unknown)
// to exactly one gateway of a cluster to reconcile and record: the
// gateway that left it pending claims it, renews its claim while it
// follows it, and a claim that lapses (its gateway died) is adopted by
// one other gateway. Optional (X402Options.Claims): without it each
// gateway follows its own pending settlements. Safe for concurrent use;
// an error means the store could not answer.
type SettlementClaims interface {
	// Add records p as pending, claimed by this gateway.
	Add(p PendingSettlement) error
	// Hold renews this gateway's claim on k; false when it no longer
	// holds it (another gateway adopted it, or it is finished).
	Hold(k x402.NonceKey) (bool, error)
	// Adopt claims, for this gateway, the pending settlements whose claim
	// lapsed; of concurrent callers exactly one gets each.
	Adopt() ([]PendingSettlement, error)
	// Finish ends k's reconciliation when this gateway holds its claim:
	// true then, once; the caller records the outcome only on true.
	Finish(k x402.NonceKey) (bool, error)
}

// PendingSettlement is what reconciling a settlement needs, whichever
// gateway does it.
type PendingSettlement struct {
	Key         x402.NonceKey `json:"key"`
	Tx          string        `json:"tx,omitempty"`
	Principal   string        `json:"principal"`
	RequestID   string        `json:"request_id"`
	Tool        string        `json:"tool"`
	Payer       string        `json:"payer"`
	Network     string        `json:"network"`
	Amount      money.Micros  `json:"-"`        // a store keeps it as integer micro-USD
	Deadline    time.Time     `json:"deadline"` // validBefore
	OweOnSettle bool          `json:"owe_on_settle,omitempty"`
	AnswerKeys  []string      `json:"answer_keys,omitempty"`
}

// adoptSettlements follows the pending settlements other gateways left
// when their claims lapse (every ReconcileEvery).
func (g *Gateway) adoptSettlements() {
	x := g.opts.X402
	if x == nil || x.Claims == nil || g.reconciler() == nil {
		return
	}
	g.every(x.ReconcileEvery, func() {
		ps, err := x.Claims.Adopt()
		if err != nil {
			g.log.Warn("adopt pending settlements", "err", err)
			return
		}
		for _, p := range ps {
			g.log.Warn("adopted a pending settlement whose node stopped following it", "request_id", p.RequestID, "tx", p.Tx)
			g.followSettlement(p, false)
		}
	})
}

// followSettlement reconciles p until its outcome is known and records
// it (see reconcileLater). With Claims, p is recorded only by the
// gateway that holds its claim when the outcome is known; own is true
// for the gateway that left it pending (it adds the claim).
func (g *Gateway) followSettlement(p PendingSettlement, own bool) {
	rc := g.reconciler()
	if rc == nil {
		return
	}
	claims := g.opts.X402.Claims
	if claims != nil && own {
		if err := claims.Add(p); err != nil {
			g.log.Error("share pending settlement; following it on this node", "request_id", p.RequestID, "err", err)
		}
	}
	every := g.opts.X402.ReconcileEvery
	final := func(res x402.SettleResult) {
		res.Payer, res.Network = p.Payer, p.Network
		g.settleAnswers(p.AnswerKeys, res)
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		record := func(kind, txHash, reason string) {
			err := g.led.Append(&ledger.Record{Type: "txn", At: g.now(), RequestID: p.RequestID, Principal: p.Principal,
				Kind: kind, Amount: p.Amount, Payer: p.Payer, Network: p.Network, TxHash: txHash, Reason: reason}).Wait()
			if err != nil {
				g.log.Error("record reconciled settlement", "request_id", p.RequestID, "err", err)
			}
		}
		// finish reports whether this gateway records the outcome (mine),
		// or tries again later (the claims store did not answer).
		finish := func() (mine, again bool) {
			if claims == nil {
				return true, false
			}
			ok, err := claims.Finish(p.Key)
			if err != nil {
				g.log.Warn("finish pending settlement: trying again", "request_id", p.RequestID, "err", err)
				return false, true
			}
			if !ok {
				g.log.Info("pending settlement recorded by another node", "request_id", p.RequestID)
			}
			return ok, false
		}
		for {
			select {
			case <-g.stop:
				return
			case <-time.After(every):
			}
			if claims != nil {
				held, err := claims.Hold(p.Key)
				if err == nil && !held {
					g.log.Info("pending settlement followed by another node", "request_id", p.RequestID)
					return
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := rc.ReconcileTx(ctx, p.Key, p.Tx)
			cancel()
			switch {
			case err != nil:
				g.log.Warn("reconcile settlement", "request_id", p.RequestID, "err", err)
			case res.Success:
				if err := g.opts.X402.Nonces.MarkSettled(p.Key, res.Transaction); err != nil {
					g.log.Error("mark nonce settled", "request_id", p.RequestID, "err", err)
				}
				if mine, again := finish(); again {
					continue
				} else if !mine {
					return
				}
				g.metrics.x402Settle.WithLabelValues("reconciled").Inc()
				record("x402_settlement", res.Transaction, "")
				if p.OweOnSettle {
					// Settled ahead of a call that was not served.
					owed := g.oweRecord(p.Principal, p.Tool, p.RequestID, p.Payer, p.Network, p.Amount, g.now())
					if err := g.led.Append(owed).Wait(); err != nil {
						g.log.Error("record owed payment", "request_id", p.RequestID, "err", err)
					}
				}
				final(res)
				return
			case !res.Pending:
				if mine, again := finish(); again {
					continue
				} else if !mine {
					return
				}
				g.log.Error("pending settlement failed on chain", "request_id", p.RequestID, "tx", res.Transaction, "reason", res.Reason)
				g.metrics.x402Settle.WithLabelValues("reconciled_failed").Inc()
				record("x402_settlement_failed", res.Transaction, res.Reason)
				final(res)
				return
			case g.now().After(p.Deadline.Add(2 * time.Minute)):
				// Unused past validBefore: nobody can settle it any more.
				if mine, again := finish(); again {
					continue
				} else if !mine {
					return
				}
				g.log.Error("pending settlement expired unused", "request_id", p.RequestID)
				g.metrics.x402Settle.WithLabelValues("reconciled_failed").Inc()
				record("x402_settlement_failed", "", x402.ReasonValidBefore)
				final(x402.SettleResult{Reason: x402.ReasonValidBefore})
				return
			}
		}
	}()
}
