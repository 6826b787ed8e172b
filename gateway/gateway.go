// Package gateway is toolgate's edge: the fasthttp server, the tool-call
// pipeline (route → identify → policy → quota → spend → forward → record),
// the upstream proxy, and the management API. It is the only package that
// speaks HTTP; the domain packages it wires take plain values and return
// decisions.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/semaphore"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
)

// Options configures a Gateway. DB, Keys, Ledger, Catalog and Policies are
// required; the Gateway does not close them.
type Options struct {
	DB       *badger.DB
	Keys     KeyStore // an *identity.Store on DB, or a shared store
	Ledger   *ledger.Ledger
	Catalog  *catalog.Catalog
	Policies *policy.Document

	// Quotas, Spend and Overrides replace the local state stores (nil:
	// meter.NewQuotas(0), meter.NewSpend(), policy.NewOverrides(DB)); a
	// cluster passes shared ones.
	Quotas    QuotaStore
	Spend     SpendStore
	Overrides OverrideStore
	// Answers keeps the recorded answers of idempotent calls (nil: badger
	// on DB, per node).
	Answers AnswerStore
	// StateMark keeps the state mark current while serving (statemark.go;
	// nil: no mark). Management changes run inside it.
	StateMark *StateMarker
	// MetersSnapshot, if set, is the meters snapshot's path
	// (meterssnap.go): the start restores the meters from it and the
	// records after its cut when its SHA-256 is one of
	// MetersSnapshotTrusted (what the state seal and mark name:
	// RecordedMetersSnapshots), and the gateway rewrites it every
	// MetersSnapshotEvery (0: DefaultMetersSnapshotEvery) and at Close.
	// Single node only.
	MetersSnapshot        string
	MetersSnapshotTrusted []string
	MetersSnapshotEvery   time.Duration
	// OverrideSync is how often the gateway follows the override store's
	// change feed to pick up writes by other gateways; 0 = never (the
	// store is written only through this gateway).
	OverrideSync time.Duration
	// FallbackQuotas counts the calls of open principals when the shared
	// Quotas cannot decide (nil: a local meter.Quotas at the full limit;
	// a cluster passes one that holds each node to its share).
	FallbackQuotas QuotaStore
	// AdmitReserve, if set, decides a priced call's quota and spend in
	// one step (a cluster's one round trip); it must work on Quotas and
	// Spend.
	AdmitReserve AdmitReserver
	// Denials, if set, shares recent denials across a cluster
	// (/authorization/status shows the cluster's).
	Denials DenialLog
	// Cluster, if set, is the node's view of its cluster, reported in
	// /readyz and the metrics (cluster.go).
	Cluster ClusterView
	// Approvals holds the calls held for a human decision (nil:
	// NewLocalApprovals(DB)); a cluster passes a shared one, so that a
	// call held on one node can be decided on any.
	Approvals ApprovalStore
	// ApprovalRetention is how long an approval that ended (done, denied,
	// expired, failed) stays readable at /approvals after its decision
	// (0: DefaultApprovalRetention); the ledger keeps its admin records.
	ApprovalRetention time.Duration

	// AdminToken authenticates the management API (Bearer). Required.
	AdminToken string
	// ViewerToken, if set, grants read-only access to the management API
	// and the dashboard (GET only; changes answer 403).
	ViewerToken string
	// SessionTTL is how long a dashboard session lasts (0:
	// DefaultSessionTTL). SecureCookies marks the session cookie Secure
	// on every answer (the public URL is https), not only over TLS.
	SessionTTL time.Duration
	// Sessions, when set, holds the dashboard's sessions and the MCP
	// sessions of the stateful revisions where every node of a cluster
	// reads them: a session opened on one node works on all, a sign-out
	// (or an MCP DELETE) on one ends it on all (MCP: within 1 s). nil
	// keeps them in this process's memory (a restart ends them).
	Sessions      AnswerStore
	SecureCookies bool

	// DemoUpstreams maps "demo:<name>" upstreams to a base URL
	// ("http://127.0.0.1:port"); see StartDemoUpstreams.
	DemoUpstreams string

	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per failure at the edge; nil discards.
	Logger *slog.Logger
	// SweepInterval evicts idle quota windows and old spend days; 0 = never.
	SweepInterval time.Duration
	// DataDir and MinFreeBytes: below MinFreeBytes free in DataDir the
	// gateway stops writing (see spaceGuard). 0 disables the guard.
	DataDir      string
	MinFreeBytes int64

	// AccessLog writes one structured line per call at info level.
	AccessLog bool

	// X402, if set, lets callers without a key pay per call.
	X402 *X402Options

	// ForwardUnderscoreHeaders passes caller headers whose names contain
	// '_' to upstreams (default: dropped, as nginx does). Names that read
	// as a stripped or gateway-set header with '_' as '-' are dropped
	// either way.
	ForwardUnderscoreHeaders bool

	// ResponseBufferBytes bounds the upstream response bytes held in
	// memory at once across all calls (default 256 MiB).
	ResponseBufferBytes int64

	// TrustedProxies are the networks of the proxies in front of the
	// gateway: from them only, ProxyHeader is read to find the client
	// address (forwarded.go). Empty: the connection's peer is the client
	// and forwarding headers are ignored.
	TrustedProxies []netip.Prefix
	// ProxyHeader is the header trusted proxies set (default
	// X-Forwarded-For).
	ProxyHeader ProxyHeader

	// TLS, if set, is the certificate served over TLS: /readyz reports its
	// expiry (and fails in its last week unless it renews itself), and
	// toolgate_tls_cert_expiry_days follows it.
	TLS CertSource

	// ReadyChecks are more components /readyz reports (ReadyCheck), and
	// Collectors more series /metrics serves, for work wired beside the
	// gateway (audit shipping).
	ReadyChecks []ReadyCheck
	Collectors  []prometheus.Collector

	// Auth, if set, is auth.json: the OAuth 2.1 / OIDC issuers whose
	// access tokens identify callers (docs/oauth.md). ReloadAuth replaces it.
	Auth *oauth.Config

	// UpstreamDial, if set, replaces TCP dialing to upstreams (benchmarks
	// use in-memory listeners).
	UpstreamDial fasthttp.DialFunc
}

