package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/ship"
)

// s3Flags are the S3 client flags shared by serve --audit-ship, audit
// ship and audit verify --s3. Credentials come only from the AWS SDK's
// usual sources (environment, shared files, roles), never from flags.
type s3Flags struct {
	endpoint, region string
	pathStyle        string // "auto": path-style when an endpoint is given
}

func (s *s3Flags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.endpoint, "s3-endpoint", "", "S3 endpoint URL for an S3-compatible store (default: AWS, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
	fs.StringVar(&s.region, "s3-region", "", "S3 region (default: AWS_REGION or the shared config, else us-east-1)")
	fs.StringVar(&s.pathStyle, "s3-path-style", "auto", "address the bucket in the path (true), in the host name (false), or path-style whenever --s3-endpoint is set (auto)")
}

func (s *s3Flags) open(ctx context.Context, raw string) (*ship.Bucket, error) {
	loc, err := ship.ParseLocation(raw)
	if err != nil {
		return nil, err
	}
	o := ship.ClientOptions{Endpoint: s.endpoint, Region: s.region}
	switch s.pathStyle {
	case "auto":
		o.PathStyle = s.endpoint != ""
	case "true", "false":
		o.PathStyle = s.pathStyle == "true"
	default:
		return nil, fmt.Errorf("--s3-path-style %q: want auto, true or false", s.pathStyle)
	}
	if s.endpoint != "" {
		u, err := url.Parse(s.endpoint)
		switch {
		case err == nil && u.User != nil:
			return nil, errors.New("--s3-endpoint: want it without credentials (give them in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return nil, fmt.Errorf("--s3-endpoint %q: want http(s)://host[:port]", s.endpoint)
		}
	}
	return ship.Open(ctx, loc, o)
}

// shipFlags are the flags of serve's scheduled shipping.
type shipFlags struct {
	url      string
	every    time.Duration
	retain   string
	lockMode string
	s3       s3Flags
}

func (s *shipFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.url, "audit-ship", "", "ship each complete UTC day of the ledger to s3://bucket/prefix (records, signed manifest; see docs/operations.md)")
	fs.DurationVar(&s.every, "audit-ship-every", 24*time.Hour, "with --audit-ship: how often to ship (the first run is at start; a failed run is retried after at most 10m)")
	registerRetain(fs, &s.retain, &s.lockMode, "audit-ship-")
	s.s3.register(fs)
}

func registerRetain(fs *flag.FlagSet, retain, mode *string, prefix string) {
	fs.StringVar(retain, prefix+"retain", "", "put S3 Object Lock retention on every shipped object for this long (e.g. 400d or 9600h; the bucket needs Object Lock)")
	fs.StringVar(mode, prefix+"lock-mode", "compliance", "Object Lock mode with --"+prefix+"retain: compliance or governance")
}

