package ship

import (
	"io"
	"testing"
	"time"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/money"
)

const benchRecords = 20000

// benchLedger holds benchRecords call records on 2026-11-28.
func benchLedger(b *testing.B) *testLedger {
	b.Helper()
	tl := openLedgerTB(b, 1000)
	d := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	const batch = 100
	for i := 0; i < benchRecords; i += batch {
		recs := make([]*ledger.Record, batch)
		for j := range recs {
			tl.clk.set(d.Add(time.Duration(i+j+1) * 4 * time.Second))
			recs[j] = &ledger.Record{Type: ledger.TypeCall, RequestID: "bench-request-id", Principal: "key:k1",
				Tier: "api_key", Tool: "extract/structured", RateClass: "light", Outcome: ledger.OutcomeAllowed,
				Status: 200, Cost: money.Micros(10000), LatencyUS: 120, UpstreamStatus: 200, UpstreamLatencyUS: 90}
		}
		if err := tl.l.Append(recs...).Wait(); err != nil {
			b.Fatal(err)
		}
	}
	tl.clk.set(d.AddDate(0, 0, 1).Add(time.Hour))
	// Let the applier catch up and the caches warm before timing.
	if err := tl.l.Export(io.Discard, d, d.AddDate(0, 0, 1)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	return tl
}

// BenchmarkShipper_Day ships one day of benchRecords records to gofakes3
// on loopback (export, gzip, verify, sign, upload, read back), paired
// with BenchmarkShipper_ExportBaseline, the bare `audit export` of the
// same day: the ratio is what shipping costs over exporting.
func BenchmarkShipper_Day(b *testing.B) {
	tl := benchLedger(b)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fs := startFakeS3(b, "audit", "")
		s := newShipperTB(b, tl, fs.bucket, b.TempDir())
		b.StartTimer()
		res, err := s.Run(ctx)
		if err != nil || len(res) != 1 || res[0].Records != benchRecords {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(benchRecords*b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkShipper_ExportBaseline(b *testing.B) {
	tl := benchLedger(b)
	d := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	for i := 0; i < b.N; i++ {
		if err := tl.l.Export(io.Discard, d, d.AddDate(0, 0, 1)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchRecords*b.N)/b.Elapsed().Seconds(), "records/s")
}