// Gateway serves tool calls and the management API. Create it with New;
// it is safe for concurrent use.
type Gateway struct {
	opts   Options
	now    func() time.Time
	log    *slog.Logger
	quotas QuotaStore
	spend  SpendStore
	// localQuotas counts the calls of open principals when a shared
	// quotas store cannot decide (quotas itself when it is local).
	localQuotas QuotaStore
	keys        KeyStore
	overrides   OverrideStore
	led         *ledger.Ledger
	metrics     *metrics
	space       spaceGuard

	draining atomic.Bool

	adminHash [32]byte

	// The dashboard's state: sessions and sign-in throttle (session.go),
	// the call counters of /stats and the last verification (stats.go).
	viewerHash  [32]byte
	sessions    sessionBook
	signInFails signInLimiter
	stats       statsBook
	lastVerify  atomic.Pointer[verifyResult]

	state   atomic.Pointer[state]
	writeMu sync.Mutex // serializes state rebuilds (override writes, reloads)
	marker  *StateMarker
	// the meters snapshot (meterssnap.go): the book, kept by its writer,
	// the file's SHA-256 and where the start restored from.
	meters     *meterBook
	metersHash atomic.Pointer[string]
	metersFrom string
	overVer    uint64 // the override feed's version the state follows; under writeMu

	clientsMu sync.Mutex
	clients   map[string]*upstreamClient
	budget    *responseBudget
	owed      owedBook
	verified  verifyCache     // remote x402 verifications by payment
	answers   *answers        // recorded answers for retries (idempotency.go)
	anon      anonBook        // anonymous calls past their burst, this interval
	auths     []authenticator // tried in order by identify
	mcp       mcpSessions     // MCP sessions of the stateful revisions

	mcpUpsMu sync.Mutex
	mcpUps   map[string]*mcpUpstream // upstream MCP servers by id

	readyProblems sync.Map // component → last logged readiness error text

	settlerHealth *probeCache // x402 backend's health for /readyz; nil without x402 or a pinger

	reqPrefix [8]byte
	reqSeq    atomic.Uint64
	// running counts the calls inside run; with others beside it, a
	// call's ledger wait lets them join its journal write (metrics.go wait).
	running   atomic.Int64
	callIDs   atomic.Uint64 // quota call ids (QuotaStore.Admit, Undo)
	gov       governance    // agent governance state (governance.go)
	approvals approvals     // held calls (approval.go)

	stop chan struct{}
	wg   sync.WaitGroup
}

