package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/toolgate/toolgate/ledger"
)

// metrics are the gateway's Prometheus series. One set per Gateway, on
// its own registry (no globals), so tests and several gateways in one
// process do not collide.
type metrics struct {
	reg *prometheus.Registry

	calls           *prometheus.CounterVec   // tool, outcome, reason
	decision        prometheus.Histogram     // identify → policy → quota → spend
	upstream        *prometheus.HistogramVec // tool
	ledgerWait      prometheus.Histogram     // Append → committed, per call
	x402Verify      *prometheus.CounterVec   // result: valid, invalid, remote_valid, remote_invalid, error
	x402Settle      *prometheus.CounterVec   // result: success, pending, failed, error
	overlapUnpaid   prometheus.Counter       // verify_overlap calls whose payment was refused after the upstream ran
	replays         *prometheus.CounterVec   // kind: idempotency_key, payment_identifier, same_payment
	meterReports    *prometheus.CounterVec   // tool, result: reported, missing, malformed, capped
	facRequests     *prometheus.CounterVec   // facilitator, op, result: ok, error, skipped
	extResponses    *prometheus.CounterVec   // extension, status (EXTENSION-RESPONSES)
	billedMicro     *prometheus.CounterVec   // tool: micro-USD billed
	owedMicro       prometheus.Counter       // micro-USD settled for calls not served (owed to payers)
	upstreamRetries prometheus.Counter       // requests sent again after a reused connection was found closed
	configReloads   prometheus.Counter       // Gateway.Reload calls applied
	sharedFailures  prometheus.Counter       // decisions the shared (cluster) store could not make

	handler fasthttp.RequestHandler
}

// latencyBuckets cover 10 µs to 10 s.
var latencyBuckets = prometheus.ExponentialBuckets(10e-6, 4, 10)

func newMetrics(db *badger.DB, led *ledger.Ledger) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_calls_total",
		Help: "Tool calls by tool, outcome and reason (quota, spend and payment rejections included).",
	}, []string{"tool", "outcome", "reason"})
	m.decision = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "toolgate_decision_seconds", Help: "Time to decide a call: identify, policy, quota, spend.",
		Buckets: prometheus.ExponentialBuckets(250e-9, 4, 10),
	})
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "toolgate_upstream_seconds", Help: "Upstream latency by tool.", Buckets: latencyBuckets,
	}, []string{"tool"})
	m.ledgerWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "toolgate_ledger_commit_wait_seconds", Help: "Time a call waits for its ledger records to commit (group commit).",
		Buckets: latencyBuckets,
	})
	m.x402Verify = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_x402_verifications_total", Help: "x402 payment verifications by result.",
	}, []string{"result"})
	m.replays = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_replayed_answers_total", Help: "Retries answered with a recorded answer, by kind (idempotency_key, payment_identifier, same_payment).",
	}, []string{"kind"})
	m.reg.MustRegister(m.replays)
	m.meterReports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_metered_cost_reports_total", Help: "Cost reports of metered tools' upstreams, by tool and result (reported, missing, malformed, capped).",
	}, []string{"tool", "result"})
	m.reg.MustRegister(m.meterReports)
	m.facRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_x402_facilitator_requests_total", Help: "Requests to each x402 facilitator by op (verify, settle, ping) and result (ok: a decision; error: none, failed over; skipped: backing off).",
	}, []string{"facilitator", "op", "result"})
	m.reg.MustRegister(m.facRequests)
	m.extResponses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_x402_extension_responses_total", Help: "Facilitators' EXTENSION-RESPONSES entries by extension (bazaar …) and status (success, processing, rejected).",
	}, []string{"extension", "status"})
	m.reg.MustRegister(m.extResponses)
	m.overlapUnpaid = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "toolgate_x402_overlap_unpaid_total",
		Help: "Calls of verify_overlap tools whose payment was refused after the upstream had run (answer discarded, nothing billed).",
	})
	m.x402Settle = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_x402_settlements_total", Help: "x402 settlements by result.",
	}, []string{"result"})
	m.billedMicro = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_billed_micro_usd_total", Help: "Micro-USD billed by tool.",
	}, []string{"tool"})
	m.owedMicro = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "toolgate_x402_owed_micro_usd_total",
		Help: "Micro-USD settled ahead of calls (settle: before_upstream) that were then not served: owed back to the payers.",
	})
	m.upstreamRetries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "toolgate_upstream_retries_total",
		Help: "Upstream requests sent again on a fresh connection because a reused one had been closed by the upstream before answering.",
	})
	m.configReloads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "toolgate_config_reloads_total",
		Help: "Configuration reloads applied (SIGHUP, --watch-config); refused reloads are not counted.",
	})
	m.sharedFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "toolgate_shared_state_failures_total",
		Help: "Quota or spend decisions (and sign-in failure counts) the shared cluster store (Redis) could not make: refused (strict, or priced) or counted locally (open).",
	})
	m.reg.MustRegister(m.overlapUnpaid, m.owedMicro, m.upstreamRetries, m.configReloads, m.sharedFailures, m.calls, m.decision, m.upstream, m.ledgerWait, m.x402Verify, m.x402Settle, m.billedMicro,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "toolgate_store_lsm_bytes", Help: "Badger LSM size."},
			func() float64 { lsm, _ := db.Size(); return float64(lsm) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "toolgate_store_vlog_bytes", Help: "Badger value log size."},
			func() float64 { _, vlog := db.Size(); return float64(vlog) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "toolgate_ledger_head_seq", Help: "Sequence number of the last committed ledger record."},
			func() float64 { seq, _ := led.Head(); return float64(seq) }),
	)
	m.handler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

