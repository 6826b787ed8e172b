package ship

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
)

// s3env points the AWS SDK's usual environment variables at a local
// store with static test credentials.
func s3env(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", "toolgate-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "toolgate-test-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
}

// faults sits in front of a real S3 server and cuts chosen PUTs short:
// it reads half the body, then drops the connection, as a crash or a
// network failure mid-upload would.
type faults struct {
	mu   sync.Mutex
	cut  func(key string) bool
	puts map[string]int // completed PUTs by key
	all  atomic.Int64   // every PUT seen
}

func (f *faults) setCut(fn func(key string) bool) {
	f.mu.Lock()
	f.cut = fn
	f.mu.Unlock()
}

func (f *faults) putCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.puts[key]
}

func (f *faults) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			f.all.Add(1)
			f.mu.Lock()
			cut := f.cut != nil && f.cut(r.URL.Path)
			if !cut {
				f.puts[r.URL.Path]++
			}
			f.mu.Unlock()
			if cut {
				io.CopyN(io.Discard, r.Body, r.ContentLength/2)
				if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
					c.Close()
				}
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// fakeS3 is gofakes3 (in memory) on a loopback port, with a bucket.
type fakeS3 struct {
	url    string
	bucket *Bucket
	faults *faults
}

func startFakeS3(t testing.TB, bucket, prefix string) *fakeS3 {
	t.Helper()
	s3env(t)
	f := &faults{puts: map[string]int{}}
	srv := httptest.NewServer(f.wrap(gofakes3.New(s3mem.New()).Server()))
	t.Cleanup(srv.Close)
	b := openBucket(t, srv.URL, "s3://"+bucket+"/"+prefix)
	if _, err := b.c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	return &fakeS3{url: srv.URL, bucket: b, faults: f}
}

func openBucket(t testing.TB, endpoint, loc string) *Bucket {
	t.Helper()
	l, err := ParseLocation(loc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), l, ClientOptions{Endpoint: endpoint, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// testLedger is a ledger on badger in a temp dir whose records are
// stamped by clk.
type testLedger struct {
	l   *ledger.Ledger
	dir string
	clk *clock
}

func openLedger(t *testing.T, checkpointEvery int) *testLedger {
	return openLedgerTB(t, checkpointEvery)
}

func openLedgerTB(t testing.TB, checkpointEvery int) *testLedger {
	t.Helper()
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir + "/store").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
	l, err := ledger.Open(db, dir, ledger.Options{CheckpointEvery: checkpointEvery, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		db.Close()
	})
	return &testLedger{l: l, dir: dir, clk: clk}
}

// add appends n call records spread over the hours of d (UTC).
func (tl *testLedger) add(t *testing.T, d time.Time, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		tl.clk.set(d.Add(time.Duration(i+1) * (23 * time.Hour) / time.Duration(n+1)))
		r := &ledger.Record{Type: ledger.TypeCall, RequestID: "req-" + d.Format("0102") + "-" + itoa(i),
			Principal: "key:k1", Tier: "api_key", Tool: "extract/structured", RateClass: "light",
			Outcome: ledger.OutcomeAllowed, Status: 200, Cost: money.Micros(10000), LatencyUS: 120}
		if err := tl.l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

func (tl *testLedger) key(t testing.TB) []byte {
	t.Helper()
	k, err := ledger.LoadKey(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func day(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(dayLayout, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newShipper(t *testing.T, tl *testLedger, b *Bucket, stage string, mod ...func(*Config)) *Shipper {
	return newShipperTB(t, tl, b, stage, mod...)
}

func newShipperTB(t testing.TB, tl *testLedger, b *Bucket, stage string, mod ...func(*Config)) *Shipper {
	t.Helper()
	cfg := Config{Bucket: b, Node: "node-a", Source: LedgerSource{tl.l}, Key: tl.key(t),
		StageDir: stage, PartBytes: 2048, Now: tl.clk.now}
	for _, f := range mod {
		f(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// freeAddr returns a free loopback address.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func hasSuffix(s string, suffixes ...string) bool {
	for _, x := range suffixes {
		if strings.HasSuffix(s, x) {
			return true
		}
	}
	return false
}