// New builds a Gateway: it compiles the catalog and policies, loads the
// stored per-principal overrides, and rebuilds today's spend and credit
// balances from the ledger.
func New(o Options) (*Gateway, error) {
	if o.DB == nil || o.Keys == nil || o.Ledger == nil || o.Catalog == nil || o.Policies == nil {
		return nil, fmt.Errorf("gateway: DB, Keys, Ledger, Catalog and Policies are required")
	}
	if o.AdminToken == "" {
		return nil, fmt.Errorf("gateway: admin token is required")
	}
	if o.ViewerToken != "" && o.ViewerToken == o.AdminToken {
		return nil, fmt.Errorf("gateway: the viewer token must differ from the admin token")
	}
	g := &Gateway{
		opts:      o,
		sessions:  sessionBook{shared: o.Sessions},
		mcp:       mcpSessions{shared: o.Sessions},
		marker:    o.StateMark,
		now:       o.Now,
		log:       o.Logger,
		quotas:    o.Quotas,
		spend:     o.Spend,
		keys:      o.Keys,
		overrides: o.Overrides,
		led:       o.Ledger,
		adminHash: sha256.Sum256([]byte(o.AdminToken)),
		clients:   make(map[string]*upstreamClient),
		stop:      make(chan struct{}),
		metrics:   newMetrics(o.DB, o.Ledger),
		gov:       newGovernance(),
		approvals: approvals{store: o.Approvals, waiters: map[string]*waiter{}},
	}
	answerStore := o.Answers
	if answerStore == nil {
		answerStore = BadgerAnswers{DB: o.DB}
	}
	g.answers = newAnswers(answerStore, func() time.Time { return g.now() })
	g.viewerHash = sha256.Sum256([]byte(o.ViewerToken))
	g.sessions.tags[roleAdmin] = tokenTag(g.adminHash)
	if o.ViewerToken != "" {
		g.sessions.tags[roleViewer] = tokenTag(g.viewerHash)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.quotas == nil {
		g.quotas = meter.NewQuotas(0)
		g.localQuotas = g.quotas
	} else if o.FallbackQuotas != nil {
		g.localQuotas = o.FallbackQuotas
	} else {
		g.localQuotas = meter.NewQuotas(0)
	}
	if o.Cluster != nil {
		g.registerClusterMetrics()
	}
	if g.spend == nil {
		g.spend = meter.NewSpend()
	}
	if g.approvals.store == nil {
		g.approvals.store = NewLocalApprovals(o.DB)
	}
	g.gov.pair, _ = g.spend.(groupReserver)
	if g.overrides == nil {
		g.overrides = policy.NewOverrides(o.DB)
	}
	if o.ResponseBufferBytes <= 0 {
		o.ResponseBufferBytes = 256 << 20
	}
	g.budget = &responseBudget{sem: semaphore.NewWeighted(o.ResponseBufferBytes), total: o.ResponseBufferBytes}
	g.metrics.registerExtensions(o.Collectors)
	g.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "toolgate_response_buffer_bytes", Help: "Bytes of the upstream response budget (--upstream-buffer-mb) held now.",
	}, func() float64 { return float64(g.budget.held.Load()) }))
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if fc, ok := o.Sessions.(FailureCounter); ok {
		g.signInFails.shared = fc
		g.signInFails.onErr = func(err error) {
			g.log.Warn("dashboard sign-in throttle: the shared count is unavailable; counting on this node", "err", err)
			g.metrics.sharedFailures.Inc()
		}
	}
	g.mcp.log = g.log
	g.opts.TrustedProxies = make([]netip.Prefix, len(o.TrustedProxies))
	for i, p := range o.TrustedProxies {
		g.opts.TrustedProxies[i] = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)).Masked()
	}
	if o.TLS != nil {
		g.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "toolgate_tls_cert_expiry_days", Help: "Days until the served TLS certificate expires (negative: expired; absent before the first certificate).",
		}, func() float64 {
			na, ok := o.TLS.NotAfter()
			if !ok {
				return math.NaN()
			}
			return na.Sub(g.now()).Hours() / 24
		}))
	}
	if x := o.X402; x != nil {
		if x.Settler == nil || x.Nonces == nil {
			return nil, fmt.Errorf("gateway: x402 needs a settler (facilitator or RPC) and a nonce lock")
		}
		if err := x.Config.Validate(); err != nil {
			return nil, err
		}
		if x.VerifyTimeout <= 0 {
			x.VerifyTimeout = 10 * time.Second
		}
		if x.SettleTimeout <= 0 {
			x.SettleTimeout = 30 * time.Second
		}
		if x.ReconcileEvery <= 0 {
			x.ReconcileEvery = 15 * time.Second
		}
		if p, ok := x.Settler.(pinger); ok {
			ping := func(ctx context.Context) error {
				err := p.Ping(ctx)
				if err != nil {
					g.log.Warn("readyz: settlement backend unreachable", "err", err) // once per probe
				}
				return err
			}
			g.settlerHealth = &probeCache{probe: ping, ttl: settlerHealthTTL, now: g.now}
		}
	}
	if fp, ok := o.X402Settler().(facilitatorPool); ok {
		g.watchFacilitators(fp)
	}
	g.auths = []authenticator{keyAuth{g.keys}, tokenAuth{g}}
	if o.X402 != nil {
		g.auths = append(g.auths, paymentAuth{g})
	}
	var rb [4]byte
	rand.Read(rb[:])
	hex.Encode(g.reqPrefix[:], rb[:])

	overrides, ver, err := g.overrides.Load()
	if err != nil {
		return nil, err
	}
	var auth *oauth.Verifier
	if o.Auth != nil {
		if err := o.Auth.Resolve(""); err != nil { // serve resolves it with --public-url
			return nil, fmt.Errorf("auth.json: %w", err)
		}
		auth = oauth.NewVerifier(o.Auth, oauth.Options{Logger: g.log})
	}
	st, err := g.build(g.importMCP(o.Catalog), o.Policies, overrides, auth)
	if err != nil {
		return nil, err
	}
	g.state.Store(st)
	g.overVer = ver
	if err := g.restoreMeters(); err != nil {
		return nil, err
	}
	if err := g.recoverApprovals(); err != nil {
		return nil, err
	}
	if o.MetersSnapshot != "" {
		every := o.MetersSnapshotEvery
		if every <= 0 {
			every = DefaultMetersSnapshotEvery
		}
		g.every(every, func() { g.snapshotMeters(g.now().Add(-metersLag)) })
	}
	if o.MinFreeBytes > 0 && o.DataDir != "" {
		g.checkSpace()
		g.every(250*time.Millisecond, g.checkSpace)
	}
	g.every(anonInterval, g.flushAnon)
	if g.marker != nil {
		g.wg.Add(1)
		go func() { defer g.wg.Done(); g.marker.run(g.stop) }()
	}
	g.every(approvalSweepEvery, func() { g.SweepApprovals() })
	g.adoptSettlements() // reconcile.go
	if o.OverrideSync > 0 {
		g.every(o.OverrideSync, func() {
			if err := g.syncOverrides(); err != nil {
				g.log.Error("follow override changes", "err", err)
			}
		})
	}
	if o.SweepInterval > 0 {
		g.every(o.SweepInterval, func() {
			now := g.now()
			g.quotas.Sweep(now)
			if g.localQuotas != g.quotas {
				g.localQuotas.Sweep(now)
			}
			g.spend.Sweep(now)
			g.gov.sweep(now)
		})
	}
	if auth != nil {
		g.prefetchAuth(auth)
	}
	return g, nil
}

