// Command startup measures how long `toolgate serve` takes to serve
// with many keys stored, from process start to the first answered API-key
// call, and the process's resident memory then and after calls from many
// principals.
//
// It writes -keys keys straight into a data dir's badger store in the
// identity package's stored form (as bench/scale does), starts the
// gateway once so that it adopts them into its ledger (a data dir made
// through the API holds one admin record per key, as this one then does),
// stops it with SIGTERM, and then starts it -runs times. Each start is
// timed from exec to the first 200 answer of POST /tools/bench/echo with
// one of the stored keys (polled every 2 ms), against a loopback upstream
// this program serves, and the process's CPU time (user + system) is read
// then. After each start -active principals make one call each and VmRSS
// is read again; then the gateway is stopped: with SIGTERM, the clean
// shutdown timed, or with -stop kill with SIGKILL, so that the next start
// is a start after a crash (-stop alternate: kill, term, kill, ...).
//
// With -base a second binary is measured the same way, on its own copy
// of the same data dir, alternating with -toolgate start by start, so
// every figure has a baseline from the same run. The first timed start
// of each binary follows the preparing start's clean stop (made by
// -toolgate); later ones follow its own. The program prints Markdown on stdout and
// progress on stderr, and deletes its data dir on exit.
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/toolgate/toolgate/identity"
)

// storedKey mirrors the identity store's record under "k/<key_id>".
type storedKey struct {
	ID        string    `json:"key_id"`
	Name      string    `json:"name,omitempty"`
	Hint      string    `json:"key"`
	CreatedAt time.Time `json:"created_at"`
	HashHex   string    `json:"sha256"`
}

const policiesJSON = `{ "version": 1, "fail_mode": "open",
  "defaults": { "rate_class_quota": { "light": 100000000 } },
  "tiers": { "api_key": { "daily_spend_cap_usd": null }, "wallet": {}, "unknown_wallet": {} },
  "enforced": { "deny_tools": [] } }`

// sample is one start of one binary.
type sample struct {
	start, stop      time.Duration // exec → first 200; SIGTERM → exit
	startCPU         time.Duration // the process's CPU time (user + system) at the first 200
	rssServing       int64         // VmRSS at the first 200
	servingAnon      int64         // RssAnon then (RssFile is the rest)
	rssActive        int64         // VmRSS after -active principals called once
	rssHWM           int64         // VmHWM (peak) at the end
	activeCalls      time.Duration // wall time of the -active calls
	rssAnon, rssFile int64         // at the end
	killed           bool          // stopped with SIGKILL
	after            string        // how the run before this start ended
	phases           string        // the start's phases, from its serving log line
}

