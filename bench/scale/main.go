// Command scale measures toolgate's decision path at scale, using the
// packages directly: resident memory and the latency of one API-key
// decision (identity.Store.Authenticate → policy Effective.Decide →
// meter Quotas.Admit → Spend.Reserve → Spend.Commit) with -keys keys
// stored in badger and -active principals live in their quota windows and
// spend accounts.
//
// Every number is paired with a baseline measured in the same process, a
// store of -base-keys keys with as many active principals, because the
// machines it runs on are shared and noisy: read the ratios.
//
// Keys are written straight into badger in the identity package's stored
// form (creating a million through the API or Store.Create, one
// transaction each, is too slow), then loaded by identity.Open as the
// gateway does at start. The program writes a Markdown report on stdout and
// progress on stderr; it deletes its temporary store on exit.
package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/policy"
)

// The tool and policies of the end-to-end benchmark: one priced light
// tool, quotas and caps too high to trip.
const (
	toolsJSON    = `{"tools":[{"id":"bench/echo","rate_class":"light","price_usd":"0.000001","upstream":"http://127.0.0.1:1/extract"}]}`
	policiesJSON = `{"version":1,"fail_mode":"open",
 "defaults":{"rate_class_quota":{"light":100000000}},
 "tiers":{"api_key":{"daily_spend_cap_usd":null},"wallet":{},"unknown_wallet":{}},
 "enforced":{"deny_tools":[]}}`
)

// storedKey mirrors the identity store's record under "k/<key_id>": the
// public key fields and the hex SHA-256 of the secret.
type storedKey struct {
	ID        string    `json:"key_id"`
	Name      string    `json:"name,omitempty"`
	Hint      string    `json:"key"`
	CreatedAt time.Time `json:"created_at"`
	HashHex   string    `json:"sha256"`
}

// decider holds what one API-key decision reads.
type decider struct {
	keys   *identity.Store
	eff    *policy.Effective
	tool   *catalog.Tool
	quotas *meter.Quotas
	spend  *meter.Spend
	calls  uint64 // quota call ids
}

// decide runs one API-key decision as the gateway's identify and decide
// stages do, then commits the spend as a served call does.
func (d *decider) decide(secret []byte, now time.Time) {
	k, ok := d.keys.Authenticate(secret, now)
	if !ok {
		log.Fatalf("scale: key %q does not authenticate", secret)
	}
	if ok, reason := d.eff.Decide(d.tool); !ok {
		log.Fatalf("scale: policy denied: %s", reason)
	}
	d.calls++
	q := d.quotas.Admit(k.Principal, int(d.tool.RateClass), d.eff.Quota(d.tool.RateClass), now, d.calls)
	if !q.Allowed {
		log.Fatalf("scale: quota refused %s", k.Principal)
	}
	day, _ := meter.DayOf(now, d.eff.Location())
	capUSD, hasCap := d.eff.SpendCap()
	res, sr := d.spend.Reserve(k.Principal, day, d.tool.Price, capUSD, hasCap)
	if !sr.OK {
		log.Fatalf("scale: spend refused %s: %s", k.Principal, sr.Reason)
	}
	d.spend.Commit(res, nil)
}

// result is one configuration's measurements.
type result struct {
	keys, active            int
	write, open             time.Duration
	openCPU                 time.Duration // user + system time of the process during identity.Open
	rssBefore, rssKeys      int64         // VmRSS with badger open, before and after identity.Open
	rssActive               int64         // VmRSS after the principals are active
	anonKeys, fileKeys      int64         // RssAnon, RssFile with keys loaded
	anonActive, fileActive  int64         // and with the principals active
	heapKeys, heapActive    uint64
	quotaLen, spendLen      int
	mean                    time.Duration // untimed loop, per decision
	p50, p90, p99, p999, mx time.Duration
}

