package oauth

import (
	"sync"
	"time"
)

// tokenCache holds verified tokens by the SHA-256 of their bytes until
// they expire, at most max of them. A hit takes a read lock and a map
// lookup and does not allocate.
type tokenCache struct {
	mu  sync.RWMutex
	m   map[[32]byte]*Token
	max int
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{m: make(map[[32]byte]*Token, min(max, 1024)), max: max}
}

func (c *tokenCache) get(h *[32]byte, now time.Time) *Token {
	c.mu.RLock()
	t := c.m[*h]
	c.mu.RUnlock()
	if t == nil || !now.Before(t.Expires) {
		return nil
	}
	return t
}

// put keeps t. When full it first drops the expired tokens, then, if
// still full, an arbitrary eighth of them (map order).
func (c *tokenCache) put(h *[32]byte, t *Token, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, v := range c.m {
			if !now.Before(v.Expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max-c.max/8 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[*h] = t
}

// Len is the number of tokens cached.
func (c *tokenCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// CacheLen reports how many verified tokens the Verifier holds.
func (v *Verifier) CacheLen() int { return v.cache.Len() }
