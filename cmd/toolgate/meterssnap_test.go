package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestServe_MetersSnapshot: the meters (spend of today, /stats) of a
// start from the meters snapshot - after a clean stop, and after kill -9
// under load - are the ones a start that reads the last 50 hours
// restores; a snapshot edited while the gateway was down is refused,
// logged why.
func TestServe_MetersSnapshot(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	data := filepath.Join(dir, "data")
	logText := func() string { return gatewayLog(dir) }
	started := func(mark int) string {
		waitFor(t, "the serving log line", func() bool { return strings.Contains(logText()[mark:], "toolgate serving") })
		return logText()[mark:]
	}
	named := func(file string) string {
		var s struct {
			Meters string `json:"meters_snapshot"`
		}
		b, _ := os.ReadFile(filepath.Join(data, file))
		json.Unmarshal(b, &s)
		return s.Meters
	}
	fileHash := func() string {
		b, _ := os.ReadFile(filepath.Join(data, "meters-snapshot"))
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:])
	}
	var secret string
	// meters is what a start restored: the key's spend of today and the
	// /stats sums of the last day.
	meters := func(p *proc) string {
		_, st := p.req("GET", "/authorization/status?api_key="+secret, "")
		code, b := p.admin("GET", "/stats?since=24h&top=1000", "")
		if code != 200 {
			t.Fatalf("/stats: %d %s", code, b)
		}
		var s struct {
			Totals, Tools, TopPrincipals json.RawMessage
			Series                       struct{ ByOutcome json.RawMessage }
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		spend, _ := json.Marshal(jsonField(t, st, "spend_today_usd"))
		return string(spend) + "\n" + string(s.Totals) + "\n" + string(s.Tools) + "\n" + string(s.TopPrincipals) + "\n" + string(s.Series.ByOutcome)
	}
	call := func(p *proc, tool string) int {
		code, _ := p.req("POST", "/tools/"+tool, `{}`, "X-API-Key", secret)
		return code
	}

	p := startGateway(t, dir)
	secret, _ = p.createKey(`{"name":"m","policy":{"rate_class_quota":{"light":100000,"heavy":100000}}}`)
	for i := range 30 {
		call(p, []string{"extract/structured", "code_execute", "nope"}[i%3])
	}
	p.stop(syscall.SIGTERM)
	if h := named("state-seal"); h == "" || h != fileHash() {
		t.Fatalf("the seal names meters snapshot %q, the file's is %q", h, fileHash())
	}

	at := len(logText())
	p = startGateway(t, dir)
	if out := started(at); !strings.Contains(out, "meters_from=snapshot") || !strings.Contains(out, "meters: from the meters snapshot") {
		t.Fatalf("the start after a clean stop did not restore from the meters snapshot:\n%s", out)
	}
	fromSnapshot := meters(p)
	if !strings.Contains(fromSnapshot, `"calls":30`) || !strings.HasPrefix(fromSnapshot, "0.3\n") {
		t.Fatalf("restored after a clean stop: %s, want 30 calls and 0.30 spent", fromSnapshot)
	}
	waitFor(t, "the start's mark to name the snapshot it restored from", func() bool { return named("state-mark") == fileHash() })

	// Load, then kill -9.
	var answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tools := []string{"extract/structured", "code_execute", "nope"}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", p.url+"/tools/"+tools[(i+n)%3], strings.NewReader(`{}`))
				req.Header.Set("X-API-Key", secret)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				answered.Add(1)
			}
		}()
	}
	waitLoad(t, 200, func() int { return int(answered.Load()) })
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	close(stop)
	wg.Wait()

	at = len(logText())
	p = startGateway(t, dir)
	if out := started(at); !strings.Contains(out, "meters_from=snapshot") || !strings.Contains(out, "as marked while the last run served") {
		t.Fatalf("the crash start did not restore from the snapshot the mark names:\n%s", out)
	}
	crashed := meters(p)
	p.stop(syscall.SIGKILL)

	at = len(logText())
	p = startGateway(t, dir, "--meters-snapshot-every", "0")
	if out := started(at); strings.Contains(out, "meters_from") {
		t.Fatalf("a start without the meters snapshot used it:\n%s", out)
	}
	if full := meters(p); full != crashed {
		t.Fatalf("after kill -9 under load, from the snapshot:\n%s\nfrom the last 50 hours:\n%s", crashed, full)
	}
	p.stop(syscall.SIGTERM)

	// The snapshot edited while down: refused by its SHA-256, the last
	// 50 hours read, the same meters.
	path := filepath.Join(data, "meters-snapshot")
	p = startGateway(t, dir)
	want := meters(p)
	p.stop(syscall.SIGTERM)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-2] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	at = len(logText())
	p = startGateway(t, dir)
	if out := started(at); !strings.Contains(out, "meters_from=ledger") || !strings.Contains(out, "not the one the state seal or mark names") {
		t.Fatalf("an edited meters snapshot was not refused, or why is not logged:\n%s", out)
	}
	if got := meters(p); got != want {
		t.Fatalf("after a refused snapshot:\n%s\nwant:\n%s", got, want)
	}
	p.stop(syscall.SIGTERM)
}