func main() {
	nKeys := flag.Int("keys", 1_000_000, "keys stored")
	nActive := flag.Int("active", 100_000, "principals active in quota windows")
	baseKeys := flag.Int("base-keys", 1_000, "keys (and active principals) of the paired baseline")
	rounds := flag.Int("rounds", 5, "timed passes over the active principals")
	dir := flag.String("dir", "", "temporary directory (default: the system's)")
	flag.Parse()
	if *nActive > *nKeys || *baseKeys < 1 || *nActive < 1 || *rounds < 1 {
		log.Fatal("scale: want 1 <= -active <= -keys, -base-keys >= 1, -rounds >= 1")
	}
	tmp, err := os.MkdirTemp(*dir, "toolgate-scale-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	cat, err := catalog.Decode([]byte(toolsJSON))
	if err != nil {
		log.Fatal(err)
	}
	doc, err := policy.DecodeDocument([]byte(policiesJSON))
	if err != nil {
		log.Fatal(err)
	}
	set, err := policy.Compile(doc, cat)
	if err != nil {
		log.Fatal(err)
	}

	// Baseline first, so the large store's memory does not sit under it.
	base := run(filepath.Join(tmp, "base"), *baseKeys, *baseKeys, *rounds, set, cat.Tools[0])
	big := run(filepath.Join(tmp, "big"), *nKeys, *nActive, *rounds, set, cat.Tools[0])
	report(os.Stdout, base, big)
}

// run stores nKeys keys, reopens the store as the gateway does, makes
// nActive principals active and times decisions over them.
func run(dir string, nKeys, nActive, rounds int, set *policy.Set, tool *catalog.Tool) result {
	r := result{keys: nKeys, active: nActive}
	logf("%d keys: writing", nKeys)
	t0 := time.Now()
	secrets := writeKeys(dir, nKeys, nActive)
	r.write = time.Since(t0)

	db := openDB(dir)
	defer db.Close()
	freeMemory()
	r.rssBefore = rss()
	t0 = time.Now()
	cpu0 := cpuTime()
	keys, err := identity.Open(db)
	r.openCPU = cpuTime() - cpu0
	if err != nil {
		log.Fatal(err)
	}
	r.open = time.Since(t0)
	if keys.Len() != nKeys {
		log.Fatalf("scale: loaded %d keys, want %d", keys.Len(), nKeys)
	}
	freeMemory()
	r.rssKeys, r.heapKeys = rss(), heapInuse()
	r.anonKeys, r.fileKeys = status("RssAnon"), status("RssFile")
	logf("%d keys: loaded in %v, RSS %d MiB", nKeys, r.open.Round(time.Millisecond), r.rssKeys>>20)

	d := &decider{keys: keys, eff: set.Tier(policy.TierAPIKey), tool: tool,
		quotas: meter.NewQuotas(0), spend: meter.NewSpend()}
	// One call each: every principal now has a quota window and a spend day.
	for _, s := range secrets {
		d.decide(s, time.Now())
	}
	order := make([]int, len(secrets))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))

	// Untimed passes: the mean cost, without per-call clock reads.
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	n := 0
	t0 = time.Now()
	for range rounds {
		for _, i := range order {
			d.decide(secrets[i], time.Now())
			n++
		}
	}
	r.mean = time.Since(t0) / time.Duration(n)

	// Timed passes: the distribution, each call in random order.
	lat := make([]time.Duration, 0, rounds*len(order))
	for range rounds {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			start := time.Now()
			d.decide(secrets[i], start)
			lat = append(lat, time.Since(start))
		}
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	r.p50, r.p90, r.p99, r.p999, r.mx = pct(0.50), pct(0.90), pct(0.99), pct(0.999), lat[len(lat)-1]
	lat = nil

	freeMemory()
	r.rssActive, r.heapActive = rss(), heapInuse()
	r.anonActive, r.fileActive = status("RssAnon"), status("RssFile")
	r.quotaLen, r.spendLen = d.quotas.Len(), d.spend.Len()
	logf("%d keys, %d active: p50 %v p99 %v, RSS %d MiB", nKeys, nActive, r.p50, r.p99, r.rssActive>>20)
	runtime.KeepAlive(secrets)
	return r
}

// writeKeys stores n keys in a new badger at dir and returns the secrets
// of the first active ones.
func writeKeys(dir string, n, active int) [][]byte {
	db := openDB(dir)
	defer db.Close()
	wb := db.NewWriteBatch()
	now := time.Now().UTC().Truncate(time.Second)
	secrets := make([][]byte, 0, active)
	for i := range n {
		secret, hash := identity.NewSecret()
		if i < active {
			secrets = append(secrets, []byte(secret))
		}
		id := fmt.Sprintf("k_B%015d", i) // the length of a real key_id
		v, err := json.Marshal(storedKey{
			ID: id, Name: "scale " + strconv.Itoa(i), Hint: secret[:7] + "…", CreatedAt: now,
			HashHex: hex.EncodeToString(hash[:]),
		})
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

// openDB opens badger with the options of toolgate serve.
func openDB(dir string) *badger.DB {
	// The store options of cmd/toolgate's storeOptions, without its
	// checksum verification of every table at open (which touches every
	// page of the store; bench/startup measures the real process).
	o := badger.DefaultOptions(dir).WithLogger(nil).WithNumVersionsToKeep(1).
		WithMemTableSize(32 << 20).WithBlockCacheSize(16 << 20)
	if v := os.Getenv("XBC"); v != "" {
		n, _ := strconv.Atoi(v)
		o = o.WithBlockCacheSize(int64(n) << 20)
	}
	if os.Getenv("XNOCOMP") != "" {
		o = o.WithCompression(options.None)
	}
	db, err := badger.Open(o)
	if err != nil {
		log.Fatal(err)
	}
	return db
}

// cpuTime returns the user + system time the process has used so far:
// on a shared machine, wall time measures the neighbours as much as the
// work.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss returns the process's resident set size (VmRSS) in bytes.
func rss() int64 { return status("VmRSS") }

// status returns a field of /proc/self/status given in kB, in bytes:
// VmRSS is RssAnon (the heap, stacks) + RssFile (mapped files: badger's
// tables and logs, the binary) + RssShmem.
func status(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		log.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				log.Fatal(err)
			}
			return kb << 10
		}
	}
	log.Fatalf("scale: no %s in /proc/self/status", field)
	return 0
}

