package ship

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts a Shipper's work as Prometheus series and keeps the
// state /readyz shows. Its methods are safe for concurrent use; a nil
// *Metrics counts nothing.
type Metrics struct {
	runs        *prometheus.CounterVec // result: ok, error
	days        prometheus.Counter
	objects     prometheus.Counter
	bytes       prometheus.Counter
	lastSuccess prometheus.Gauge
	through     prometheus.Gauge

	mu        sync.Mutex
	lastRun   time.Time
	lastOK    time.Time
	lastErr   error
	shippedTo string // newest day shipped (or found shipped)
}

// NewMetrics returns the series, to register with Collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_audit_ship_runs_total", Help: "Audit shipping runs by result (ok, error).",
		}, []string{"result"}),
		days: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "toolgate_audit_ship_days_total", Help: "UTC days whose records, manifest and signature were shipped and read back.",
		}),
		objects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "toolgate_audit_ship_objects_total", Help: "Objects uploaded (record files, signatures, manifests); objects found already uploaded are not counted.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "toolgate_audit_ship_bytes_total", Help: "Bytes uploaded by audit shipping.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "toolgate_audit_ship_last_success_timestamp_seconds", Help: "Unix time of the last audit shipping run that succeeded (0: none yet).",
		}),
		through: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "toolgate_audit_ship_shipped_through_timestamp_seconds", Help: "End (Unix time) of the newest UTC day shipped: alert when now minus this exceeds a day and the schedule.",
		}),
	}
}

// Collectors returns the series to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.runs, m.days, m.objects, m.bytes, m.lastSuccess, m.through}
}

func (m *Metrics) run(res []DayResult, err error, now time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastRun, m.lastErr = now, err
	m.days.Add(float64(len(res)))
	if err != nil {
		m.runs.WithLabelValues("error").Inc()
		return
	}
	m.runs.WithLabelValues("ok").Inc()
	m.lastOK = now
	m.lastSuccess.Set(float64(now.Unix()))
}

func (m *Metrics) shipped(day string) {
	if m == nil {
		return
	}
	d, err := time.Parse(dayLayout, day)
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if day > m.shippedTo {
		m.shippedTo = day
		m.through.Set(float64(d.AddDate(0, 0, 1).Unix()))
	}
}

func (m *Metrics) object(size int64) {
	if m == nil {
		return
	}
	m.objects.Inc()
	m.bytes.Add(float64(size))
}

// Status is the line /readyz shows: "ok: shipped through DAY, last run
// AT", "pending: no run finished yet", or "failing since … (see the
// log)" naming only the kind of failure. ok is false only after a
// failed run. The error's text is for the log, not for /readyz, which
// needs no credentials.
func (m *Metrics) Status() (text string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	through := m.shippedTo
	if through == "" {
		through = "none yet"
	}
	switch {
	case m.lastRun.IsZero():
		return "pending: no run finished yet", true
	case m.lastErr != nil:
		what := "failed"
		if errors.Is(m.lastErr, ErrBusy) {
			what = "busy: another process ships from the stage dir"
		}
		since := "never succeeded"
		if !m.lastOK.IsZero() {
			since = "last success " + m.lastOK.UTC().Format(time.RFC3339)
		}
		return fmt.Sprintf("failing: last run at %s %s (%s); shipped through %s; see the log",
			m.lastRun.UTC().Format(time.RFC3339), what, since, through), false
	}
	return fmt.Sprintf("ok: shipped through %s, last run %s", through, m.lastRun.UTC().Format(time.RFC3339)), true
}
