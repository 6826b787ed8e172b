package ship

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/toolgate/toolgate/ledger"
)

var ctx = context.Background()

// fixture: 30 records on 2026-11-28, none on 11-29, 25 on 11-30, and a
// clock at 2026-12-01 10:00 UTC (so three complete days).
func fixture(t *testing.T) *testLedger {
	t.Helper()
	tl := openLedger(t, 5)
	tl.add(t, day(t, "2026-11-28"), 30)
	tl.add(t, day(t, "2026-11-30"), 25)
	tl.clk.set(day(t, "2026-12-01").Add(10 * time.Hour))
	return tl
}

func pubOf(t *testing.T, tl *testLedger) ed25519.PublicKey {
	return ed25519.PrivateKey(tl.key(t)).Public().(ed25519.PublicKey)
}

func TestShipper_ShipsCompleteDays(t *testing.T) {
	tl := fixture(t)
	fs := startFakeS3(t, "audit", "soc2/prod")
	s := newShipper(t, tl, fs.bucket, t.TempDir())
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("shipped %d days, want 3: %+v", len(res), res)
	}
	want := []struct {
		day         string
		first, last uint64
		records     uint64
	}{{"2026-11-28", 1, 30, 30}, {"2026-11-29", 31, 30, 0}, {"2026-11-30", 31, 55, 25}}
	for i, w := range want {
		r := res[i]
		if r.Day != w.day || r.FirstSeq != w.first || r.LastSeq != w.last || r.Records != w.records {
			t.Errorf("day %d: got %+v, want %+v", i, r, w)
		}
		if w.records > 0 && r.Files < 2 {
			t.Errorf("%s: %d files, want several (PartBytes 2048)", w.day, r.Files)
		}
		rep, err := Verify(ctx, fs.bucket, "node-a", day(t, w.day), pubOf(t, tl))
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || rep.Records != w.records || len(rep.Extra) != 0 {
			t.Errorf("verify %s: %+v", w.day, rep)
		}
	}
	// The layout: <prefix>/<node>/<day>/{records-NNNN.jsonl.gz, manifest.sig, manifest.json}.
	names, err := fs.bucket.files(ctx, "node-a/2026-11-28/")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != res[0].Files+2 || names[0] != "manifest.json" || names[1] != "manifest.sig" || names[2] != "records-0001.jsonl.gz" {
		t.Errorf("objects of 2026-11-28: %v", names)
	}
	// Each record file is an `audit export`: it verifies on its own.
	gz, err := fs.bucket.get(ctx, "node-a/2026-11-28/records-0002.jsonl.gz", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if c := checkFile(gz, pubOf(t, tl)); c.err != "" || c.first <= 1 {
		t.Errorf("record file 2 alone: %+v", c)
	}
	// Stage dir is empty once everything is read back.
	if ents, _ := os.ReadDir(s.stageDir()); len(ents) != 1 || ents[0].Name() != "lock" {
		t.Errorf("stage dir left: %v", ents)
	}
}

func TestShipper_RerunShipsNothing(t *testing.T) {
	tl := fixture(t)
	fs := startFakeS3(t, "audit", "")
	stage := t.TempDir()
	if _, err := newShipper(t, tl, fs.bucket, stage).Run(ctx); err != nil {
		t.Fatal(err)
	}
	puts := fs.faults.all.Load()
	// Records of today arrive; today is not complete, so nothing ships.
	tl.add(t, day(t, "2026-12-01"), 7)
	tl.clk.set(day(t, "2026-12-01").Add(23*time.Hour + 59*time.Minute))
	res, err := newShipper(t, tl, fs.bucket, stage).Run(ctx)
	if err != nil || len(res) != 0 {
		t.Fatalf("re-run: %+v, %v; want nothing shipped", res, err)
	}
	if n := fs.faults.all.Load(); n != puts {
		t.Fatalf("re-run sent %d PUTs, want 0", n-puts)
	}
	// Next day: exactly 2026-12-01 ships, continuing the chain.
	tl.clk.set(day(t, "2026-12-02").Add(time.Minute))
	res, err = newShipper(t, tl, fs.bucket, stage).Run(ctx)
	if err != nil || len(res) != 1 || res[0].Day != "2026-12-01" || res[0].FirstSeq != 56 || res[0].LastSeq != 62 {
		t.Fatalf("next day: %+v, %v", res, err)
	}
	rep, err := Verify(ctx, fs.bucket, "node-a", day(t, "2026-12-01"), pubOf(t, tl))
	if err != nil || !rep.OK {
		t.Fatalf("verify 2026-12-01: %+v, %v", rep, err)
	}
}