// Close stops background work. It does not close the store or ledger.
func (g *Gateway) Close() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	g.wg.Wait()
	g.flushAnon() // the last interval's counts
	if g.meters != nil {
		g.snapshotMeters(g.now()) // nothing runs any more: every record is in
	}
}

// every runs fn every interval in the background until Close.
func (g *Gateway) every(interval time.Duration, fn func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
				fn()
			}
		}
	}()
}

// Server returns a fasthttp server for the gateway with settings suited to
// payment headers (large header buffer) and bounded bodies.
func (g *Gateway) Server() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       g.Handler,
		Name:                          "toolgate",
		ReadBufferSize:                16 << 10, // x402 payment headers are 1–3 KB
		MaxRequestBodySize:            MaxBodySize,
		ReadTimeout:                   30 * time.Second,
		WriteTimeout:                  60 * time.Second,
		IdleTimeout:                   90 * time.Second,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         false,
		NoDefaultDate:                 true,
		Logger:                        fasthttpLogger{g.log},
		SecureErrorLogMessage:         true, // parse errors never quote the request (its keys and tokens)
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			// Requests fasthttp could not parse: too large, bad syntax.
			status := fasthttp.StatusBadRequest
			msg := "Malformed HTTP request"
			var small *fasthttp.ErrSmallBuffer
			if errors.As(err, &small) {
				status, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "Request headers too large"
			} else if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				status, msg = fasthttp.StatusRequestEntityTooLarge, "Request body too large"
			}
			writeJSON(ctx, status, errorBody(msg))
		},
	}
}