// parseRetain reads "400d", "36h", "0" or "".
func parseRetain(s, mode string) (time.Duration, ship.LockMode, error) {
	var m ship.LockMode
	switch mode {
	case "compliance":
		m = ship.LockCompliance
	case "governance":
		m = ship.LockGovernance
	default:
		return 0, "", fmt.Errorf("lock mode %q: want compliance or governance", mode)
	}
	if s == "" || s == "0" {
		return 0, m, nil
	}
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 1 || days > 36500 {
			return 0, "", fmt.Errorf("retain %q: want 1d to 36500d", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < time.Hour {
			return 0, "", fmt.Errorf("retain %q: want a number of days (400d) or a duration of at least 1h", s)
		}
	}
	return d, m, nil
}

// nodeName is the node's name in the bucket: --node-id, or the default
// cluster mode uses.
func nodeName(id, data string) string {
	if id != "" {
		return id
	}
	return cluster.DefaultNodeID(data)
}

// startShipping wires --audit-ship into serve: a Shipper over the ledger
// in this process, run at start and then every --audit-ship-every, its
// state in /readyz (never failing it: shipping trouble must not take the
// gateway out of a load balancer; alert on the metrics) and its series
// in /metrics. It is stopped before the ledger closes.
func startShipping(f serveFlags, led *ledger.Ledger, log *slog.Logger, sd *shutdown, opts *gateway.Options) error {
	if f.ship.url == "" {
		return nil
	}
	if f.ship.every <= 0 {
		return exitError{2, "toolgate serve: --audit-ship-every must be positive"}
	}
	retain, mode, err := parseRetain(f.ship.retain, f.ship.lockMode)
	if err != nil {
		return exitError{2, "toolgate serve: --audit-ship-" + err.Error()}
	}
	b, err := f.ship.s3.open(context.Background(), f.ship.url)
	if err != nil {
		return exitError{2, "toolgate serve: --audit-ship: " + err.Error()}
	}
	key, err := ledger.LoadKey(f.data)
	if err != nil {
		return err
	}
	m := ship.NewMetrics()
	node := nodeName(f.nodeID, f.data)
	s, err := ship.New(ship.Config{Bucket: b, Node: node, Source: ship.LedgerSource{L: led}, Key: key,
		StageDir: filepath.Join(f.data, "ship"), Retain: retain, LockMode: mode, Log: log, Metrics: m})
	if err != nil {
		return exitError{2, "toolgate serve: " + err.Error()}
	}
	opts.ReadyChecks = append(opts.ReadyChecks, gateway.ReadyCheck{Name: "audit_ship", Status: func() (string, bool) {
		text, _ := m.Status()
		return text, true
	}})
	opts.Collectors = append(opts.Collectors, m.Collectors()...)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		retry := min(f.ship.every, 10*time.Minute)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			res, err := s.Run(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				log.Error("audit shipping failed; retrying", "to", b.Location().String(), "node", node, "days_shipped", len(res), "retry_in", retry, "err", err)
				t.Reset(retry)
			default:
				log.Info("audit shipping run", "to", b.Location().String(), "node", node, "days_shipped", len(res), "next_in", f.ship.every)
				t.Reset(f.ship.every)
			}
		}
	}()
	sd.add("stopping audit shipping", func() error { cancel(); <-done; return nil })
	log.Info("audit shipping on", "to", b.Location().String(), "node", node, "every", f.ship.every, "retain", retain)
	return nil
}