func TestShipper_ResumesInterruptedUpload(t *testing.T) {
	tl := fixture(t)
	fs := startFakeS3(t, "audit", "p")
	stage := t.TempDir()
	// The first run dies in the middle of 2026-11-30's third file: the
	// connection drops half way through its body, every retry too.
	cutKey := "/audit/p/node-a/2026-11-30/records-0003.jsonl.gz"
	fs.faults.setCut(func(k string) bool { return k == cutKey })
	res, err := newShipper(t, tl, fs.bucket, stage).Run(ctx)
	if err == nil {
		t.Fatal("run with a cut connection succeeded")
	}
	if len(res) != 2 {
		t.Fatalf("days shipped before the failure: %+v, want 2", res)
	}
	staged, err := os.ReadFile(filepath.Join(newShipper(t, tl, fs.bucket, stage).stageDir(), "2026-11-30", manifestName))
	if err != nil {
		t.Fatalf("the interrupted day is not staged: %v", err)
	}
	if _, err := fs.bucket.get(ctx, "node-a/2026-11-30/"+manifestName, 1<<20); !errors.Is(err, errNotFound) {
		t.Fatalf("manifest of the interrupted day in the bucket: %v", err)
	}
	if _, err := Verify(ctx, fs.bucket, "node-a", day(t, "2026-11-30"), pubOf(t, tl)); err != nil {
		t.Fatal(err)
	}

	// A new process (new Shipper) resumes: files 1 and 2 are not sent
	// again, file 3 onwards are, the manifest last, with the staged bytes.
	fs.faults.setCut(nil)
	res, err = newShipper(t, tl, fs.bucket, stage).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Day != "2026-11-30" || res[0].Reused != 2 || res[0].Uploaded != res[0].Files-2+2 {
		t.Fatalf("resumed run: %+v, want 2026-11-30 with files 1-2 reused", res)
	}
	for _, k := range []string{"records-0001.jsonl.gz", "records-0002.jsonl.gz"} {
		if n := fs.faults.putCount("/audit/p/node-a/2026-11-30/" + k); n != 1 {
			t.Errorf("%s put %d times, want 1", k, n)
		}
	}
	got, err := fs.bucket.get(ctx, "node-a/2026-11-30/"+manifestName, 1<<20)
	if err != nil || !bytes.Equal(got, staged) {
		t.Fatalf("shipped manifest differs from the staged one: %v", err)
	}
	rep, err := Verify(ctx, fs.bucket, "node-a", day(t, "2026-11-30"), pubOf(t, tl))
	if err != nil || !rep.OK {
		t.Fatalf("verify after resume: %+v, %v", rep, err)
	}
}

