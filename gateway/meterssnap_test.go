package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
)

// metersEnv is a real ledger (badger on disk) the meters restore from,
// with a settable clock.
type metersEnv struct {
	t    *testing.T
	dir  string
	db   *badger.DB
	led  *ledger.Ledger
	keys *identity.Store
	cat  *catalog.Catalog
	doc  *policy.Document
	now  time.Time
	log  *bytes.Buffer
}

const metersPolicies = `{"version":1,"defaults":{},"tiers":{},
 "groups":{"research":{"group_daily_spend_cap_usd":"100"}}}`

func newMetersEnv(t *testing.T) *metersEnv {
	t.Helper()
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir + "/store").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(db, dir, ledger.Options{Sync: ledger.SyncInterval})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := identity.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Decode([]byte(`{"tools":[{"id":"t/a","rate_class":"light","price_usd":"0.01","upstream":"http://127.0.0.1:1/a"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := policy.DecodeDocument([]byte(metersPolicies))
	if err != nil {
		t.Fatal(err)
	}
	e := &metersEnv{t: t, dir: dir, db: db, led: led, keys: keys, cat: cat, doc: doc, log: &bytes.Buffer{}}
	t.Cleanup(func() { led.Close(); db.Close() })
	return e
}

// gateway starts a gateway at the env's clock; snapshot "" restores from
// the last 50 hours only (no snapshot configured).
func (e *metersEnv) gateway(snapshot string, trusted ...string) *Gateway {
	e.t.Helper()
	now := e.now
	g, err := New(Options{DB: e.db, Keys: e.keys, Ledger: e.led, Catalog: e.cat, Policies: e.doc, AdminToken: "x",
		Now: func() time.Time { return now }, Logger: slog.New(slog.NewTextHandler(e.log, nil)), MetersSnapshot: snapshot, MetersSnapshotTrusted: trusted, MetersSnapshotEvery: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// calls appends n varied records with At from `from` in steps of step:
// priced calls of many principals and tools (past the /stats caps within
// one minute and slice), refusals, anonymous aggregates, group calls and
// x402 settlements.
func (e *metersEnv) calls(from time.Time, step time.Duration, n int, seed int) {
	e.t.Helper()
	var tickets []ledger.Ticket
	outcomes := []string{ledger.OutcomeAllowed, ledger.OutcomeAllowed, ledger.OutcomeDenied, ledger.OutcomeQuotaExceeded, ledger.OutcomeUpstreamError}
	for i := range n {
		at := from.Add(time.Duration(i) * step)
		k := i*7919 + seed
		day, _ := meter.DayOf(at, time.UTC)
		var r *ledger.Record
		switch {
		case k%97 == 0:
			r = &ledger.Record{Type: ledger.TypeTxn, At: at, Kind: ledger.KindX402Settlement, Principal: fmt.Sprintf("wallet:0x%040d", k%5),
				Amount: money.Micros(1000 + k%7), Payer: fmt.Sprintf("0x%040d", k%5), Network: "base-sepolia", TxHash: fmt.Sprintf("0x%064d", k)}
		case k%89 == 0:
			r = &ledger.Record{Type: ledger.TypeCall, At: at, Tool: "t/a", Outcome: ledger.OutcomeUnauthenticated, Reason: "invalid_api_key",
				Status: 401, State: json.RawMessage(fmt.Sprintf(`{"aggregate":true,"count":%d}`, 2+k%5))}
		default:
			o := outcomes[k%len(outcomes)]
			r = &ledger.Record{Type: ledger.TypeCall, At: at, Principal: fmt.Sprintf("key:k_%05d", k%6000),
				Tool: fmt.Sprintf("t/%03d", k%300), Outcome: o, Status: 200}
			if o == ledger.OutcomeAllowed {
				r.Cost, r.SpendDay = money.Micros(10+k%13), day.String()
			} else {
				r.Reason, r.Status = "deny_tools", 403
			}
			if k%3 == 0 {
				r.State = json.RawMessage(`{"group":"research"}`)
			}
		}
		tickets = append(tickets, e.led.Append(r))
	}
	for _, tk := range tickets {
		if err := tk.Wait(); err != nil {
			e.t.Fatal(err)
		}
	}
}

// metersView is what a start restored: every principal's and the group's
// spend of today and the whole /stats answer.
func metersView(g *Gateway, now time.Time) string {
	var b strings.Builder
	day, _ := meter.DayOf(now, time.UTC)
	for i := range 6000 {
		p := fmt.Sprintf("key:k_%05d", i)
		if s := g.spend.Status(p, day).Today(); s != 0 {
			fmt.Fprintf(&b, "%s %d\n", p, s)
		}
	}
	fmt.Fprintf(&b, "group %d\n", g.spend.Status(policy.GroupKey("research"), day).Today())
	to := now.Unix() / 60
	for _, step := range []int64{1, 60} {
		st := g.stats.query(to-1440, to, step, maxStatsTop)
		j, _ := json.Marshal(st)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func sha(path string) string {
	b, _ := os.ReadFile(path)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestMetersSnapshot_EqualsFullRead: a start from the snapshot written at
// the last stop plus the records after its cut restores exactly the
// meters the read of the last 50 hours restores: spend of today per
// principal and per group, and every /stats series, total, tool and top
// principal (the tools' and principals' caps reached within one minute
// and one slice, so the order of the fold matters).
func TestMetersSnapshot_EqualsFullRead(t *testing.T) {
	e := newMetersEnv(t)
	t2 := time.Now().Truncate(time.Minute).Add(-17 * time.Second)
	t1 := t2.Add(-20 * time.Hour)
	// 60 hours before the stop (the first 10 beyond the window), then a
	// burst of 9000 calls within a minute before it: 6000 principals in
	// one slice, 300 tools in one minute.
	e.calls(t1.Add(-60*time.Hour), 60*time.Hour/4000, 4000, 1)
	e.calls(t1.Add(-50*time.Second), 5*time.Millisecond, 9000, 2)
	e.now = t1
	path := filepath.Join(e.dir, MetersFile)
	g := e.gateway(path)
	if g.MetersFrom() != "ledger" {
		t.Fatalf("first start: from %q, want ledger", g.MetersFrom())
	}
	g.Close()
	hash := g.MetersSnapshot()
	if hash == "" || hash != sha(path) {
		t.Fatalf("Close wrote no snapshot, or names another one (%q, file %q)", hash, sha(path))
	}
	// The next run: calls across the day boundary, in the bursts' minute
	// of the next day and up to the start.
	e.calls(t1.Add(time.Second), 20*time.Hour/3000, 3000, 3)
	e.calls(t2.Add(-40*time.Second), 4*time.Millisecond, 9000, 4)

	e.now = t2
	full := e.gateway("")
	want := metersView(full, t2)
	full.Close()

	restored := filepath.Join(t.TempDir(), MetersFile)
	copyFile(t, path, restored)
	got := e.gateway(restored, hash)
	if got.MetersFrom() != "snapshot" {
		t.Fatalf("start with the named snapshot: from %q, want snapshot", got.MetersFrom())
	}
	if view := metersView(got, t2); view != want {
		t.Fatalf("restored from the snapshot:\n%.2000s\nwant (the full read):\n%.2000s", view, want)
	}
	if !strings.Contains(want, "group ") || strings.Contains(want, "group 0\n") || !strings.Contains(want, statOther) {
		t.Fatalf("the fixture does not reach group spend and the caps:\n%.3000s", want)
	}
	got.Close()
	if h := got.MetersSnapshot(); h == hash || h != sha(restored) {
		t.Fatalf("the second Close did not write a new snapshot (%q, was %q)", h, hash)
	}

	// The snapshot that second Close wrote, after more calls.
	e.calls(t2.Add(time.Second), time.Millisecond, 500, 5)
	e.now = t2.Add(time.Minute)
	full = e.gateway("")
	want = metersView(full, e.now)
	full.Close()
	again := e.gateway(restored, got.MetersSnapshot())
	if again.MetersFrom() != "snapshot" || metersView(again, e.now) != want {
		t.Fatalf("start from the snapshot of a start from a snapshot: from %q, differs: %v", again.MetersFrom(), metersView(again, e.now) != want)
	}
	again.Close()
}

// TestMetersSnapshot_Refused: a snapshot the seal/mark does not name, an
// edited, truncated or stale one, or one of another ledger, is not used:
// the start reads the last 50 hours and restores the same meters.
func TestMetersSnapshot_Refused(t *testing.T) {
	e := newMetersEnv(t)
	t1 := time.Now().Add(-time.Hour)
	e.calls(t1.Add(-3*time.Hour), time.Second, 2000, 1)
	e.now = t1
	path := filepath.Join(e.dir, MetersFile)
	g := e.gateway(path)
	g.Close()
	hash := g.MetersSnapshot()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e.calls(t1.Add(time.Second), time.Second, 300, 2)
	e.now = t1.Add(10 * time.Minute)

	other := newMetersEnv(t) // another ledger, with its own records
	other.calls(t1.Add(-time.Hour), time.Second, 100, 9)

	edited := append([]byte(nil), raw...)
	edited[len(edited)-3] ^= 1
	cases := []struct {
		name    string
		env     *metersEnv
		file    []byte
		trusted func(file string) []string
		why     string
	}{
		{"NotNamed", e, raw, func(string) []string { return nil }, "not the one the state seal or mark names"},
		{"Edited", e, edited, func(string) []string { return []string{hash} }, "not the one the state seal or mark names"},
		{"Truncated", e, raw[:len(raw)/2], func(f string) []string { return []string{sha(f)} }, "undecodable"},
		{"OtherLedger", other, raw, func(f string) []string { return []string{sha(f)} }, "record"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.env.now = e.now
			full := c.env.gateway("")
			want := metersView(full, e.now)
			full.Close()
			p := filepath.Join(t.TempDir(), MetersFile)
			if err := os.WriteFile(p, c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			at := c.env.log.Len()
			g := c.env.gateway(p, c.trusted(p)...)
			if g.MetersFrom() != "ledger" {
				t.Fatalf("from %q, want ledger (refused: %s)", g.MetersFrom(), c.why)
			}
			if l := c.env.log.String()[at:]; !strings.Contains(l, "every call and transaction of the last 50 h read") || !strings.Contains(l, c.why) {
				t.Fatalf("the refusal is not logged with why (%q):\n%s", c.why, l)
			}
			if metersView(g, e.now) != want {
				t.Fatal("a refused snapshot's start differs from the full read")
			}
			g.Close()
		})
	}

	t.Run("Stale", func(t *testing.T) {
		// A record appended after the snapshot with an At before its cut
		// (a call longer than the lag, or the clock set back).
		p := filepath.Join(t.TempDir(), MetersFile)
		copyFile(t, path, p)
		e.calls(t1.Add(-time.Minute), time.Second, 1, 7)
		full := e.gateway("")
		want := metersView(full, e.now)
		full.Close()
		b, _, why := readMeters(p, []string{hash}, e.led, e.now)
		if b != nil || !strings.Contains(why, "older than its cut") {
			t.Fatalf("stale snapshot: got %v %q, want refused as older than its cut", b != nil, why)
		}
		g := e.gateway(p, hash)
		if g.MetersFrom() != "ledger" || metersView(g, e.now) != want {
			t.Fatalf("stale snapshot start: from %q, or differs from the full read", g.MetersFrom())
		}
		g.Close()
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMetersSnapshot_LateRecord: the snapshot written while serving puts
// its cut metersLag behind the clock; a call whose record comes later
// still with an At before that cut makes the writer rebuild the book from
// the ledger, so the next snapshot holds it.
func TestMetersSnapshot_LateRecord(t *testing.T) {
	e := newMetersEnv(t)
	t0 := time.Now().Add(-time.Hour)
	e.calls(t0.Add(-time.Hour), time.Second, 1000, 1)
	e.now = t0
	path := filepath.Join(e.dir, MetersFile)
	g := e.gateway(path)
	e.calls(t0.Add(time.Second), time.Second, 200, 2)
	g.snapshotMeters(t0.Add(100 * time.Second)) // the cut: 100 of the 200 in
	first := g.MetersSnapshot()
	e.calls(t0.Add(50*time.Second), time.Second, 1, 3) // late: before the cut
	g.snapshotMeters(t0.Add(150 * time.Second))
	second := g.MetersSnapshot()
	if first == "" || second == first {
		t.Fatalf("snapshots while serving: %q then %q", first, second)
	}
	g.Close()
	e.now = t0.Add(10 * time.Minute)
	full := e.gateway("")
	want := metersView(full, e.now)
	full.Close()
	if !strings.Contains(e.log.String(), "rebuilding it from the ledger") {
		t.Fatalf("the late record did not make the writer rebuild the book:\n%s", e.log.String())
	}
	got := e.gateway(path, g.MetersSnapshot())
	if got.MetersFrom() != "snapshot" {
		t.Fatalf("the snapshot written at Close after the rebuild was not used (%s)", got.MetersFrom())
	}
	if metersView(got, e.now) != want {
		t.Fatal("restored meters differ from the full read")
	}
	got.Close()
}
