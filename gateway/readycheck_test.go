package gateway_test

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/gateway"
)

// TestReadyz_ReadyChecks: a check wired beside the gateway shows under
// /readyz checks, fails readiness only when it says so, and its
// collectors are served on /metrics.
func TestReadyz_ReadyChecks(t *testing.T) {
	var ok atomic.Bool
	ok.Store(true)
	side := prometheus.NewCounter(prometheus.CounterOpts{Name: "toolgate_side_work_total", Help: "test"})
	side.Add(3)
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.ReadyChecks = []gateway.ReadyCheck{{Name: "side", Status: func() (string, bool) {
			if ok.Load() {
				return "ok: fine", true
			}
			return "failing: see the log", false
		}}}
		o.Collectors = []prometheus.Collector{side}
	})
	check := func(wantCode int, wantText string) {
		t.Helper()
		resp, b := h.do("GET", "/readyz", "")
		var v struct {
			Checks map[string]string `json:"checks"`
		}
		json.Unmarshal(b, &v)
		if resp.StatusCode != wantCode || v.Checks["side"] != wantText {
			t.Fatalf("/readyz %d %s; want %d with side %q", resp.StatusCode, b, wantCode, wantText)
		}
	}
	check(200, "ok: fine")
	ok.Store(false)
	check(503, "failing: see the log")
	resp, b := h.do("GET", "/metrics", "", "Authorization", "Bearer "+adminToken)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "toolgate_side_work_total 3") {
		t.Fatalf("/metrics %d lacks the side series", resp.StatusCode)
	}
}
