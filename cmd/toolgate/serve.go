package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

type serveFlags struct {
	listen, data, policies, tools, adminToken, sync string
	adminTokenFile                                  string
	memoryLimit                                     string
	keysSnapshotEvery                               time.Duration
	metersSnapshotEvery                             time.Duration
	logFormat, logLevel, metricsListen              string
	pprofListen                                     string
	accessLog, watch, acceptLogDamage               bool
	shutdownTimeout, drainDelay                     time.Duration
	approvalsRetain                                 time.Duration
	minFreeMB, upstreamBufferMB                     int64
	x402PayTo, x402Network, x402Asset               string
	x402AssetName, x402AssetVersion                 string
	x402Facilitators                                urlList
	x402RPC, x402RelayerKey                         string
	x402Verify                                      string
	publicURL                                       string
	x402SettleTimeout, x402ReconcileEvery           time.Duration
	x402DeployWallets                               bool
	x402Upto                                        string
	forwardUnderscoreHeaders                        bool
	clusterRedis, nodeID, clusterAdvertise          string
	tlsCert, tlsKey, tlsListen                      string
	redirectHTTP                                    bool
	acmeDomains                                     listFlag
	acmeDirectory, acmeEmail                        string
	acmeRenewBefore                                 time.Duration
	trustedProxies, trustedProxyHeader              string
	ship                                            shipFlags
	auth                                            string
	authCfg                                         *oauth.Config // --auth, loaded
	viewerToken                                     string
	sessionTTL                                      time.Duration
}

