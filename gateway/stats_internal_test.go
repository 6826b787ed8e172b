package gateway

import (
	"sync"
	"testing"
	"time"
)

// TestStatsBook_Concurrent: counts from many goroutines, with queries
// running beside them, add up exactly (run under -race).
func TestStatsBook_Concurrent(t *testing.T) {
	var book statsBook
	now := time.Now()
	m := now.Unix() / 60
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 500 {
				book.add(now.Add(-time.Duration(i%5)*time.Minute), "key:k_"+string(rune('A'+g)), "search/web", outAllowed, "", 10, 1)
			}
		}()
		go func() {
			defer wg.Done()
			for range 50 {
				book.query(m-10, m, 1, 5)
			}
		}()
	}
	wg.Wait()
	s := book.query(m-10, m, 1, 10)
	if s.Totals.Calls != 4000 || s.Totals.SpendUSD != 40000 || len(s.TopPrincipals.BySpend) != 8 {
		t.Fatalf("got %d calls, %d spend, %d principals, want 4000, 40000, 8", s.Totals.Calls, s.Totals.SpendUSD, len(s.TopPrincipals.BySpend))
	}
}

// TestStatsBook_Ring: a minute older than the ring is not counted, and a
// slot reused for a newer minute forgets the old one's counts.
func TestStatsBook_Ring(t *testing.T) {
	var book statsBook
	now := time.Unix(1_800_000_000, 0)
	m := now.Unix() / 60
	book.add(now.Add(-statsSpan-time.Minute), "key:k_old", "t", outAllowed, "", 0, 7) // the slot the current minute reuses
	book.add(now, "key:k_new", "t", outDenied, "deny_tools", 0, 1)
	book.add(now.Add(-statsSpan-time.Minute), "key:k_old", "t", outAllowed, "", 0, 1) // late: older than the ring
	s := book.query(m-int64(statsMinutes)+1, m, 1, 10)
	if s.Totals.Calls != 1 || s.Totals.ByOutcome[outDenied] != 1 {
		t.Fatalf("got %v, want only the newest minute's call", s.Totals.ByOutcome)
	}
	if s.Series.Points != statsMinutes {
		t.Fatalf("points: got %d, want %d", s.Series.Points, statsMinutes)
	}
}