// unmapBits is how many bits a prefix loses when its IPv4-mapped address
// is unmapped (::ffff:10.0.0.0/104 is 10.0.0.0/8).
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return 96
	}
	return 0
}

// MaxBodySize bounds request bodies accepted by the gateway (8 MiB).
const MaxBodySize = 8 << 20

// appendRequestID appends a new request id: 8 hex chars of process
// prefix and 12 of a counter.
func (g *Gateway) appendRequestID(dst []byte) []byte {
	n := g.reqSeq.Add(1)
	dst = append(dst, g.reqPrefix[:]...)
	dst = append(dst, '-')
	const hx = "0123456789abcdef"
	for i := 44; i >= 0; i -= 4 {
		dst = append(dst, hx[(n>>uint(i))&0xf])
	}
	return dst
}

// fasthttpLogger routes fasthttp's own messages (connection errors) to slog
// at debug level: they are the client's problem, answered already.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	if !f.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	f.l.Debug(redactSecrets(fmt.Sprintf(format, args...)), "source", "fasthttp")
}

// redactSecrets masks what could be a credential in a message that may
// quote request bytes: API keys (it-…), and the value of any
// Authorization, X-Api-Key, Payment-Signature or X-Payment header or
// Bearer token. The server already runs with SecureErrorLogMessage; this
// is the second line.
func redactSecrets(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); {
		if rest := msg[i:]; strings.HasPrefix(rest, "it-") && (i == 0 || !isTokenByte(msg[i-1])) {
			j := 3
			for j < len(rest) && (isTokenByte(rest[j]) || rest[j] == '-') {
				j++
			}
			b.WriteString("it-[redacted]")
			i += j
			continue
		}
		if n := secretHeaderAt(msg[i:]); n > 0 {
			b.WriteString(msg[i : i+n])
			b.WriteString("[redacted]")
			i += n
			for i < len(msg) && msg[i] != '\r' && msg[i] != '\n' && msg[i] != '"' {
				i++
			}
			continue
		}
		b.WriteByte(msg[i])
		i++
	}
	return b.String()
}

func isTokenByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// secretHeaderAt returns the length of a secret-carrying header name and
// separator (or "Bearer ") at the start of s, or 0.
func secretHeaderAt(s string) int {
	for _, p := range []string{"authorization:", "x-api-key:", "payment-signature:", "x-payment:", "bearer "} {
		if len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
			n := len(p)
			for n < len(s) && s[n] == ' ' {
				n++
			}
			return n
		}
	}
	return 0
}

// Drain starts a graceful stop: /readyz answers 503 "draining" so that load
// balancers stop sending, and every answer carries Connection: close so
// that clients do not reuse connections about to be closed. Calls are still
// served; the caller stops the server after its drain delay.
func (g *Gateway) Drain() { g.draining.Store(true) }