func main() {
	nKeys := flag.Int("keys", 1_000_000, "keys stored")
	nActive := flag.Int("active", 100_000, "principals that make one call after each start")
	bin := flag.String("toolgate", "", "toolgate binary to measure (required)")
	base := flag.String("base", "", "baseline toolgate binary, measured alternately on the same data dir")
	runs := flag.Int("runs", 3, "starts of each binary")
	dir := flag.String("dir", "", "temporary directory (default: the system's)")
	keep := flag.String("keep", "", "keep the data dir and the active secrets here after the run (reused when it exists)")
	stops := flag.String("stop", "term", "how each run ends: term (SIGTERM, a clean stop), kill (SIGKILL: the next start is a crash start) or alternate (kill, term, kill, ...: crash and clean starts in turn)")
	flag.Parse()
	if *bin == "" || *nActive > *nKeys || *runs < 0 || *stops != "term" && *stops != "kill" && *stops != "alternate" {
		log.Fatal("startup: want -toolgate BIN, -active <= -keys, -runs >= 0, -stop term|kill|alternate")
	}
	tmp, err := os.MkdirTemp(*dir, "toolgate-startup-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	up := startUpstream()
	tools := filepath.Join(tmp, "tools.json")
	pols := filepath.Join(tmp, "policies.json")
	write(tools, fmt.Sprintf(`{"tools":[{"id":"bench/echo","rate_class":"light","price_usd":"0.000001","upstream":"http://%s/extract","timeout_ms":30000}]}`, up))
	write(pols, policiesJSON)
	data := filepath.Join(tmp, "data")
	if *keep != "" {
		data = *keep
	}
	g := gateway{tools: tools, policies: pols, data: data}
	secrets, err := readSecrets(filepath.Join(data, "secrets"))
	if err != nil {
		logf("writing %d keys", *nKeys)
		secrets = writeKeys(filepath.Join(data, "store"), *nKeys, *nActive)
		logf("first start (adopts the keys into the ledger)")
		first := g.run(*bin, secrets[:1], false)
		logf("first start: serving after %v (adoption included), stopped in %v", first.start.Round(time.Millisecond), first.stop.Round(time.Millisecond))
		if *keep != "" {
			write(filepath.Join(data, "secrets"), string(bytes.Join(secrets, []byte("\n"))))
		}
	} else {
		logf("reusing %s (%d secrets)", data, len(secrets))
	}
	secrets = secrets[:min(len(secrets), max(*nActive, 1))]

	bins := []string{*bin}
	if *base != "" {
		bins = []string{*base, *bin}
	}
	// Each binary starts from its own copy of the prepared data dir, so
	// that one's starts (its calls, its shutdown) do not change what the
	// other finds.
	dirs := map[string]string{}
	for j, b := range bins {
		dirs[b] = filepath.Join(tmp, fmt.Sprintf("data-%d", j))
		if out, err := exec.Command("cp", "-a", data, dirs[b]).CombinedOutput(); err != nil {
			log.Fatalf("startup: copy the data dir: %v\n%s", err, out)
		}
	}
	got := map[string][]sample{}
	for i := range *runs {
		kill := *stops == "kill" || *stops == "alternate" && i%2 == 0
		for _, b := range bins {
			g.data = dirs[b]
			s := g.run(b, secrets, kill)
			s.after = "clean stop"
			if prev := got[b]; len(prev) > 0 && prev[len(prev)-1].killed {
				s.after = "kill -9"
			}
			logf("run %d %s (after a %s): serving after %v, RSS %d → %d MiB, stopped in %v", i+1, filepath.Base(b), s.after,
				s.start.Round(time.Millisecond), s.rssServing>>20, s.rssActive>>20, s.stop.Round(time.Millisecond))
			got[b] = append(got[b], s)
		}
	}
	if *runs > 0 {
		report(bins, got, *nKeys, *nActive)
	}
}

type gateway struct {
	tools, policies, data string
}

// run starts bin on the data dir, times the first answered call, makes
// one call per secret, and stops it: with SIGTERM, or with SIGKILL when
// kill is set (then stop is the time until the process is gone).
func (g *gateway) run(bin string, secrets [][]byte, kill bool) sample {
	addr := freeAddr()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data", g.data, "--tools", g.tools,
		"--policies", g.policies, "--admin-token", "startup-bench-admin", "--sync", "interval",
		"--log-level", "info") // the serving line gives the start's phases
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 30 * time.Second}
	url := "http://" + addr + "/tools/bench/echo"
	call := func(secret []byte) (int, error) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"text":"hi"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", string(secret))
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var s sample
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := t0.Add(10 * time.Minute)
	for {
		code, err := call(secrets[0])
		if err == nil && code == 200 {
			break
		}
		if err == nil && code != 200 {
			log.Fatalf("startup: first call answered %d\n%s", code, stderr.String())
		}
		select {
		case err := <-exited:
			log.Fatalf("startup: %s exited before serving: %v\n%s", bin, err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			log.Fatalf("startup: %s not serving after 10 minutes", bin)
		}
		time.Sleep(2 * time.Millisecond)
	}
	s.start = time.Since(t0)
	pid := cmd.Process.Pid
	s.startCPU = cpuTime(pid)
	s.rssServing, s.servingAnon = status(pid, "VmRSS"), status(pid, "RssAnon")
	if len(secrets) > 1 {
		t1 := time.Now()
		var wg sync.WaitGroup
		const workers = 4
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(secrets); i += workers {
					if code, err := call(secrets[i]); err != nil || code != 200 {
						log.Fatalf("startup: call %d: %d %v", i, code, err)
					}
				}
			}()
		}
		wg.Wait()
		s.activeCalls = time.Since(t1)
	}
	s.rssActive = status(pid, "VmRSS")
	s.rssHWM = status(pid, "VmHWM")
	s.rssAnon, s.rssFile = status(pid, "RssAnon"), status(pid, "RssFile")
	client.CloseIdleConnections()
	t2 := time.Now()
	sig := syscall.SIGTERM
	if kill {
		sig, s.killed = syscall.SIGKILL, true
	}
	cmd.Process.Signal(sig)
	select {
	case err := <-exited:
		if err != nil && !kill {
			log.Fatalf("startup: %s stopped with %v\n%s", bin, err, stderr.String())
		}
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		log.Fatalf("startup: %s did not stop", bin)
	}
	s.stop = time.Since(t2)
	// The start's phases, from the serving log line (the process is gone:
	// its output is complete).
	for _, line := range strings.Split(stderr.String(), "\n") {
		if i := strings.Index(line, "store_ms="); i >= 0 && strings.Contains(line, "toolgate serving") {
			s.phases = line[i:]
		}
	}
	return s
}