// MetricsServer serves GET /metrics in the Prometheus text format without
// authentication, for a separate listener (--metrics-listen).
func (g *Gateway) MetricsServer() *fasthttp.Server {
	return &fasthttp.Server{Name: "toolgate-metrics", Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/metrics" {
			ctx.Error("not found", fasthttp.StatusNotFound)
			return
		}
		g.metrics.handler(ctx)
	}}
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// wait blocks until a ledger ticket is committed, timing it.
func (g *Gateway) wait(t ledger.Ticket, served bool) error {
	t0 := g.now()
	var err error
	if served && g.running.Load() >= yieldRunning {
		err = t.WaitYielding() // others may append first: one write for all
	} else {
		err = t.Wait()
	}
	g.metrics.ledgerWait.Observe(seconds(g.now().Sub(t0)))
	return err
}

// yieldRunning is how many calls in run (this one included) make a
// served call's ledger wait yield first (ledger.Ticket.WaitYielding).
// Alone or with one other call, yielding finds nobody to join the write
// and can cost a thread wake-up on an idle CPU. Refused calls (served
// false) never yield: measured on the 403 path at 32 connections,
// yielding joined few groups (0.93 -> 0.77 writes per call) and cost
// ~3 us of CPU per call.
const yieldRunning = 3

// observe counts a finished call and, with AccessLog, logs it: one line
// per call, never a secret (the record holds none), with the call's
// source address (the client behind trusted proxies).
func (g *Gateway) observe(c *call, r *ledger.Record) {
	src := c.req.source
	if rt := c.rt; rt != nil && rt.counters != nil && r.Tool == rt.tool.ID {
		rt.counters.get(r.Outcome, r.Reason).Inc()
		if r.Cost > 0 {
			rt.counters.billed.Add(float64(r.Cost))
		}
	} else {
		g.metrics.calls.WithLabelValues(r.Tool, r.Outcome, r.Reason).Inc()
		if r.Cost > 0 {
			g.metrics.billedMicro.WithLabelValues(r.Tool).Add(float64(r.Cost))
		}
	}
	g.stats.add(r.At, r.Principal, r.Tool, r.Outcome, r.Reason, r.Cost, 1)
	if g.opts.AccessLog && g.log.Enabled(context.Background(), slog.LevelInfo) {
		g.log.LogAttrs(context.Background(), slog.LevelInfo, "call",
			slog.String("request_id", r.RequestID), slog.String("principal", r.Principal),
			slog.String("tool", r.Tool), slog.String("outcome", r.Outcome), slog.String("reason", r.Reason),
			slog.Int("status", r.Status), slog.String("cost_usd", string(r.Cost.AppendDecimal(nil, 3))),
			slog.Int64("latency_us", r.LatencyUS), slog.Int("upstream_status", r.UpstreamStatus),
			slog.Int64("upstream_latency_us", r.UpstreamLatencyUS), slog.String("source", sourceString(src)))
	}
}

func sourceString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// toolCounters are one tool's children of the calls and billed counters,
// resolved once per (outcome, reason) instead of per call: WithLabelValues
// hashes its labels and takes the vector's lock every time. The set of
// pairs is small and fixed by the code (reasons are constants), so it is
// kept as a copy-on-write slice read without a lock.
type toolCounters struct {
	vec    *prometheus.CounterVec
	tool   string
	billed prometheus.Counter
	mu     sync.Mutex // serializes additions to pairs
	pairs  atomic.Pointer[[]outcomeCounter]
}

type outcomeCounter struct {
	outcome, reason string
	c               prometheus.Counter
}

// maxOutcomeCounters bounds the pairs cached per tool; past it lookups go
// to the vector.
const maxOutcomeCounters = 64

func newToolCounters(m *metrics, tool string) *toolCounters {
	tc := &toolCounters{vec: m.calls, tool: tool, billed: m.billedMicro.WithLabelValues(tool)}
	tc.get(ledger.OutcomeAllowed, "")
	return tc
}

// get returns the calls counter of (tool, outcome, reason).
func (tc *toolCounters) get(outcome, reason string) prometheus.Counter {
	if p := tc.pairs.Load(); p != nil {
		for i := range *p {
			if e := &(*p)[i]; e.outcome == outcome && e.reason == reason {
				return e.c
			}
		}
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var cur []outcomeCounter
	if p := tc.pairs.Load(); p != nil {
		cur = *p
		for i := range cur {
			if e := &cur[i]; e.outcome == outcome && e.reason == reason {
				return e.c
			}
		}
	}
	c := tc.vec.WithLabelValues(tc.tool, outcome, reason)
	if len(cur) < maxOutcomeCounters {
		next := append(cur[:len(cur):len(cur)], outcomeCounter{outcome, reason, c})
		tc.pairs.Store(&next)
	}
	return c
}