func runServe(args []string) error {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8402", "address to serve on")
	fs.StringVar(&f.data, "data", "./data", "data directory (store, ledger key, admin token)")
	fs.StringVar(&f.policies, "policies", "./policies.json", "global policy file")
	fs.StringVar(&f.tools, "tools", "./tools.json", "tool catalog file")
	fs.StringVar(&f.adminToken, "admin-token", "", "management API token (generated and saved in the data dir if unset); prefer TOOLGATE_ADMIN_TOKEN or --admin-token-file, as ps shows command lines")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the management API token (one line, mode 0600 or stricter)")
	fs.StringVar(&f.sync, "sync", "interval", "ledger durability: always (fsync every group) or interval (fsync every second)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&f.accessLog, "access-log", true, "log one line per call (info level)")
	fs.BoolVar(&f.watch, "watch-config", false, "also reload policies.json and tools.json when they change on disk (SIGHUP always does)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "serve /metrics without the admin token on this separate address (otherwise /metrics needs the token)")
	fs.StringVar(&f.pprofListen, "pprof-listen", "", "serve the Go runtime's profiles and execution trace (/debug/pprof/) on this loopback address, unauthenticated (off by default)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight calls may take at shutdown")
	fs.DurationVar(&f.drainDelay, "drain-delay", 0, "on SIGTERM, keep serving this long with /readyz at 503 before closing the listener (let load balancers move away)")
	fs.DurationVar(&f.approvalsRetain, "approvals-retain", gateway.DefaultApprovalRetention, "how long an approval that ended (done, denied, expired, failed) stays at /approvals, its held request and answer with it (the ledger keeps its records)")
	fs.BoolVar(&f.acceptLogDamage, "accept-log-damage", false, "start although badger's write-ahead log is damaged, letting badger drop the writes after the damage (the ledger journal re-applies its records, and keys and policies are then checked against the ledger)")
	fs.DurationVar(&f.metersSnapshotEvery, "meters-snapshot-every", gateway.DefaultMetersSnapshotEvery, "rewrite the meters snapshot (today's spend and the /stats counters as of a ledger seq, sparing a start the read of the last 50 hours of calls) this often, and at a clean stop (0: never; single node)")
	fs.DurationVar(&f.keysSnapshotEvery, "keys-snapshot-every", 10*time.Minute, "after key changes, rewrite the keys snapshot (a decoded copy of the key rows that spares a start decoding the rows it still matches) at most this often; the first one a tenth of it after start; also at a clean stop (0: never)")
	fs.StringVar(&f.memoryLimit, "memory-limit", "", "soft memory limit of the Go runtime, e.g. 450MiB (off: none); default GOMEMLIMIT, else 90% of the cgroup's memory.max if set, else none")
	fs.Int64Var(&f.minFreeMB, "min-free-mb", 128, "below this much free space in the data dir, refuse calls that must be recorded (0: off)")
	fs.Int64Var(&f.upstreamBufferMB, "upstream-buffer-mb", 256, "upstream response bytes held in memory at once across all calls, in MiB; calls over it wait for room")
	fs.StringVar(&f.x402PayTo, "x402-pay-to", "", "address receiving x402 payments (x402 is off without it)")
	fs.StringVar(&f.x402Network, "x402-network", "eip155:84532", "CAIP-2 network of x402 payments")
	fs.StringVar(&f.x402Asset, "x402-asset", "", "token address (default: the network's USDC)")
	fs.StringVar(&f.x402AssetName, "x402-asset-name", "", "token EIP-712 domain name")
	fs.StringVar(&f.x402AssetVersion, "x402-asset-version", "", "token EIP-712 domain version")
	fs.Var(&f.x402Facilitators, "x402-facilitator", "facilitator URL for /verify and /settle; repeat for failover, in order of preference")
	fs.StringVar(&f.x402Verify, "x402-verify", "facilitator", "with --x402-facilitator and --x402-rpc: who verifies payments before the tool runs, facilitator (/verify) or rpc (balance, authorizationState and a simulated transfer over the RPC: no facilitator round trip)")
	fs.StringVar(&f.x402RPC, "x402-rpc", "", "JSON-RPC URL: direct on-chain settlement (with --x402-relayer-key-file), or, beside --x402-facilitator, reconciliation of unanswered settlements")
	fs.StringVar(&f.x402RelayerKey, "x402-relayer-key-file", "", "file holding the relayer's hex private key (with --x402-rpc)")
	fs.StringVar(&f.publicURL, "public-url", "", "external base URL used in payment requirements")
	fs.DurationVar(&f.x402SettleTimeout, "x402-settle-timeout", 30*time.Second, "deadline of one settlement (separate from each tool's timeout)")
	fs.DurationVar(&f.x402ReconcileEvery, "x402-reconcile-every", 15*time.Second, "pause between checks of a settlement whose outcome is unknown")
	fs.StringVar(&f.x402Upto, "x402-upto", "", "offer metered tools with the x402 upto scheme (Permit2) on --x402-network: auto (the facilitator's upto address from its /supported) or that 0x address; needs --x402-facilitator. Empty: metered tools take the exact scheme at their maximum")
	fs.BoolVar(&f.x402DeployWallets, "x402-deploy-wallets", true, "direct settlement: deploy undeployed ERC-6492 smart wallets (the relayer pays the deployment gas)")
	fs.BoolVar(&f.forwardUnderscoreHeaders, "forward-underscore-headers", false, "pass caller headers whose names contain '_' to upstreams (names that read as an identity or forwarding header are dropped either way)")
	fs.StringVar(&f.clusterRedis, "cluster-redis", "", "cluster mode: share quota windows, spend and credit reservations and x402 nonces with the other nodes through this Redis (redis://[:password@]host:port/db or rediss://); prefer TOOLGATE_CLUSTER_REDIS when the URL holds a password")
	fs.StringVar(&f.clusterAdvertise, "cluster-advertise", "", "cluster mode: the URL at which the other nodes reach this node's management API (GET /audit fans out to it; default http://<--listen>, the host name when --listen has no host)")
	fs.StringVar(&f.nodeID, "node-id", "", "this node's name in cluster mode (default: the host name and a hash of the data dir, stable across restarts)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS; re-read on SIGHUP and when it changes")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file of --tls-cert")
	fs.StringVar(&f.tlsListen, "tls-listen", "", "serve HTTPS on this address and plain HTTP on --listen beside it (default with TLS on: HTTPS on --listen only)")
	fs.BoolVar(&f.redirectHTTP, "redirect-http", false, "with --tls-listen: answer plain HTTP on --listen with a redirect to HTTPS")
	fs.Var(&f.acmeDomains, "acme-domain", "obtain and renew a certificate for this name over ACME (repeatable, or comma-separated)")
	fs.StringVar(&f.acmeDirectory, "acme-directory", "https://acme-v02.api.letsencrypt.org/directory", "ACME directory URL of the certificate authority")
	fs.StringVar(&f.acmeEmail, "acme-email", "", "contact address given to the ACME certificate authority")
	fs.DurationVar(&f.acmeRenewBefore, "acme-renew-before", 0, "renew ACME certificates this long before they expire (default: a third of their lifetime, at most 30 days)")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For / Forwarded headers name the client (default: none; the headers are ignored)")
	fs.StringVar(&f.trustedProxyHeader, "trusted-proxy-header", "X-Forwarded-For", "the header --trusted-proxies set: X-Forwarded-For or Forwarded (RFC 7239); the other is not read")
	f.ship.register(fs)
	fs.StringVar(&f.auth, "auth", "", "auth.json: OAuth 2.1 / OIDC issuers whose access tokens identify callers (docs/oauth.md); reloaded with policies.json")
	fs.StringVar(&f.viewerToken, "viewer-token", "", "read-only token for the management API and the dashboard at /ui/ (auditors: GET only; changes answer 403); prefer TOOLGATE_VIEWER_TOKEN")
	fs.DurationVar(&f.sessionTTL, "session-ttl", gateway.DefaultSessionTTL, "how long a dashboard sign-in lasts")
	if err := envDefaults(fs); err != nil {
		return exitError{2, "toolgate serve: " + err.Error()}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{2, ""}
	}
	if f.upstreamBufferMB < 1 || f.upstreamBufferMB > 1<<20 {
		return exitError{2, fmt.Sprintf("toolgate serve: --upstream-buffer-mb %d: want 1 to %d", f.upstreamBufferMB, 1<<20)}
	}
	if f.approvalsRetain <= 0 {
		return exitError{2, fmt.Sprintf("toolgate serve: --approvals-retain %s: want a positive duration", f.approvalsRetain)}
	}
	log, err := newLogger(f.logFormat, f.logLevel)
	if err != nil {
		return exitError{2, "toolgate serve: " + err.Error()}
	}
	memLimit, memLimitFrom, err := memoryLimit(f.memoryLimit)
	if err != nil {
		return exitError{2, "toolgate serve: " + err.Error()}
	}
	if memLimit > 0 {
		applyMemoryLimit(memLimit)
		log.Info("soft memory limit", "bytes", memLimit, "from", memLimitFrom)
	}
	var syncMode ledger.SyncMode
	switch f.sync {
	case "always":
		syncMode = ledger.SyncAlways
	case "interval":
		syncMode = ledger.SyncInterval
	default:
		return exitError{2, fmt.Sprintf("toolgate serve: --sync %q: want always or interval", f.sync)}
	}

	explicitToken, err := explicitAdminToken(f.adminToken, f.adminTokenFile)
	if err != nil {
		return exitError{2, "toolgate serve: " + err.Error()}
	}
	f.adminToken, f.adminTokenFile = explicitToken, "" // from here on, the token itself

	// Configuration first: a bad file is reported in full before any state is touched.
	cat, doc, err := loadConfig(f.tools, f.policies, f.listen)
	if err != nil {
		return exitError{1, err.Error()}
	}
	if f.authCfg, err = loadAuth(f.auth, cat, doc); err != nil {
		return exitError{1, err.Error()}
	}

	if err := os.MkdirAll(f.data, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Everything opened below is closed by sd, last first, bounded by
	// --shutdown-timeout and cut short by a second signal.
	sigs := make(chan os.Signal, 2)
	sd := &shutdown{timeout: f.shutdownTimeout, sigs: sigs, dataDir: f.data, log: log}
	err = serve(f, log, cat, doc, sd, syncMode)
	if cerr := sd.run(); err == nil {
		err = cerr
	} else if cerr != nil {
		fmt.Fprintln(os.Stderr, cerr.Error())
	}
	return err
}

// serve opens the store, the ledger and the gateway, registering each
// with sd, and serves until a signal (or a server error).
func serve(f serveFlags, log *slog.Logger, cat *catalog.Catalog, doc *policy.Document, sd *shutdown, syncMode ledger.SyncMode) error {
	var took startTimes // logged with "toolgate serving"
	db, err := openStore(f.data, false, f.acceptLogDamage)
	took.mark("store_ms")
	var wd *walDamage
	if errors.As(err, &wd) {
		return exitError{1, "toolgate serve: " + err.Error() + ".\nRestore the data dir from a backup, or start once with --accept-log-damage to let badger drop those writes (answered calls come back from the ledger journal; keys and policies are then checked against the ledger, and `toolgate audit rebuild-state` puts them back)."}
	}
	if err != nil {
		return err
	}
	sd.add("closing the store", func() error {
		// The ledger applied and synced everything into badger; its
		// journal goes only once badger has flushed and closed too.
		if err := db.Close(); err != nil {
			return fmt.Errorf("badger could not flush its in-memory table: %w", err)
		}
		if sd.ledgerClosed.Load() {
			return ledger.RemoveJournal(f.data)
		}
		return nil
	})
	led, err := ledger.Open(db, f.data, ledger.Options{Sync: syncMode, CheckpointInterval: ledger.DefaultCheckpointInterval, KeepJournal: true,
		Node: clusterNodeID(f)}) // cluster mode: every record names its node
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	sd.led = led
	took.mark("ledger_ms")
	sigs := sd.sigs
	// The state seal (gateway.SealState): after the ledger closed cleanly,
	// before the store closes, so that the next start can skip reading the
	// ledger's history when nothing changed. Single node only.
	var seal func() error
	sd.add("sealing the management state", func() error {
		if seal == nil || !sd.ledgerClosed.Load() {
			return nil
		}
		if err := seal(); err != nil { // only costs the next start time
			log.Warn("state seal not written; the next start checks the ledger's history in full", "err", err)
		}
		return nil
	})
	sd.add("closing the ledger", func() error {
		err := led.Close()
		sd.ledgerClosed.Store(err == nil)
		return err
	})
	sealPath, markPath := filepath.Join(f.data, gateway.SealFile), filepath.Join(f.data, gateway.MarkFile)
	keys, err := openKeys(f, db, sealPath, markPath, log, &took)
	if err != nil {
		return err
	}
	took.mark("keys_ms")
	// The load read every key table: drop their pages from the process
	// now (they stay in the page cache) rather than carry them as RSS
	// through the rest of the start (releaseTablePages, again below).
	releaseTablePages(filepath.Join(f.data, "store"))
	took.mark("release_ms")
	overrides := policy.NewOverrides(db)
	// In cluster mode the keys and overrides are the cluster's (Redis and
	// each node's copy) and a node's ledger holds only its own changes:
	// the start check of the store against the ledger is single-node.
	// A clean stop leaves a seal; a crash, the state mark written while
	// serving (gateway/statemark.go): either spares the start a read of
	// the whole management history when it still matches.
	var marker *gateway.StateMarker
	var metersTrusted []string                    // before the state check removes the seal
	metersSnapshot := func() string { return "" } // the gateway's, once it runs
	if f.clusterRedis == "" {
		metersTrusted = gateway.RecordedMetersSnapshots(sealPath, markPath)
		checkedAt := time.Now()
		how, err := gateway.CheckStateAtStart(sealPath, markPath, led, keys, overrides, checkedAt, log)
		if err != nil {
			return exitError{1, "toolgate serve: " + err.Error()}
		}
		took.note("state_check", how)
		seal = func() error {
			writeKeysSnapshot(f, keys, log) // first: the seal names it
			return gateway.SealState(sealPath, led, keys, overrides, checkedAt, metersSnapshot())
		}
		// The first mark, for the state just checked, is written by the
		// gateway's marker as soon as it runs, off the start's path.
		marker = gateway.NewStateMarker(markPath, led, keys, overrides, checkedAt, log)
		if f.keysSnapshotEvery > 0 {
			marker.KeepKeysSnapshot(f.data, f.keysSnapshotEvery/10, f.keysSnapshotEvery)
		}
		marker.Changed(true)
	}
	took.mark("state_ms")
	token, err := adminToken(f.adminToken, f.data)
	if err != nil {
		return err
	}

	e, err := newEdge(f, log)
	if err != nil {
		return exitError{2, "toolgate serve: " + err.Error()}
	}
	proxies, proxyHeader, err := trustedProxies(f.trustedProxies, f.trustedProxyHeader)
	if err != nil {
		return exitError{2, "toolgate serve: " + err.Error()}
	}
	f.publicURL = e.publicURL(f)
	if f.authCfg != nil {
		if err := f.authCfg.Resolve(f.publicURL); err != nil {
			return exitError{1, strings.Join(describe(f.auth, err), "\n")}
		}
	}

	opts := gateway.Options{DB: db, Keys: keys, Overrides: overrides, Ledger: led, Catalog: cat, Policies: doc,
		AdminToken: token, Logger: log, SweepInterval: time.Minute, AccessLog: f.accessLog,
		DataDir: f.data, MinFreeBytes: f.minFreeMB << 20, ForwardUnderscoreHeaders: f.forwardUnderscoreHeaders,
		ResponseBufferBytes: f.upstreamBufferMB << 20, TLS: e.source,
		TrustedProxies: proxies, ProxyHeader: proxyHeader, Auth: f.authCfg,
		ViewerToken: f.viewerToken, SessionTTL: f.sessionTTL, SecureCookies: strings.HasPrefix(f.publicURL, "https://"),
		StateMark: marker, ApprovalRetention: f.approvalsRetain}
	if f.clusterRedis == "" && f.metersSnapshotEvery > 0 {
		opts.MetersSnapshot, opts.MetersSnapshotTrusted = filepath.Join(f.data, gateway.MetersFile), metersTrusted
		opts.MetersSnapshotEvery = f.metersSnapshotEvery
	}
	if f.x402PayTo != "" {
		if opts.X402, err = x402Options(f, db, log); err != nil {
			return exitError{2, "toolgate serve: " + err.Error()}
		}
		if why := publicURLProblem(f.publicURL); why != "" {
			log.Warn("payment requirements name a URL payers may not reach; set --public-url", "public_url", f.publicURL, "problem", why)
		}
	}
	var node *clusterNode
	if f.clusterRedis != "" {
		if node, err = joinCluster(f, db, keys, overrides, &opts, sd, log); err != nil {
			return err
		}
	}
	if usesDemo(cat) {
		base, stop, err := gateway.StartDemoUpstreams()
		if err != nil {
			return fmt.Errorf("demo upstreams: %w", err)
		}
		sd.add("stopping the demo upstreams", stop)
		opts.DemoUpstreams = base
	}
	if err := startShipping(f, led, log, sd, &opts); err != nil {
		return err
	}
	gw, err := gateway.New(opts)
	if err != nil {
		return err
	}
	took.mark("gateway_ms")
	metersSnapshot = gw.MetersSnapshot
	if from := gw.MetersFrom(); from != "" {
		took.note("meters_from", from)
	}
	sd.add("stopping background work", func() error { gw.Close(); return nil })
	if node != nil {
		if err := node.start(gw); err != nil {
			return err
		}
	}

	// The start read every key's table (released once after the load,
	// above; again here for the state check's reads) and perhaps the
	// ledger's recent segments: drop those pages from the process (they
	// stay in the page cache); keys are served from memory. Loading
	// left garbage several times the live heap (badger's block buffers,
	// decoded rows and records): collect it and return it to the kernel
	// once, rather than carry it as RSS (bench/startup: with 1M keys the
	// heap peaked at ~1 GiB for ~300 MiB live). Both run beside the first
	// calls rather than before them (0.1-0.25 s with 1M keys).
	go func(t0 time.Time) {
		tables := releaseTablePages(filepath.Join(f.data, "store"))
		segments := releaseLedgerPages(filepath.Join(f.data, "ledger"))
		debug.FreeOSMemory()
		log.Debug("start's pages and garbage released", "table_bytes", tables, "ledger_bytes", segments, "ms", time.Since(t0).Milliseconds())
	}(time.Now())
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	srv := gw.Server()
	errc := make(chan error, 4)
	var served []any
	switch {
	case e.cfg == nil:
		go func() { errc <- srv.Serve(gateway.Listener(ln)) }()
		served = append(served, "listen", ln.Addr().String())
	case f.tlsListen == "":
		go func() { errc <- srv.Serve(gateway.TLSListener(ln, e.cfg)) }()
		served = append(served, "tls_listen", ln.Addr().String())
	default:
		tln, err := net.Listen("tcp", f.tlsListen)
		if err != nil {
			return err
		}
		go func() { errc <- srv.Serve(gateway.TLSListener(tln, e.cfg)) }()
		served = append(served, "tls_listen", tln.Addr().String())
		if f.redirectHTTP {
			_, port, _ := net.SplitHostPort(tln.Addr().String())
			rd := gateway.Redirect{Port: port}
			if e.acme != nil {
				rd.Challenge = e.acme.HTTPHandler() // HTTP-01, when --listen is port 80
			}
			if u, err := url.Parse(f.publicURL); err == nil && u.Scheme == "https" {
				rd.Host = u.Host
			}
			rsrv := gateway.RedirectServer(rd)
			go func() { errc <- rsrv.Serve(gateway.Listener(ln)) }()
			sd.add("stopping the HTTP redirect", rsrv.Shutdown)
			served = append(served, "redirect_listen", ln.Addr().String())
		} else {
			go func() { errc <- srv.Serve(gateway.Listener(ln)) }()
			served = append(served, "listen", ln.Addr().String())
		}
	}
	if f.metricsListen != "" {
		mln, err := net.Listen("tcp", f.metricsListen)
		if err != nil {
			return err
		}
		msrv := gw.MetricsServer()
		go func() { errc <- msrv.Serve(mln) }()
		sd.add("stopping the metrics server", msrv.Shutdown)
		log.Info("metrics serving", "listen", mln.Addr().String())
	}
	if f.pprofListen != "" {
		stop, addr, err := servePprof(f.pprofListen, errc)
		if err != nil {
			return exitError{2, "toolgate serve: " + err.Error()}
		}
		sd.add("stopping the profiles server", stop)
		log.Info("profiles serving", "listen", addr)
	}
	log.Info("toolgate serving", append(append(served, "tools", len(cat.Tools), "keys", keys.Len(), "data", f.data, "public_url", f.publicURL), took.attrs...)...)

	reload := func(why string) {
		c, d, err := loadConfig(f.tools, f.policies, f.listen)
		if err == nil && f.auth != "" {
			var a *oauth.Config
			if a, err = loadAuth(f.auth, c, d); err == nil {
				if err = a.Resolve(f.publicURL); err == nil {
					err = gw.ReloadWithAuth(c, d, a)
				}
			}
		} else if err == nil {
			err = gw.Reload(c, d)
		}
		if err != nil {
			log.Error("reload refused; previous configuration keeps serving", "trigger", why, "err", err)
		} else {
			log.Info("configuration reloaded", "trigger", why, "tools", len(c.Tools))
		}
	}
	var changed <-chan struct{}
	if f.watch {
		ch := make(chan struct{}, 1)
		stopWatch := make(chan struct{})
		sd.add("stopping the config watcher", func() error { close(stopWatch); return nil })
		watched := []string{f.tools, f.policies}
		if f.auth != "" {
			watched = append(watched, f.auth)
		}
		go watchFiles(stopWatch, ch, time.Second, watched...)
		changed = ch
	}
	if e.acme != nil {
		stopObtain := make(chan struct{})
		sd.add("stopping ACME retries", func() error { close(stopObtain); return nil })
		e.obtain(stopObtain)
	}
	var certChanged <-chan struct{}
	if e.certs != nil {
		ch := make(chan struct{}, 1)
		stopWatch := make(chan struct{})
		sd.add("stopping the certificate watcher", func() error { close(stopWatch); return nil })
		certFile, keyFile := e.certs.Paths()
		go watchFiles(stopWatch, ch, time.Second, certFile, keyFile)
		certChanged = ch
	}
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for {
		select {
		case err := <-errc:
			return err
		case <-changed:
			reload("file change")
		case <-certChanged:
			e.reloadCert("file change", log)
		case s := <-sigs:
			if s == syscall.SIGHUP {
				reload("SIGHUP")
				e.reloadCert("SIGHUP", log)
				continue
			}
			log.Info("shutting down", "signal", s.String(), "drain_delay", f.drainDelay, "shutdown_timeout", f.shutdownTimeout)
			if f.drainDelay > 0 {
				gw.Drain()
				if s, forced := waitSignal(sigs, time.After(f.drainDelay)); forced {
					return sd.forced(s, "draining (--drain-delay)")
				}
			}
			done := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
				defer cancel()
				done <- srv.ShutdownWithContext(ctx)
			}()
			for { // ShutdownWithContext honours its deadline

				select {
				case err := <-done:
					if errors.Is(err, context.DeadlineExceeded) {
						return exitError{1, fmt.Sprintf("toolgate: shutdown: calls in flight did not finish within --shutdown-timeout %s; they were cut off", f.shutdownTimeout)}
					}
					return err
				case s := <-sigs:
					if s == syscall.SIGHUP {
						continue
					}
					return sd.forced(s, "waiting for calls in flight")
				}
			}
		}
	}
}

// waitSignal waits for until or a terminating signal (SIGHUP is
// ignored); forced reports the latter.
func waitSignal(sigs <-chan os.Signal, until <-chan time.Time) (os.Signal, bool) {
	for {
		select {
		case <-until:
			return nil, false
		case s := <-sigs:
			if s != syscall.SIGHUP {
				return s, true
			}
		}
	}
}

// loadConfig loads and cross-checks both files, reporting every problem of
// both. listen, when not empty, is the gateway's listen address: an
// upstream that would dial it is refused.
func loadConfig(toolsPath, policiesPath, listen string) (*catalog.Catalog, *policy.Document, error) {
	var msgs []string
	cat, err := catalog.LoadWith(toolsPath, catalog.Options{Listen: listen})
	if err != nil {
		msgs = append(msgs, describe(toolsPath, err)...)
	}
	doc, err := policy.Load(policiesPath)
	if err != nil {
		msgs = append(msgs, describe(policiesPath, err)...)
	}
	if len(msgs) == 0 {
		if _, err := policy.Compile(doc, cat); err != nil {
			msgs = append(msgs, describe(policiesPath, err)...)
		}
	}
	if len(msgs) > 0 {
		return nil, nil, errors.New(strings.Join(msgs, "\n"))
	}
	return cat, doc, nil
}

// describe renders a config error as one line per problem.
func describe(file string, err error) []string {
	var ve *catalog.ValidationError
	if errors.As(err, &ve) {
		out := make([]string, len(ve.Problems))
		for i, p := range ve.Problems {
			out[i] = file + ": " + p.String()
		}
		return out
	}
	return []string{file + ": " + err.Error()}
}

func usesDemo(cat *catalog.Catalog) bool {
	for _, t := range cat.Tools {
		if strings.HasPrefix(t.Upstream, "demo:") {
			return true
		}
	}
	return false
}

// adminToken returns the configured token, or the one saved in the data
// dir, or generates one, saves it (mode 0600) and prints it once.
func adminToken(flagValue, dataDir string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	path := filepath.Join(dataDir, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	var raw [24]byte
	rand.Read(raw[:])
	tok := "tga_" + hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save admin token: %w", err)
	}
	fmt.Fprintf(os.Stderr, "toolgate: generated admin token (shown once; saved to %s, mode 0600):\n  %s\n", path, tok)
	return tok, nil
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// x402Options wires x402 from the flags: requirements, the nonce lock in
// the store, and a facilitator or direct on-chain settlement.
func x402Options(f serveFlags, db *badger.DB, log *slog.Logger) (*gateway.X402Options, error) {
	public := f.publicURL
	if public == "" {
		public = "http://" + f.listen
	}
	cfg, err := x402.NewConfig(f.x402Network, f.x402Asset, f.x402AssetName, f.x402AssetVersion, f.x402PayTo, public)
	if err != nil {
		return nil, err
	}
	switch {
	case f.x402Verify != "facilitator" && f.x402Verify != "rpc":
		return nil, fmt.Errorf("--x402-verify %q: want facilitator or rpc", f.x402Verify)
	case f.x402Verify == "rpc" && (f.x402RPC == "" || len(f.x402Facilitators) == 0):
		return nil, errors.New("--x402-verify rpc needs --x402-facilitator and --x402-rpc")
	}
	o := &gateway.X402Options{Config: cfg, Nonces: x402.NewNonceLock(db),
		SettleTimeout: f.x402SettleTimeout, ReconcileEvery: f.x402ReconcileEvery}
	switch {
	case len(f.x402Facilitators) > 0:
		facs, cdpAuth, err := facilitators(f.x402Facilitators)
		if err != nil {
			return nil, err
		}
		o.Settler = x402.NewFacilitators(facs...)
		if f.x402Upto != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if o.Config.UptoFacilitator, err = x402.ResolveUptoFacilitator(ctx, f.x402Upto, facs[0], cfg.Network); err != nil {
				return nil, err
			}
			log.Info("x402 upto on: metered tools accept upto (Permit2)", "facilitator_address", o.Config.UptoFacilitator.Hex())
		}
		if f.x402RPC != "" {
			// With a facilitator, the RPC only reads: it reconciles
			// settlements the facilitator left without an answer.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			reader, err := x402.DialReader(ctx, f.x402RPC)
			if err != nil {
				return nil, err
			}
			o.Reconciler = reader
			if f.x402Verify == "rpc" {
				o.Verifier = reader
			}
		}
		log.Info("x402 on", "network", cfg.Network, "pay_to", cfg.PayTo.Hex(), "facilitators", strings.Join(f.x402Facilitators, " "),
			"cdp_auth", cdpAuth, "reconcile_rpc", f.x402RPC != "")
	case f.x402RPC != "":
		if f.x402Upto != "" {
			return nil, errors.New("--x402-upto needs --x402-facilitator (direct on-chain settlement knows the exact scheme only)")
		}
		if f.x402RelayerKey == "" {
			return nil, errors.New("--x402-rpc needs --x402-relayer-key-file")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		chain, err := x402.DialChain(ctx, f.x402RPC, f.x402RelayerKey)
		if err != nil {
			return nil, err
		}
		chain.DeployWallets = f.x402DeployWallets
		o.Settler = chain
		log.Info("x402 on", "network", cfg.Network, "pay_to", cfg.PayTo.Hex(), "rpc", f.x402RPC, "relayer", chain.Relayer().Hex())
	default:
		return nil, errors.New("--x402-pay-to needs --x402-facilitator URL or --x402-rpc URL")
	}
	return o, nil
}

// watchFiles signals on changed whenever one of the files' size or
// modification time changes, checking every interval. Polling works on
// every filesystem, including the atomic renames config managers do.
func watchFiles(stop <-chan struct{}, changed chan<- struct{}, interval time.Duration, paths ...string) {
	stamp := func() string {
		var b strings.Builder
		for _, p := range paths {
			if fi, err := os.Stat(p); err == nil {
				fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
			} else {
				b.WriteString("missing;")
			}
		}
		return b.String()
	}
	last := stamp()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if now := stamp(); now != last {
				last = now
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
	}
}

// startTimes collects how long each step of the start took, for the
// "toolgate serving" log line.
type startTimes struct {
	last  time.Time
	attrs []any
}

// mark records the time since the previous mark (or since the process
// started) under name.
func (t *startTimes) mark(name string) {
	now := time.Now()
	if t.last.IsZero() {
		t.last = processStart
	}
	t.attrs = append(t.attrs, name, now.Sub(t.last).Milliseconds())
	t.last = now
}

func (t *startTimes) note(name string, v any) { t.attrs = append(t.attrs, name, v) }

// processStart is when the program's initialization ran.
var processStart = time.Now()
