package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
)

const auditUsage = `usage:
  toolgate audit verify [--offline] [--file EXPORT --pubkey HEX]...   (one pair per cluster node)
  toolgate audit replay --principal key:ID|wallet:0x… [--since 24h] [--until T]
  toolgate audit export [--since 24h] [--until T] [--out FILE] [--offline]
  toolgate audit rebuild-state --data DIR
  toolgate audit ship --s3 s3://bucket/prefix [--offline] [--retain 400d] [--node-id N] [--from DAY]
  toolgate audit verify --s3 s3://bucket/prefix --day YYYY-MM-DD [--to DAY] [--pubkey HEX] [--node-id N]
  toolgate audit verify --dir COPY --day YYYY-MM-DD …   (a local copy: aws s3 sync s3://bucket/prefix COPY)
common flags: --url --admin-token --data; S3: --s3-endpoint --s3-region --s3-path-style
(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role)
Online commands use the running gateway's management API; --offline reads
a stopped gateway's data dir. rebuild-state (gateway stopped) puts key
statuses and overrides back as the ledger's management records say.`

func runAudit(args []string) error {
	if len(args) == 0 {
		return exitError{2, auditUsage}
	}
	switch {
	case args[0] == "ship":
		return runAuditShip(args[1:])
	case args[0] == "verify" && (hasFlag(args[1:], "s3") || hasFlag(args[1:], "dir")):
		return runAuditVerifyS3(args[1:])
	}
	var c apiClient
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	c.flags(fs)
	offline := fs.Bool("offline", false, "read the data dir of a stopped gateway")
	var files, pubkeys listFlag // auditmulti.go: one export per cluster node
	fs.Var(&files, "file", "verify an exported file instead of the store (repeat it for several nodes' exports)")
	fs.Var(&pubkeys, "pubkey", "checkpoint public key (hex) for --file, one per --file in the same order; default for one file: the data dir's key")
	principal := fs.String("principal", "", "principal to replay")
	since := fs.String("since", "24h", "RFC 3339 time or duration back from now")
	until := fs.String("until", "", "RFC 3339 time or duration back from now (default now)")
	out := fs.String("out", "", "export file (default stdout)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "rebuild-state":
		return rebuildState(c.data)
	case "verify":
		var rep ledger.Report
		switch {
		case len(files) > 1:
			return verifyExports(os.Stdout, files, pubkeys)
		case len(files) == 1:
			if len(pubkeys) > 1 {
				return exitError{2, "audit verify: one --pubkey per --file"}
			}
			pub, err := checkpointKey(strings.Join(pubkeys, ""), c)
			if err != nil {
				return err
			}
			f, err := os.Open(files[0])
			if err != nil {
				return err
			}
			defer f.Close()
			rep = ledger.VerifyExport(bufio.NewReader(f), pub)
		case *offline:
			err := withOfflineLedger(c.data, func(l *ledger.Ledger) error { rep = l.Verify(); return nil })
			if err != nil {
				return err
			}
		default:
			b, err := c.do("GET", "/audit/verify", nil)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &rep); err != nil {
				return err
			}
		}
		b, _ := json.Marshal(rep)
		fmt.Println(string(b))
		if !rep.OK {
			return exitError{1, ""}
		}
		return nil
	case "replay":
		if *principal == "" {
			return exitError{2, "audit replay: --principal is required"}
		}
		q := url.Values{"principal": {*principal}, "since": {*since}}
		if *until != "" {
			q.Set("until", *until)
		}
		b, err := c.do("GET", "/audit?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		return printTimeline(os.Stdout, bytes.NewReader(b))
	case "export":
		now := time.Now()
		s, err := parseWhenFlag(*since, now)
		if err != nil {
			return exitError{2, "--since: " + err.Error()}
		}
		u := now
		if *until != "" {
			if u, err = parseWhenFlag(*until, now); err != nil {
				return exitError{2, "--until: " + err.Error()}
			}
		}
		var w io.Writer = os.Stdout
		if *out != "" {
			f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		if *offline {
			return withOfflineLedger(c.data, func(l *ledger.Ledger) error { return l.Export(w, s, u) })
		}
		q := url.Values{"since": {s.Format(time.RFC3339Nano)}, "until": {u.Format(time.RFC3339Nano)}}
		b, err := c.do("GET", "/audit/export?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return exitError{2, auditUsage}
}

func parseWhenFlag(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			d = -d
		}
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}

// checkpointKey returns the public key given in hex, or the data dir's.
func checkpointKey(hexKey string, c apiClient) (ed25519.PublicKey, error) {
	if hexKey == "" {
		b, err := c.do("GET", "/audit/pubkey", nil)
		if err != nil {
			return nil, fmt.Errorf("no --pubkey and the gateway did not answer: %w", err)
		}
		var v struct {
			PublicKey string `json:"public_key"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		hexKey = v.PublicKey
	}
	raw, err := hex.DecodeString(strings.TrimSpace(hexKey))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("--pubkey: want %d bytes of hex", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// withOfflineLedger runs fn on a read-only ledger over a stopped
// gateway's data dir. Nothing in the data dir is written: a store left by
// a crash is read from a copy, and journaled records the store lacks are
// checked in memory (see ledger.Open).
func withOfflineLedger(dataDir string, fn func(*ledger.Ledger) error) error {
	db, closeDB, err := openStoreReadOnly(dataDir)
	if err != nil {
		if errors.Is(err, errLocked) {
			return err
		}
		return fmt.Errorf("%w (is the gateway still running? stop it, or drop --offline)", err)
	}
	defer closeDB()
	l, err := ledger.Open(db, dataDir, ledger.Options{ReadOnly: true}) // no writer: verify and export only
	if err != nil {
		return err
	}
	defer l.Close() // removes a read-only migration's temporary copy
	return fn(l)
}

// rebuildState runs gateway.RebuildState on a stopped gateway's data dir
// and prints what it changed.
func rebuildState(dataDir string) error {
	// The repair accepts a damaged write-ahead log: badger drops what
	// follows the damage, and the ledger (its journal re-applied) says
	// what the keys and overrides must be.
	if err := checkWAL(filepath.Join(dataDir, "store")); err != nil {
		fmt.Fprintf(os.Stderr, "%v; rebuilding from the ledger\n", err)
	}
	db, err := openStore(dataDir, false, true)
	if err != nil {
		return fmt.Errorf("%w (stop the gateway first)", err)
	}
	defer db.Close()
	led, err := ledger.Open(db, dataDir, ledger.Options{})
	if err != nil {
		return err
	}
	keys, err := identity.Open(db)
	if err != nil {
		led.Close()
		return fmt.Errorf("%w: a key row the store cannot read blocks the rebuild", err)
	}
	done, rerr := gateway.RebuildState(led, keys, policy.NewOverrides(db), time.Now())
	for _, d := range done {
		fmt.Println(d)
	}
	if err := led.Close(); rerr == nil {
		rerr = err
	}
	if rerr != nil {
		return rerr
	}
	if len(done) == 0 {
		fmt.Println("the store matches the ledger; nothing changed")
	}
	return nil
}

// printTimeline renders JSON-lines records as a readable timeline.
func printTimeline(w io.Writer, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	fmt.Fprintf(w, "%-24s %-5s %-22s %-21s %-28s %9s\n", "TIME", "TYPE", "TOOL", "OUTCOME", "REASON", "COST USD")
	for sc.Scan() {
		var rec ledger.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return err
		}
		what, outcome := rec.Tool, rec.Outcome
		if rec.Type == ledger.TypeTxn || rec.Type == ledger.TypeAdmin {
			outcome = rec.Kind
		}
		if rec.Type == ledger.TypeAdmin {
			what = rec.Actor
		}
		amount := rec.Cost
		if rec.Type == "txn" {
			amount = rec.Amount
		}
		fmt.Fprintf(w, "%-24s %-5s %-22s %-21s %-28s %9s\n", rec.At.UTC().Format("2006-01-02T15:04:05.000Z"),
			rec.Type, what, outcome, rec.Reason, money.Micros(amount).AppendDecimal(nil, 3))
	}
	return sc.Err()
}

// hasFlag reports whether args hold -name or --name (with or without
// "=value").
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}
