package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/x402"
)

// TestPaidPath_PhasesLine: a paid call's "paid call phases" debug line
// (what the paid-latency benchmark lines up with the client's and the
// facilitator's clocks) carries the wall-clock start and the stages'
// offsets in the order they ran: after_upstream verifies, calls the
// upstream, then settles; before_upstream settles before the upstream.
func TestPaidPath_PhasesLine(t *testing.T) {
	const settleTakes = 3 * time.Millisecond
	for _, tool := range settleModes {
		t.Run(tool, func(t *testing.T) {
			var logs syncBuffer
			settler := &fakeSettler{SettleFn: func(ctx context.Context, p *x402.Payment, o *x402.Offer) (x402.SettleResult, error) {
				time.Sleep(settleTakes) // a settlement that takes measurable time
				return x402.SettleResult{Success: true, Transaction: "0x01", Network: o.Network(p.Version), Payer: p.Authorization.From.Hex()}, nil
			}}
			e := newPaidEnv(t, settler, func(o *gateway.Options) {
				o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			p := e.sign(tool, false)
			before := time.Now().UnixMicro()
			resp, b := e.callPaid(tool, "", p.hdr)
			after := time.Now().UnixMicro()
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, b)
			}
			var line map[string]any
			sc := bufio.NewScanner(strings.NewReader(logs.String()))
			for sc.Scan() {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "paid call phases" {
					line = m
				}
			}
			if line == nil {
				t.Fatalf("no paid call phases line in:\n%s", logs.String())
			}
			f := func(k string) int64 {
				v, ok := line[k].(float64)
				if !ok {
					t.Fatalf("field %s missing or not a number: %v", k, line)
				}
				return int64(v)
			}
			start, total := f("start_unix_us"), f("total_us")
			if start < before || start+total > after {
				t.Errorf("start %d + total %d µs outside the call [%d, %d]", start, total, before, after)
			}
			ident, decided := f("identified_at_us"), f("decided_at_us")
			verifyAt, verify := f("verify_at_us"), f("verify_us")
			upAt, up := f("upstream_at_us"), f("upstream_us")
			settleAt, settle := f("settle_at_us"), f("settle_us")
			if settle < settleTakes.Microseconds() {
				t.Errorf("settle_us %d, want at least %d", settle, settleTakes.Microseconds())
			}
			if ident > decided {
				t.Errorf("identified at %d after decided at %d", ident, decided)
			}
			switch tool {
			case "after":
				if decided > verifyAt || verifyAt+verify > upAt || upAt+up > settleAt || settleAt+settle > total {
					t.Errorf("after_upstream: want decide ≤ verify ≤ upstream ≤ settle ≤ total, got %v", line)
				}
			case "before":
				if verify != 0 || decided > settleAt || settleAt+settle > upAt || upAt+up > total {
					t.Errorf("before_upstream: want no verification and decide ≤ settle ≤ upstream ≤ total, got %v", line)
				}
			}
		})
	}
}
