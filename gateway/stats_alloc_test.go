//go:build !race

package gateway

import (
	"testing"
	"time"
)

// TestStats_AddZeroAlloc: counting a call allocates nothing once its
// minute, tool and principal are known (every call but the first of each
// in a minute or slice).
func TestStats_AddZeroAlloc(t *testing.T) {
	var book statsBook
	at := time.Now()
	book.add(at, "key:k_0001", "search/web", outDenied, "deny_tools", 0, 1)
	book.add(at, "key:k_0001", "search/web", outAllowed, "", 2000, 1)
	n := testing.AllocsPerRun(1000, func() {
		book.add(at, "key:k_0001", "search/web", outAllowed, "", 2000, 1)
		book.add(at, "key:k_0001", "search/web", outDenied, "deny_tools", 0, 1)
		book.addRevenue(at, 2000)
	})
	if n != 0 {
		t.Fatalf("stats add allocates %v times per call, want 0", n)
	}
}
