package gateway

import (
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestToolCounters_Concurrent: the cached children count into the same
// series as WithLabelValues, from many goroutines at once, for pairs
// added while others are read.
func TestToolCounters_Concurrent(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "calls_total"}, []string{"tool", "outcome", "reason"})
	billed := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "billed_total"}, []string{"tool"})
	tc := newToolCounters(&metrics{calls: vec, billedMicro: billed}, "t/x")
	const workers, each, pairs = 8, 500, 5
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				tc.get("denied", fmt.Sprintf("r%d", i%pairs)).Inc()
				tc.get("allowed", "").Inc()
			}
		}()
	}
	wg.Wait()
	if got := counterValue(vec.WithLabelValues("t/x", "allowed", "")); got != workers*each {
		t.Errorf("allowed: got %v, want %d", got, workers*each)
	}
	for p := 0; p < pairs; p++ {
		if got := counterValue(vec.WithLabelValues("t/x", "denied", fmt.Sprintf("r%d", p))); got != workers*each/pairs {
			t.Errorf("denied r%d: got %v, want %d", p, got, workers*each/pairs)
		}
	}
	if got := len(*tc.pairs.Load()); got != pairs+1 {
		t.Errorf("cached pairs: got %d, want %d", got, pairs+1)
	}
}

// counterValue reads c through a registry (Gather), without importing the
// exposition types.
func counterValue(c prometheus.Counter) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		panic(fmt.Sprint("gather: ", err))
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}
