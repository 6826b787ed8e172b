package meter

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	hourRule = WindowRule{Key: 1, Per: time.Hour, Limit: 100}
	dayRule  = WindowRule{Key: 2, Per: 24 * time.Hour, Limit: 500}
)

func TestWindows_Admit(t *testing.T) {
	ws := NewWindows()
	t0 := time.Unix(1_800_000_000, 0)
	rules := []WindowRule{{Key: 1, Per: time.Hour, Limit: 2}, {Key: 2, Per: 24 * time.Hour, Limit: 3}}
	for i := 0; i < 2; i++ {
		if r := ws.Admit("p", rules, t0.Add(time.Duration(i)*time.Minute)); !r.OK {
			t.Fatalf("call %d refused", i)
		}
	}
	r := ws.Admit("p", rules, t0.Add(10*time.Minute))
	if r.OK || r.Rule != 0 || r.Used != 2 || r.ResetIn != 50*time.Minute {
		t.Fatalf("3rd call: got %+v, want refused by rule 0, used 2, reset 50m", r)
	}
	// The hour passes for the first call: the day window (3) now refuses
	// the 4th.
	if r := ws.Admit("p", rules, t0.Add(time.Hour)); !r.OK {
		t.Fatalf("after an hour: %+v", r)
	}
	r = ws.Admit("p", rules, t0.Add(2*time.Hour))
	if r.OK || r.Rule != 1 || r.Used != 3 || r.ResetIn != 22*time.Hour {
		t.Fatalf("4th call: got %+v, want refused by the day window, reset 22h", r)
	}
	// Undo gives the place back in every rule.
	ok := ws.Admit("q", rules, t0)
	ws.Undo("q", rules, ok.At)
	if used, _ := ws.Peek("q", rules[1], t0); used != 0 {
		t.Fatalf("after Undo: used %d", used)
	}
	// Blocked.
	if r := ws.Admit("z", []WindowRule{{Key: 9, Per: time.Hour, Limit: 0}}, t0); r.OK || r.ResetIn != 0 {
		t.Fatalf("limit 0: %+v", r)
	}
}

func TestWindows_Concurrent(t *testing.T) {
	ws := NewWindows()
	t0 := time.Unix(1_800_000_000, 0)
	rules := []WindowRule{{Key: 1, Per: time.Hour, Limit: 50}}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if ws.Admit("p", rules, t0.Add(time.Duration(i)*time.Millisecond)).OK {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := admitted.Load(); n != 50 {
		t.Fatalf("admitted %d, want exactly 50", n)
	}
}

// TestWindows_Memory measures the memory of 100 000 active principals,
// each with 3 calls in an hour window and a day window, and checks that
// Sweep gives it back once the windows have passed.
func TestWindows_Memory(t *testing.T) {
	if testing.Short() {
		t.Skip("memory measurement")
	}
	const principals = 100_000
	names := make([]string, principals)
	for i := range names {
		names[i] = fmt.Sprintf("key:k_%010d", i)
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	ws := NewWindows()
	t0 := time.Unix(1_800_000_000, 0)
	rules := []WindowRule{hourRule, dayRule}
	for c := 0; c < 3; c++ {
		for _, p := range names {
			if !ws.Admit(p, rules, t0.Add(time.Duration(c)*time.Second)).OK {
				t.Fatal("refused")
			}
		}
	}
	after := heap()
	per := float64(after-before) / principals
	t.Logf("100000 principals × 2 windows × 3 calls: %d bytes (%.0f bytes a principal)", after-before, per)
	if per > 400 {
		t.Fatalf("%.0f bytes a principal, want at most 400", per)
	}
	if n := ws.Sweep(t0.Add(25 * time.Hour)); n != principals {
		t.Fatalf("Sweep evicted %d, want %d", n, principals)
	}
	if ws.Len() != 0 {
		t.Fatalf("Len after Sweep: %d", ws.Len())
	}
	runtime.KeepAlive(ws)
	runtime.KeepAlive(names)
}

// BenchmarkWindows_Admit: one known principal, two windows.
func BenchmarkWindows_Admit(b *testing.B) {
	ws := NewWindows()
	rules := []WindowRule{{Key: 1, Per: time.Hour, Limit: 1 << 30}, {Key: 2, Per: 24 * time.Hour, Limit: 1 << 30}}
	t0 := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r := ws.Admit("key:k_1", rules, t0.Add(time.Duration(i)))
		ws.Undo("key:k_1", rules, r.At)
	}
}