func TestShipper_ManifestLastAndBusy(t *testing.T) {
	tl := fixture(t)
	fs := startFakeS3(t, "audit", "")
	stage := t.TempDir()
	// Only the manifest upload fails: the day is not shipped (no
	// manifest), and the next run puts only the manifest.
	fs.faults.setCut(func(k string) bool { return strings.HasSuffix(k, "2026-11-28/"+manifestName) })
	if _, err := newShipper(t, tl, fs.bucket, stage).Run(ctx); err == nil {
		t.Fatal("want an error")
	}
	fs.faults.setCut(nil)

	// A second shipper on the same stage dir while one runs: ErrBusy.
	unlock, err := lockDir(newShipper(t, tl, fs.bucket, stage).stageDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newShipper(t, tl, fs.bucket, stage).Run(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("concurrent run: %v, want ErrBusy", err)
	}
	unlock()

	res, err := newShipper(t, tl, fs.bucket, stage).Run(ctx)
	if err != nil || len(res) != 3 || res[0].Uploaded != 1 || res[0].Reused != res[0].Files+1 {
		t.Fatalf("resume: %+v, %v; want the first day's manifest alone uploaded", res, err)
	}
}

// tampered ships the fixture and returns the bucket to damage.
func tampered(t *testing.T) (*testLedger, *fakeS3) {
	t.Helper()
	tl := fixture(t)
	fs := startFakeS3(t, "audit", "x")
	if _, err := newShipper(t, tl, fs.bucket, t.TempDir()).Run(ctx); err != nil {
		t.Fatal(err)
	}
	return tl, fs
}

func gunzip(t *testing.T, gz []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func manifestOf(t *testing.T, fs *fakeS3, d string) *Manifest {
	t.Helper()
	raw, err := fs.bucket.get(ctx, "node-a/"+d+"/"+manifestName, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestVerify_DetectsTampering(t *testing.T) {
	const d = "2026-11-30"
	rel := "node-a/" + d + "/"
	tests := []struct {
		name     string
		damage   func(t *testing.T, fs *fakeS3, m *Manifest)
		key      func(t *testing.T, tl *testLedger) ed25519.PublicKey
		file     string // the first bad object reported
		firstBad func(m *Manifest) uint64
		reason   string
	}{
		{name: "ChangedRecord", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			f := m.Files[1]
			data := gunzip(t, must(fs.bucket.get(ctx, rel+f.Name, 1<<20)))
			// Second record of the file: its cost rewritten.
			lines := bytes.SplitAfter(data, []byte("\n"))
			lines[1] = bytes.Replace(lines[1], []byte(`"cost_micros":10000`), []byte(`"cost_micros":1`), 1)
			fs.bucket.putBytes(ctx, rel+f.Name, gzipBytes(bytes.Join(lines, nil)), putOptions{})
		}, file: "records-0002.jsonl.gz", firstBad: func(m *Manifest) uint64 { return m.Files[1].FirstSeq + 1 }, reason: "changed"},
		{name: "MissingFile", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			del(t, fs, rel+m.Files[2].Name)
		}, file: "records-0003.jsonl.gz", firstBad: func(m *Manifest) uint64 { return m.Files[2].FirstSeq }, reason: "missing"},
		{name: "ReorderedFiles", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			a := must(fs.bucket.get(ctx, rel+m.Files[0].Name, 1<<20))
			b := must(fs.bucket.get(ctx, rel+m.Files[1].Name, 1<<20))
			fs.bucket.putBytes(ctx, rel+m.Files[0].Name, b, putOptions{})
			fs.bucket.putBytes(ctx, rel+m.Files[1].Name, a, putOptions{})
		}, file: "records-0001.jsonl.gz", firstBad: func(m *Manifest) uint64 { return m.Files[0].FirstSeq }, reason: "reordered"},
		{name: "ReorderedRecords", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			f := m.Files[0]
			data := gunzip(t, must(fs.bucket.get(ctx, rel+f.Name, 1<<20)))
			lines := bytes.SplitAfter(data, []byte("\n"))
			lines[1], lines[2] = lines[2], lines[1]
			fs.bucket.putBytes(ctx, rel+f.Name, gzipBytes(bytes.Join(lines, nil)), putOptions{})
		}, file: "records-0001.jsonl.gz", firstBad: func(m *Manifest) uint64 { return m.Files[0].FirstSeq + 1 }, reason: "changed"},
		{name: "MissingPreviousManifest", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			del(t, fs, "node-a/2026-11-29/"+manifestName)
		}, file: "2026-11-29/manifest.json", firstBad: func(m *Manifest) uint64 { return m.FirstSeq }, reason: "manifest chain broken"},
		{name: "ChangedPreviousManifest", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			raw := must(fs.bucket.get(ctx, "node-a/2026-11-29/"+manifestName, 1<<20))
			fs.bucket.putBytes(ctx, "node-a/2026-11-29/"+manifestName, bytes.Replace(raw, []byte(`"records": 0`), []byte(`"records": 00`), 1), putOptions{})
		}, file: "2026-11-29/manifest.json", firstBad: func(m *Manifest) uint64 { return m.FirstSeq }, reason: "changed"},
		{name: "ChangedManifest", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			raw := must(fs.bucket.get(ctx, rel+manifestName, 1<<20))
			fs.bucket.putBytes(ctx, rel+manifestName, bytes.Replace(raw, []byte(`"records": 25`), []byte(`"records": 24`), 1), putOptions{})
		}, file: manifestName, reason: "signature does not verify"},
		{name: "MissingSignature", damage: func(t *testing.T, fs *fakeS3, m *Manifest) {
			del(t, fs, rel+sigName)
		}, file: manifestName, reason: "manifest.sig missing"},
		{name: "WrongKey", key: func(t *testing.T, tl *testLedger) ed25519.PublicKey {
			pub, _, _ := ed25519.GenerateKey(nil)
			return pub
		}, file: manifestName, reason: "signature does not verify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl, fs := tampered(t)
			m := manifestOf(t, fs, d)
			if tc.damage != nil {
				tc.damage(t, fs, m)
			}
			pub := pubOf(t, tl)
			if tc.key != nil {
				pub = tc.key(t, tl)
			}
			rep, err := Verify(ctx, fs.bucket, "node-a", day(t, d), pub)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK {
				t.Fatalf("damage not detected: %+v", rep)
			}
			t.Logf("reported: file %s, first bad seq %d: %s", rep.File, rep.FirstBadSeq, rep.Reason)
			if rep.File != tc.file || !strings.Contains(rep.Reason, tc.reason) {
				t.Errorf("got file %q reason %q, want file %q and a reason containing %q", rep.File, rep.Reason, tc.file, tc.reason)
			}
			if tc.firstBad != nil && rep.FirstBadSeq != tc.firstBad(m) {
				t.Errorf("first bad seq %d, want %d (%s)", rep.FirstBadSeq, tc.firstBad(m), rep.Reason)
			}
			// The days before are still fine where untouched.
			if rep0, err := Verify(ctx, fs.bucket, "node-a", day(t, "2026-11-28"), pubOf(t, tl)); err != nil || !rep0.OK {
				t.Errorf("untouched day 2026-11-28: %+v, %v", rep0, err)
			}
		})
	}
	t.Run("NotShipped", func(t *testing.T) {
		tl, fs := tampered(t)
		rep, err := Verify(ctx, fs.bucket, "node-a", day(t, "2026-12-05"), pubOf(t, tl))
		if err != nil || rep.OK || rep.File != manifestName || !strings.Contains(rep.Reason, "not shipped") {
			t.Fatalf("got %+v, %v", rep, err)
		}
	})
	t.Run("ShipperRefusesATamperedChain", func(t *testing.T) {
		tl, fs := tampered(t)
		raw := must(fs.bucket.get(ctx, rel+manifestName, 1<<20))
		fs.bucket.putBytes(ctx, rel+manifestName, append(raw, ' '), putOptions{})
		tl.clk.set(day(t, "2026-12-02").Add(time.Hour))
		if _, err := newShipper(t, tl, fs.bucket, t.TempDir()).Run(ctx); err == nil || !strings.Contains(err.Error(), "refusing to extend the chain") {
			t.Fatalf("shipping after a changed manifest: %v", err)
		}
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func del(t *testing.T, fs *fakeS3, rel string) {
	t.Helper()
	_, err := fs.bucket.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &fs.bucket.loc.Bucket, Key: aws.String(fs.bucket.key(rel))})
	if err != nil {
		t.Fatal(err)
	}
}

