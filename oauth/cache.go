package oauth

import (
	"bytes"
	"hash/maphash"
	"sync"
	"time"
)

// tokenCache holds verified tokens until they expire, keyed by a 64-bit
// keyed hash of their bytes (maphash, with a seed of this process that no
// caller can know) and confirmed by comparing the bytes themselves, so
// that a hash collision can only cost a miss. It holds at most maxTokens
// tokens and maxBytes token bytes. A hit takes a read lock, a hash of the
// token and a comparison, and does not allocate.
type tokenCache struct {
	seed     maphash.Seed
	mu       sync.RWMutex
	m        map[uint64]*cached
	bytes    int
	maxN     int
	maxBytes int
}

type cached struct {
	raw []byte // the token, to compare
	tok *Token
}

// DefaultCacheBytes bounds the token bytes a Verifier keeps.
const DefaultCacheBytes = 64 << 20

func newTokenCache(maxN, maxBytes int) *tokenCache {
	return &tokenCache{seed: maphash.MakeSeed(), m: make(map[uint64]*cached, min(maxN, 1024)), maxN: maxN, maxBytes: maxBytes}
}

func (c *tokenCache) hash(tok []byte) uint64 { return maphash.Bytes(c.seed, tok) }

func (c *tokenCache) get(h uint64, tok []byte, now time.Time) *Token {
	c.mu.RLock()
	e := c.m[h]
	c.mu.RUnlock()
	if e == nil || !bytes.Equal(e.raw, tok) || !now.Before(e.tok.Expires) {
		return nil
	}
	return e.tok
}

// put keeps t. When full it first drops the expired tokens, then, if
// still full, an arbitrary eighth of them (map order).
func (c *tokenCache) put(h uint64, tok []byte, t *Token, now time.Time) {
	e := &cached{raw: bytes.Clone(tok), tok: t}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.maxN || c.bytes+len(tok) > c.maxBytes {
		for k, v := range c.m {
			if !now.Before(v.tok.Expires) {
				c.drop(k, v)
			}
		}
		for k, v := range c.m {
			if len(c.m) < c.maxN-c.maxN/8 && c.bytes+len(tok) <= c.maxBytes-c.maxBytes/8 {
				break
			}
			c.drop(k, v)
		}
	}
	if old := c.m[h]; old != nil {
		c.bytes -= len(old.raw)
	}
	c.m[h] = e
	c.bytes += len(e.raw)
}

func (c *tokenCache) drop(k uint64, v *cached) {
	delete(c.m, k)
	c.bytes -= len(v.raw)
}

// Len is the number of tokens cached.
func (c *tokenCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// CacheLen reports how many verified tokens the Verifier holds.
func (v *Verifier) CacheLen() int { return v.cache.Len() }
