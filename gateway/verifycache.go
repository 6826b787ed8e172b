package gateway

import (
	"sync"
	"time"

	"github.com/toolgate/toolgate/x402"
)

// verifyCache keeps remote verification results per payment (by the
// SHA-256 of its header) until the authorization expires. It is bounded:
// when full, expired entries are dropped first, then arbitrary ones (a
// dropped entry costs one more backend call, never a wrong answer).
type verifyCache struct {
	mu  sync.Mutex
	m   map[[32]byte]verifyEntry
	max int
}

type verifyEntry struct {
	vr      x402.VerifyResult
	expires time.Time
}

const verifyCacheMax = 1 << 16

func (vc *verifyCache) get(k [32]byte, now time.Time) (x402.VerifyResult, bool) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	e, ok := vc.m[k]
	if !ok || !now.Before(e.expires) {
		return x402.VerifyResult{}, false
	}
	return e.vr, true
}

func (vc *verifyCache) put(k [32]byte, vr x402.VerifyResult, expires, now time.Time) {
	if !now.Before(expires) {
		return
	}
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.m == nil {
		vc.m = make(map[[32]byte]verifyEntry)
	}
	limit := vc.max
	if limit <= 0 {
		limit = verifyCacheMax
	}
	if len(vc.m) >= limit {
		for key, e := range vc.m {
			if !now.Before(e.expires) {
				delete(vc.m, key)
			}
		}
		for key := range vc.m {
			if len(vc.m) < limit {
				break
			}
			delete(vc.m, key)
		}
	}
	vc.m[k] = verifyEntry{vr: vr, expires: expires}
}