func report(bins []string, got map[string][]sample, keys, active int) {
	fmt.Printf("`toolgate serve` with %d keys stored; %d principals call once after each start.\n\n", keys, active)
	fmt.Printf("| binary | run | start after | exec → first 200 | CPU then | RSS serving (anon / file) | RSS after %d principals | RssAnon / RssFile | peak (VmHWM) | stop |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n", active)
	for _, b := range bins {
		for i, s := range got[b] {
			stop := fmt.Sprintf("%.2f s", s.stop.Seconds())
			if s.killed {
				stop = "kill -9"
			}
			fmt.Printf("| %s | %d | %s | %.2f s | %.2f s | %s (%s / %s) | %s | %s / %s | %s | %s |\n", filepath.Base(b), i+1, s.after, s.start.Seconds(), s.startCPU.Seconds(),
				mib(s.rssServing), mib(s.servingAnon), mib(s.rssServing-s.servingAnon), mib(s.rssActive), mib(s.rssAnon), mib(s.rssFile), mib(s.rssHWM), stop)
		}
	}
	fmt.Printf("\nThe start's phases (its serving log line):\n\n| binary | run | start after | phases |\n|---|---:|---|---|\n")
	for _, b := range bins {
		for i, s := range got[b] {
			fmt.Printf("| %s | %d | %s | %s |\n", filepath.Base(b), i+1, s.after, s.phases)
		}
	}
	fmt.Printf("\n| binary | start after | starts | exec → first 200, median (min–max) | CPU to first 200, median (min–max) | RSS after principals, median (min–max) |\n|---|---|---:|---:|---:|---:|\n")
	for _, b := range bins {
		for _, after := range []string{"clean stop", "kill -9"} {
			var st, cpu []time.Duration
			var rs []int64
			for _, s := range got[b] {
				if s.after == after {
					st = append(st, s.start)
					cpu = append(cpu, s.startCPU)
					rs = append(rs, s.rssActive)
				}
			}
			if len(st) == 0 {
				continue
			}
			slices.Sort(st)
			slices.Sort(cpu)
			slices.Sort(rs)
			fmt.Printf("| %s | %s | %d | %.2f s (%.2f–%.2f) | %.2f s (%.2f–%.2f) | %s (%s–%s) |\n", filepath.Base(b), after, len(st),
				st[len(st)/2].Seconds(), st[0].Seconds(), st[len(st)-1].Seconds(),
				cpu[len(cpu)/2].Seconds(), cpu[0].Seconds(), cpu[len(cpu)-1].Seconds(),
				mib(rs[len(rs)/2]), mib(rs[0]), mib(rs[len(rs)-1]))
		}
	}
}

// writeKeys stores n keys in a new badger at dir and returns the secrets
// of the first active ones (at least one).
func writeKeys(dir string, n, active int) [][]byte {
	// Uncompressed, as `toolgate serve` writes its tables; the tables
	// rewritten by the first start's compactions are the preparing
	// binary's (-toolgate).
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithNumVersionsToKeep(1).WithCompression(options.None))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	wb := db.NewWriteBatch()
	now := time.Now().UTC().Truncate(time.Second)
	secrets := make([][]byte, 0, max(active, 1))
	for i := range n {
		secret, hash := identity.NewSecret()
		if i < max(active, 1) {
			secrets = append(secrets, []byte(secret))
		}
		id := fmt.Sprintf("k_S%015d", i) // the length of a real key_id
		v, err := json.Marshal(storedKey{ID: id, Name: "startup " + strconv.Itoa(i), Hint: secret[:7] + "…",
			CreatedAt: now, HashHex: hex.EncodeToString(hash[:])})
		if err != nil {
			log.Fatal(err)
		}
		if err := wb.Set([]byte("k/"+id), v); err != nil {
			log.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		log.Fatal(err)
	}
	return secrets
}

func readSecrets(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return bytes.Split(b, []byte("\n")), nil
}

func startUpstream() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	})}
	go srv.Serve(ln)
	return ln.Addr().String()
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// cpuTime returns the user and system CPU time of a process so far
// (/proc/<pid>/stat, in clock ticks of 1/100 s), 0 if unreadable.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(string(b), ") ") // after the command name
	if !ok {
		return 0
	}
	f := strings.Fields(rest) // f[0] is field 3 (state); utime and stime are fields 14 and 15
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// status returns a /proc/<pid>/status field in kB as bytes (0 if absent).
func status(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func write(path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		log.Fatal(err)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "startup: "+format+"\n", args...) }
