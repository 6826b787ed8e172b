package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
)

// seedLedger writes records into dir/data as a gateway would have on
// earlier days: n[i] records on the day i+1 days before today (UTC).
func seedLedger(t *testing.T, dataDir string, n ...int) {
	t.Helper()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := openStore(dataDir, false, false)
	if err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var at atomic.Int64 // the ledger's clock, read by its goroutines
	led, err := ledger.Open(db, dataDir, ledger.Options{CheckpointEvery: 10, Now: func() time.Time { return time.Unix(0, at.Load()).UTC() }})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(n) - 1; i >= 0; i-- {
		d := today.AddDate(0, 0, -(i + 1))
		for j := 0; j < n[i]; j++ {
			at.Store(d.Add(time.Duration(j+1) * time.Minute).UnixNano())
			r := &ledger.Record{Type: ledger.TypeCall, Principal: "key:seed", Tool: "extract/structured",
				Outcome: ledger.OutcomeAllowed, Status: 200, Cost: money.Micros(10000)}
			if err := led.Append(r).Wait(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := led.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestServe_AuditShipSchedule runs `serve --audit-ship` against gofakes3
// on loopback: the complete days are shipped at start and /readyz and
// /metrics say so; later scheduled runs ship nothing new; `audit verify
// --s3` verifies the days offline and reports a deleted file; `audit
// ship` (online, through the management API) ships to a second prefix.
func TestServe_AuditShipSchedule(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "toolgate-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "toolgate-test-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	backend := s3mem.New()
	if err := backend.CreateBucket("audit"); err != nil {
		t.Fatal(err)
	}
	s3srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer s3srv.Close()

	dir := t.TempDir()
	writeConfig(t, dir)
	data := filepath.Join(dir, "data")
	seedLedger(t, data, 0, 12, 30) // yesterday empty, 2 days ago 12, 3 days ago 30
	today := time.Now().UTC().Truncate(24 * time.Hour)
	days := []string{today.AddDate(0, 0, -3).Format("2006-01-02"), today.AddDate(0, 0, -2).Format("2006-01-02"), today.AddDate(0, 0, -1).Format("2006-01-02")}

	p := startGateway(t, dir, "--audit-ship", "s3://audit/prod", "--s3-endpoint", s3srv.URL,
		"--audit-ship-every", "300ms", "--node-id", "n1", "--log-format", "json")
	metric := func(name string) float64 {
		_, b := p.admin("GET", "/metrics", "")
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	deadline := time.Now().Add(30 * time.Second)
	for metric(`toolgate_audit_ship_runs_total{result="ok"}`) < 3 {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
			t.Fatalf("fewer than 3 shipping runs succeeded within 30 s; log:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := metric("toolgate_audit_ship_days_total"); got != 3 {
		t.Errorf("days shipped %v, want 3 (later runs ship nothing)", got)
	}
	if got := metric("toolgate_audit_ship_shipped_through_timestamp_seconds"); got != float64(today.Unix()) {
		t.Errorf("shipped through %v, want %d", got, today.Unix())
	}
	code, body := p.req("GET", "/readyz", "")
	var rz struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	json.Unmarshal(body, &rz)
	if code != 200 || !rz.Ready || !strings.HasPrefix(rz.Checks["audit_ship"], "ok: shipped through "+days[2]) {
		t.Errorf("/readyz %d: %s", code, body)
	}
	logb, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
	if n := bytes.Count(logb, []byte(`"msg":"audit day shipped"`)); n != 3 {
		t.Errorf("%d 'audit day shipped' log lines, want 3", n)
	}
	if bytes.Contains(logb, []byte("toolgate-test-secret")) {
		t.Error("the S3 secret appears in the log")
	}

	// Offline verification with the published key.
	_, pk := p.admin("GET", "/audit/pubkey", "")
	var pub struct {
		PublicKey string `json:"public_key"`
	}
	json.Unmarshal(pk, &pub)
	verify := func(extra ...string) (int, string) {
		args := append([]string{"audit", "verify", "--s3", "s3://audit/prod", "--s3-endpoint", s3srv.URL,
			"--day", days[0], "--to", days[2], "--pubkey", pub.PublicKey}, extra...)
		out, err := exec.Command(binPath, args...).Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := verify(); code != 0 || strings.Count(out, `"ok":true`) != 3 {
		t.Fatalf("audit verify --s3: exit %d:\n%s", code, out)
	}
	// The same from a local copy of the prefix (what aws s3 sync makes).
	copyDir := t.TempDir()
	for i, d := range days {
		names := []string{"manifest.json", "manifest.sig"}
		if i < 2 {
			names = append(names, "records-0001.jsonl.gz")
		}
		for _, n := range names {
			resp, err := http.Get(s3srv.URL + "/audit/prod/n1/" + d + "/" + n)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("copy %s/%s: %v %v", d, n, err, resp)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.MkdirAll(filepath.Join(copyDir, "n1", d), 0o700)
			os.WriteFile(filepath.Join(copyDir, "n1", d, n), b, 0o600)
		}
	}
	out, err := exec.Command(binPath, "audit", "verify", "--dir", copyDir, "--day", days[0], "--to", days[2], "--pubkey", pub.PublicKey).Output()
	if err != nil || strings.Count(string(out), `"ok":true`) != 3 {
		t.Fatalf("audit verify --dir: %v:\n%s", err, out)
	}

	if _, err := backend.DeleteObject("audit", "prod/n1/"+days[0]+"/records-0001.jsonl.gz"); err != nil {
		t.Fatal(err)
	}
	code, outs := verify()
	if code != 1 || !strings.Contains(outs, `"file":"records-0001.jsonl.gz","first_bad_seq":1,"reason":"file 1 of 1 missing`) {
		t.Fatalf("audit verify after a deleted file: exit %d:\n%s", code, outs)
	}

	// `audit ship` from the command line, reading the running gateway.
	ship := exec.Command(binPath, "audit", "ship", "--s3", "s3://audit/cli", "--s3-endpoint", s3srv.URL,
		"--url", p.url, "--admin-token", testAdmin, "--data", data, "--node-id", "n1")
	out2, err := ship.CombinedOutput()
	if err != nil || strings.Count(string(out2), `"day":`) != 3 {
		t.Fatalf("audit ship: %v\n%s", err, out2)
	}
	out2, err = exec.Command(binPath, "audit", "ship", "--s3", "s3://audit/cli", "--s3-endpoint", s3srv.URL,
		"--url", p.url, "--admin-token", testAdmin, "--data", data, "--node-id", "n1").CombinedOutput()
	if err != nil || !strings.Contains(string(out2), "nothing new to ship") {
		t.Fatalf("audit ship again: %v\n%s", err, out2)
	}
}