// runAuditShip is `toolgate audit ship`: ship every complete UTC day not
// shipped yet, reading a running gateway's ledger through the
// management API (or, with --offline, a stopped one's data dir) and
// signing with the checkpoint key in --data.
func runAuditShip(args []string) error {
	var c apiClient
	var s3f s3Flags
	fs := flag.NewFlagSet("audit ship", flag.ContinueOnError)
	c.flags(fs)
	s3f.register(fs)
	dest := fs.String("s3", "", "destination s3://bucket/prefix (required)")
	offline := fs.Bool("offline", false, "read the data dir of a stopped gateway")
	nodeID := fs.String("node-id", "", "this node's name in the bucket (default: as serve's --node-id default)")
	from := fs.String("from", "", "first day (YYYY-MM-DD) to ship when the node has shipped nothing yet (default: the oldest record's day)")
	var retainS, modeS string
	registerRetain(fs, &retainS, &modeS, "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dest == "" {
		return exitError{2, "audit ship: --s3 s3://bucket/prefix is required"}
	}
	retain, mode, err := parseRetain(retainS, modeS)
	if err != nil {
		return exitError{2, "audit ship: --" + err.Error()}
	}
	var fromDay time.Time
	if *from != "" {
		if fromDay, err = time.Parse("2006-01-02", *from); err != nil {
			return exitError{2, "audit ship: --from: want YYYY-MM-DD"}
		}
	}
	ctx := context.Background()
	b, err := s3f.open(ctx, *dest)
	if err != nil {
		return exitError{2, "audit ship: " + err.Error()}
	}
	key, err := ledger.LoadKey(c.data)
	if err != nil {
		return fmt.Errorf("audit ship signs with the gateway's checkpoint key: %w (run it on the gateway's host, --data naming its data dir)", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := ship.Config{Bucket: b, Node: nodeName(*nodeID, c.data), Key: key, StageDir: filepath.Join(c.data, "ship"),
		Retain: retain, LockMode: mode, From: fromDay, Log: log}
	run := func(src ship.Source) error {
		cfg.Source = src
		s, err := ship.New(cfg)
		if err != nil {
			return exitError{2, "audit ship: " + err.Error()}
		}
		res, err := s.Run(ctx)
		for _, r := range res {
			out, _ := json.Marshal(r)
			fmt.Println(string(out))
		}
		if err == nil && len(res) == 0 {
			fmt.Fprintln(os.Stderr, "audit ship: nothing new to ship (every complete day is shipped)")
		}
		return err
	}
	if *offline {
		return withOfflineLedger(c.data, func(l *ledger.Ledger) error { return run(ship.LedgerSource{L: l}) })
	}
	return run(apiSource{c})
}

// apiSource is a ship.Source reading a running gateway's ledger through
// the management API.
type apiSource struct{ c apiClient }

func (a apiSource) Export(w io.Writer, since, until time.Time) error {
	q := url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}, "until": {until.UTC().Format(time.RFC3339Nano)}}
	b, err := a.c.do("GET", "/audit/export?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (a apiSource) Oldest() (time.Time, bool, error) {
	q := url.Values{"since": {"1970-01-01T00:00:00Z"}, "limit": {"1"}}
	b, err := a.c.do("GET", "/audit?"+q.Encode(), nil)
	if err != nil {
		return time.Time{}, false, err
	}
	line, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	if len(line) == 0 {
		return time.Time{}, false, nil
	}
	var r ledger.Record
	if err := json.Unmarshal(line, &r); err != nil {
		return time.Time{}, false, fmt.Errorf("oldest record: %w", err)
	}
	return r.At, true, nil
}

// runAuditVerifyS3 is `toolgate audit verify --s3 … --day D [--to D2]`:
// it checks shipped days (in the bucket, or with --dir in a local copy)
// against the checkpoint public key, needing no gateway (given
// --pubkey), and prints one JSON report per day.
func runAuditVerifyS3(args []string) error {
	var c apiClient
	var s3f s3Flags
	fs := flag.NewFlagSet("audit verify --s3", flag.ContinueOnError)
	c.flags(fs)
	s3f.register(fs)
	src := fs.String("s3", "", "where the days were shipped: s3://bucket/prefix")
	dirCopy := fs.String("dir", "", "verify a local copy of the prefix instead of --s3 (aws s3 sync s3://bucket/prefix DIR)")
	dayS := fs.String("day", "", "the UTC day to verify, YYYY-MM-DD (required)")
	toS := fs.String("to", "", "verify every day from --day through this one")
	nodeID := fs.String("node-id", "", "the node whose days to verify (default: the only node under the prefix)")
	pubkey := fs.String("pubkey", "", "checkpoint public key (hex, from GET /audit/pubkey); default: ask the gateway at --url")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*src == "") == (*dirCopy == "") || *dayS == "" {
		return exitError{2, "audit verify: --s3 s3://bucket/prefix (or --dir COPY) and --day YYYY-MM-DD are required"}
	}
	first, err := time.Parse("2006-01-02", *dayS)
	if err != nil {
		return exitError{2, "audit verify: --day: want YYYY-MM-DD"}
	}
	last := first
	if *toS != "" {
		if last, err = time.Parse("2006-01-02", *toS); err != nil || last.Before(first) || last.Sub(first) > 3660*24*time.Hour {
			return exitError{2, "audit verify: --to: want YYYY-MM-DD, not before --day and within ten years of it"}
		}
	}
	pub, err := checkpointKey(*pubkey, c)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var b ship.Store
	where := *src
	if *dirCopy != "" {
		b, where = ship.Dir(*dirCopy), *dirCopy
	} else {
		bk, err := s3f.open(ctx, *src)
		if err != nil {
			return exitError{2, "audit verify: " + err.Error()}
		}
		b = bk
	}
	node := *nodeID
	if node == "" {
		nodes, err := ship.Nodes(ctx, b)
		if err != nil {
			return err
		}
		if len(nodes) != 1 {
			return exitError{2, fmt.Sprintf("audit verify: %d nodes shipped under %s (%s): name one with --node-id", len(nodes), where, strings.Join(nodes, ", "))}
		}
		node = nodes[0]
	}
	bad := 0
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		rep, err := ship.Verify(ctx, b, node, d, pub)
		if err != nil {
			return err
		}
		out, _ := json.Marshal(rep)
		fmt.Println(string(out))
		if !rep.OK {
			bad++
		}
	}
	if bad > 0 {
		return exitError{1, ""}
	}
	return nil
}

var _ ship.Source = apiSource{}