func TestShipper_RetentionHeaders(t *testing.T) {
	tl := fixture(t)
	fs := startFakeS3(t, "audit", "")
	s := newShipper(t, tl, fs.bucket, t.TempDir(), func(c *Config) { c.Retain = 400 * 24 * time.Hour })
	if _, err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	want := tl.clk.now().Add(400 * 24 * time.Hour).UTC().Truncate(time.Second)
	for _, k := range []string{"records-0001.jsonl.gz", sigName, manifestName} {
		o, ok, err := fs.bucket.head(ctx, "node-a/2026-11-28/"+k)
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", k, ok, err)
		}
		if o.lockMode != "COMPLIANCE" || !o.retainUntil.Equal(want) {
			t.Errorf("%s: lock %q until %v, want COMPLIANCE until %v", k, o.lockMode, o.retainUntil, want)
		}
	}
}

func TestParseLocation(t *testing.T) {
	tests := []struct {
		in      string
		want    Location
		wantErr bool
	}{
		{in: "s3://b", want: Location{Bucket: "b"}},
		{in: "s3://b/", want: Location{Bucket: "b"}},
		{in: "s3://b/a/c/", want: Location{Bucket: "b", Prefix: "a/c/"}},
		{in: "https://b/a", wantErr: true},
		{in: "s3:///a", wantErr: true},
		{in: "s3://user:pw@b/a", wantErr: true},
		{in: "b/a", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseLocation(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestShipper_ClockSteppedBack: a record stamped before midnight but
// appended after one of the next day stays in the chain: days are cut by
// seq, so every record is shipped exactly once and each day verifies.
func TestShipper_ClockSteppedBack(t *testing.T) {
	tl := openLedger(t, 3)
	d1, d2 := day(t, "2026-11-28"), day(t, "2026-11-29")
	stamps := []time.Time{
		d1.Add(10 * time.Hour), d1.Add(11 * time.Hour), d1.Add(24*time.Hour - time.Second), // 1-3
		d2.Add(time.Second),                      // 4
		d1.Add(24*time.Hour - 2*time.Second),     // 5: the clock stepped back
		d2.Add(time.Hour), d2.Add(2 * time.Hour), // 6-7
	}
	for _, at := range stamps {
		tl.clk.set(at)
		if err := tl.l.Append(&ledger.Record{Type: ledger.TypeCall, Tool: "t", Outcome: ledger.OutcomeAllowed}).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	tl.clk.set(day(t, "2026-11-30").Add(time.Hour))
	fs := startFakeS3(t, "audit", "")
	res, err := newShipper(t, tl, fs.bucket, t.TempDir()).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].FirstSeq != 1 || res[0].LastSeq != 5 || res[1].FirstSeq != 6 || res[1].LastSeq != 7 {
		t.Fatalf("days: %+v, want 1..5 (record 4 of the next day rides along) and 6..7", res)
	}
	for _, d := range []time.Time{d1, d2} {
		if rep, err := Verify(ctx, fs.bucket, "node-a", d, pubOf(t, tl)); err != nil || !rep.OK {
			t.Errorf("verify %v: %+v, %v", d, rep, err)
		}
	}
}

// TestShipper_From: with --from, shipping starts at the first day from
// then that has records, and its manifest starts the chain mid-ledger.
func TestShipper_From(t *testing.T) {
	tl := fixture(t)
	fs := startFakeS3(t, "audit", "")
	s := newShipper(t, tl, fs.bucket, t.TempDir(), func(c *Config) { c.From = day(t, "2026-11-29") })
	res, err := s.Run(ctx)
	if err != nil || len(res) != 1 || res[0].Day != "2026-11-30" || res[0].FirstSeq != 31 {
		t.Fatalf("from 2026-11-29: %+v, %v; want only 2026-11-30 from record 31", res, err)
	}
	rep, err := Verify(ctx, fs.bucket, "node-a", day(t, "2026-11-30"), pubOf(t, tl))
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	tl.add(t, day(t, "2026-12-01"), 3)
	tl.clk.set(day(t, "2026-12-02").Add(time.Hour))
	res, err = newShipper(t, tl, fs.bucket, t.TempDir()).Run(ctx)
	if err != nil || len(res) != 1 || res[0].FirstSeq != 56 {
		t.Fatalf("next day: %+v, %v", res, err)
	}
}

// TestShipper_TwoNodes: nodes ship side by side under one prefix, each
// its own chain.
func TestShipper_TwoNodes(t *testing.T) {
	a, b := fixture(t), fixture(t)
	fs := startFakeS3(t, "audit", "fleet")
	for node, tl := range map[string]*testLedger{"gw-1": a, "gw-2": b} {
		s := newShipper(t, tl, fs.bucket, t.TempDir(), func(c *Config) { c.Node = node })
		if res, err := s.Run(ctx); err != nil || len(res) != 3 {
			t.Fatalf("%s: %+v, %v", node, res, err)
		}
	}
	nodes, err := Nodes(ctx, fs.bucket)
	if err != nil || len(nodes) != 2 || nodes[0] != "gw-1" || nodes[1] != "gw-2" {
		t.Fatalf("nodes %v, %v", nodes, err)
	}
	if rep, err := Verify(ctx, fs.bucket, "gw-2", day(t, "2026-11-30"), pubOf(t, b)); err != nil || !rep.OK {
		t.Fatalf("gw-2 with its key: %+v, %v", rep, err)
	}
	if rep, err := Verify(ctx, fs.bucket, "gw-2", day(t, "2026-11-30"), pubOf(t, a)); err != nil || rep.OK {
		t.Fatalf("gw-2 with gw-1's key: %+v, %v; want a signature failure", rep, err)
	}
}

// TestVerify_LocalCopy verifies a day from a local copy of the prefix
// (as aws s3 sync makes it), with no access to the bucket.
func TestVerify_LocalCopy(t *testing.T) {
	tl, fs := tampered(t) // shipped, not damaged
	copyDir := t.TempDir()
	p := s3.NewListObjectsV2Paginator(fs.bucket.c, &s3.ListObjectsV2Input{Bucket: aws.String("audit"), Prefix: aws.String("x/")})
	n := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			rel := strings.TrimPrefix(aws.ToString(o.Key), "x/")
			data := must(fs.bucket.get(ctx, rel, 1<<20))
			dst := filepath.Join(copyDir, filepath.FromSlash(rel))
			os.MkdirAll(filepath.Dir(dst), 0o700)
			if err := os.WriteFile(dst, data, 0o600); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("nothing copied")
	}
	local := Dir(copyDir)
	if nodes, err := Nodes(ctx, local); err != nil || len(nodes) != 1 || nodes[0] != "node-a" {
		t.Fatalf("nodes of the copy: %v, %v", nodes, err)
	}
	for _, d := range []string{"2026-11-28", "2026-11-29", "2026-11-30"} {
		if rep, err := Verify(ctx, local, "node-a", day(t, d), pubOf(t, tl)); err != nil || !rep.OK {
			t.Fatalf("copy of %s: %+v, %v", d, rep, err)
		}
	}
	if err := os.Remove(filepath.Join(copyDir, "node-a", "2026-11-29", manifestName)); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, local, "node-a", day(t, "2026-11-30"), pubOf(t, tl))
	if err != nil || rep.OK || rep.File != "2026-11-29/manifest.json" {
		t.Fatalf("copy without the previous manifest: %+v, %v", rep, err)
	}
	if _, err := Verify(ctx, local, "../etc", day(t, "2026-11-30"), pubOf(t, tl)); err == nil {
		t.Fatal("a node name leaving the copy was accepted")
	}
}
