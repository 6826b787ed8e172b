//go:build !race

package oauth_test

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate/oauth/oauthtest"
)

// TestVerify_CachedZeroAlloc: a cached token costs no allocation.
func TestVerify_CachedZeroAlloc(t *testing.T) {
	p := oauthtest.Start(t)
	v := newVerifier(t, p, "")
	now := time.Now()
	tok := []byte(p.Sign(t, p.Claims("alice", resource, "tools:research", now, time.Hour)))
	if _, err := v.Verify(tok, now); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := v.Verify(tok, now); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("a cached token allocates %v times, want 0", n)
	}
}
