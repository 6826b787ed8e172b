package gateway_test

import (
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/gateway/storetest"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/x402"
)

// The local implementations against the contract suites.

func openDB(t *testing.T) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestQuotaContract(t *testing.T) {
	storetest.QuotaContract(t, func(t *testing.T) gateway.QuotaStore { return meter.NewQuotas(0) })
}

func TestSpendContract(t *testing.T) {
	storetest.SpendContract(t, func(t *testing.T) gateway.SpendStore { return meter.NewSpend() })
}

func TestNonceContract(t *testing.T) {
	storetest.NonceContract(t, func(t *testing.T, now func() time.Time) gateway.NonceStore {
		l := x402.NewNonceLock(openDB(t))
		l.Now = now
		return l
	})
}

func TestKeyContract(t *testing.T) {
	storetest.KeyContract(t, func(t *testing.T) gateway.KeyStore {
		s, err := identity.Open(openDB(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestOverrideContract(t *testing.T) {
	storetest.OverrideContract(t, func(t *testing.T) gateway.OverrideStore { return policy.NewOverrides(openDB(t)) })
}

// TestGateway_OverrideSync: an override written to the store by another
// writer reaches the gateway's compiled state through the change feed.
func TestGateway_OverrideSync(t *testing.T) {
	var store *policy.Overrides
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		store = policy.NewOverrides(o.DB)
		o.Overrides = store
		o.OverrideSync = 5 * time.Millisecond
	})
	k := h.createKey(`{}`)
	if resp, b := h.call(k.Secret, "time/now", `{}`); resp.StatusCode != 200 {
		t.Fatalf("before: got %d %s, want 200", resp.StatusCode, b)
	}
	// waitStatus calls time/now until it answers want, or fails after 5 s.
	waitStatus := func(want int) []byte {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, b := h.call(k.Secret, "time/now", `{}`)
			if resp.StatusCode == want {
				return b
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, b, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	p, err := policy.DecodePolicy([]byte(`{"deny_tools":["time/now"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put("key:"+k.KeyID, p); err != nil {
		t.Fatal(err)
	}
	b := waitStatus(403)
	wantJSON(t, b, `{"error":"Tool access denied by policy","tool":"time/now","reason":"deny_tools"}`)
	if err := store.Delete("key:" + k.KeyID); err != nil {
		t.Fatal(err)
	}
	waitStatus(200)
}

func TestApprovalContract(t *testing.T) {
	storetest.ApprovalContract(t, func(t *testing.T) gateway.ApprovalStore { return gateway.NewLocalApprovals(openDB(t)) })
}
