package gateway_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// downQuotas is a shared quota store that cannot be reached.
type downQuotas struct{ admits atomic.Int32 }

var errDown = errors.New("redis: connection refused")

func (d *downQuotas) Admit(_ string, _, limit int, _ time.Time, _ uint64) meter.QuotaResult {
	d.admits.Add(1)
	return meter.QuotaResult{Limit: limit, Err: errDown}
}
func (*downQuotas) Undo(string, int, uint64)                              {}
func (*downQuotas) Peek(string, int, int, time.Time) (int, time.Duration) { return 0, 0 }
func (*downQuotas) Sweep(time.Time) int                                   { return 0 }

// downSpend is a shared spend store that cannot be reached: Reserve
// fails; the rest is the local store.
type downSpend struct{ *meter.Spend }

func (downSpend) Reserve(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool) (meter.Reservation, meter.SpendResult) {
	return meter.Reservation{}, meter.SpendResult{Limit: limit, Err: errDown}
}

// TestGateway_SharedStoreDown: when the shared state cannot decide, a
// strict principal is refused with 503 and an open one is counted by the
// node alone (its full limit); a priced call is refused in either mode,
// nothing charged.
func TestGateway_SharedStoreDown(t *testing.T) {
	const unavailable = `{"error":"shared state unavailable; nothing was charged"}`
	t.Run("QuotaStrict", func(t *testing.T) {
		up := newUpstream(t)
		h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { o.Quotas = &downQuotas{} })
		k := h.createKey(`{"policy":{"mode":"strict","allow_tools":["time/now"]}}`)
		resp, b := h.call(k.Secret, "time/now", `{}`)
		if resp.StatusCode != 503 {
			t.Fatalf("got %d %s, want 503", resp.StatusCode, b)
		}
		wantJSON(t, b, unavailable)
		if up.hits.Load() != 0 {
			t.Fatalf("upstream hits: got %d, want 0", up.hits.Load())
		}
	})
	t.Run("QuotaOpenFallsBackToLocal", func(t *testing.T) {
		up := newUpstream(t)
		dq := &downQuotas{}
		h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { o.Quotas = dq })
		k := h.createKey(`{"policy":{"rate_class_quota":{"light":2}}}`)
		for i, want := range []int{200, 200, 403} {
			if resp, b := h.call(k.Secret, "time/now", `{}`); resp.StatusCode != want {
				t.Fatalf("call %d: got %d %s, want %d", i+1, resp.StatusCode, b, want)
			}
		}
		if dq.admits.Load() != 3 {
			t.Fatalf("shared store asked %d times, want 3 (every call tries it first)", dq.admits.Load())
		}
	})
	t.Run("SpendRefusedInEitherMode", func(t *testing.T) {
		up := newUpstream(t)
		h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) { o.Spend = downSpend{meter.NewSpend()} })
		k := h.createKey(`{}`)
		resp, b := h.call(k.Secret, "extract/structured", `{}`)
		if resp.StatusCode != 503 {
			t.Fatalf("got %d %s, want 503", resp.StatusCode, b)
		}
		wantJSON(t, b, unavailable)
		if up.hits.Load() != 0 {
			t.Fatalf("upstream hits: got %d, want 0", up.hits.Load())
		}
		// Its quota slot went back: a free call still passes.
		if resp, b := h.call(k.Secret, "time/now", `{}`); resp.StatusCode != 200 {
			t.Fatalf("free call: got %d %s, want 200", resp.StatusCode, b)
		}
	})
}