func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// freeMemory runs the GC and returns freed pages to the OS, so that RSS
// reflects live memory.
func freeMemory() { debug.FreeOSMemory() }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scale: "+format+"\n", args...)
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func us(d time.Duration) string { return fmt.Sprintf("%.2f µs", float64(d)/1e3) }

func ratio(a, b time.Duration) string { return fmt.Sprintf("%.2f×", float64(a)/float64(b)) }

// report writes the two configurations side by side, as Markdown.
func report(w *os.File, base, big result) {
	fmt.Fprintf(w, "| | baseline | at scale | ratio |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(w, "| keys stored | %d | %d | |\n", base.keys, big.keys)
	fmt.Fprintf(w, "| principals active (quota windows / spend accounts) | %d / %d | %d / %d | |\n",
		base.quotaLen, base.spendLen, big.quotaLen, big.spendLen)
	fmt.Fprintf(w, "| write keys to badger (WriteBatch) | %v | %v | |\n", base.write.Round(time.Millisecond), big.write.Round(time.Millisecond))
	fmt.Fprintf(w, "| identity.Open (load into memory) | %v | %v | |\n", base.open.Round(time.Millisecond), big.open.Round(time.Millisecond))
	fmt.Fprintf(w, "| identity.Open, CPU time of the process (user + system; badger's compactions included) | %v | %v | |\n", base.openCPU.Round(time.Millisecond), big.openCPU.Round(time.Millisecond))
	fmt.Fprintf(w, "| RSS with badger open, before identity.Open | %s | %s | |\n", mib(base.rssBefore), mib(big.rssBefore))
	fmt.Fprintf(w, "| RSS with keys loaded | %s | %s | |\n", mib(base.rssKeys), mib(big.rssKeys))
	fmt.Fprintf(w, "| RSS with principals active | %s | %s | |\n", mib(base.rssActive), mib(big.rssActive))
	fmt.Fprintf(w, "| RssAnon / RssFile, keys loaded | %s / %s | %s / %s | |\n", mib(base.anonKeys), mib(base.fileKeys), mib(big.anonKeys), mib(big.fileKeys))
	fmt.Fprintf(w, "| RssAnon / RssFile, principals active | %s / %s | %s / %s | |\n", mib(base.anonActive), mib(base.fileActive), mib(big.anonActive), mib(big.fileActive))
	fmt.Fprintf(w, "| Go heap in use, keys loaded (counts badger's untouched arenas) | %s | %s | |\n", mib(int64(base.heapKeys)), mib(int64(big.heapKeys)))
	fmt.Fprintf(w, "| Go heap in use, principals active | %s | %s | |\n", mib(int64(base.heapActive)), mib(int64(big.heapActive)))
	perKey := float64(big.rssKeys-big.rssBefore) / float64(big.keys)
	perActive := float64(big.rssActive-big.rssKeys) / float64(big.active)
	fmt.Fprintf(w, "| RSS per stored key ((keys loaded − before identity.Open) ÷ keys) | | %.0f B | |\n", perKey)
	fmt.Fprintf(w, "| RSS per active principal ((active − keys loaded) ÷ active) | | %.0f B | |\n", perActive)
	fmt.Fprintf(w, "| decision, mean (untimed loop) | %s | %s | %s |\n", us(base.mean), us(big.mean), ratio(big.mean, base.mean))
	fmt.Fprintf(w, "| decision p50 | %s | %s | %s |\n", us(base.p50), us(big.p50), ratio(big.p50, base.p50))
	fmt.Fprintf(w, "| decision p90 | %s | %s | %s |\n", us(base.p90), us(big.p90), ratio(big.p90, base.p90))
	fmt.Fprintf(w, "| decision p99 | %s | %s | %s |\n", us(base.p99), us(big.p99), ratio(big.p99, base.p99))
	fmt.Fprintf(w, "| decision p99.9 | %s | %s | %s |\n", us(base.p999), us(big.p999), ratio(big.p999, base.p999))
	fmt.Fprintf(w, "| decision max | %s | %s | |\n", us(base.mx), us(big.mx))
}
