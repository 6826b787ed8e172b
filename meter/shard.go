package meter

import (
	"hash/maphash"
	"sync"
)

// numShards is the number of independently locked partitions of a
// shardedMap. A power of two so the shard index is a mask.
const numShards = 64

// shardedMap is a map from K to V split over numShards partitions, each
// with its own mutex, so that unrelated keys do not contend. It is the one
// table behind Quotas and Spend.
//
// The map does not lock for its caller: lock returns the key's shard
// locked, the caller reads and writes that shard's entries with get, put
// and del, and unlocks it. Values are usually pointers whose own state is
// guarded by the shard lock (Quotas) or by a lock of their own (Spend).
// Finding a key's shard hashes it with maphash.Comparable, which does not
// allocate. The zero value is not usable; use newShardedMap.
type shardedMap[K comparable, V any] struct {
	seed   maphash.Seed
	shards [numShards]shard[K, V]
}

// shard is one partition of a shardedMap, guarded by mu.
type shard[K comparable, V any] struct {
	mu   sync.Mutex
	m    map[K]V
	peak int      // largest len(m) since the map was last rebuilt
	_    [40]byte // a shard per cache line
}

func newShardedMap[K comparable, V any]() *shardedMap[K, V] {
	return &shardedMap[K, V]{seed: maphash.MakeSeed()}
}

// shardOf returns k's shard, not locked.
func (sm *shardedMap[K, V]) shardOf(k K) *shard[K, V] {
	return &sm.shards[maphash.Comparable(sm.seed, k)&(numShards-1)]
}

// lock returns k's shard, locked; the caller unlocks sh.mu.
func (sm *shardedMap[K, V]) lock(k K) *shard[K, V] {
	sh := sm.shardOf(k)
	sh.mu.Lock()
	return sh
}

// get returns k's value; the shard is locked.
func (sh *shard[K, V]) get(k K) (V, bool) {
	v, ok := sh.m[k]
	return v, ok
}

// put sets k's value, creating the map on first use; the shard is locked.
func (sh *shard[K, V]) put(k K, v V) {
	if sh.m == nil {
		sh.m = make(map[K]V)
	}
	sh.m[k] = v
	if len(sh.m) > sh.peak {
		sh.peak = len(sh.m)
	}
}

// sweep calls keep for every entry, one shard at a time under its lock,
// deletes the entries for which it returns false, and gives back the
// memory of shards that shrank. It returns how many entries it deleted.
// keep must not call back into sm.
func (sm *shardedMap[K, V]) sweep(keep func(K, V) bool) (deleted int) {
	for i := range sm.shards {
		sh := &sm.shards[i]
		sh.mu.Lock()
		for k, v := range sh.m {
			if !keep(k, v) {
				delete(sh.m, k)
				deleted++
			}
		}
		sh.compact()
		sh.mu.Unlock()
	}
	return deleted
}

// compact rebuilds the map when it has shrunk to a quarter of its peak,
// since Go maps do not release buckets on delete, and drops it when empty.
// The shard is locked.
func (sh *shard[K, V]) compact() {
	switch {
	case len(sh.m) == 0:
		sh.m, sh.peak = nil, 0
	case sh.peak >= 256 && len(sh.m) <= sh.peak/4:
		nm := make(map[K]V, len(sh.m))
		for k, v := range sh.m {
			nm[k] = v
		}
		sh.m, sh.peak = nm, len(nm)
	}
}

// len returns the number of entries. It locks one shard at a time, so it
// is exact only when nothing is added or removed meanwhile.
func (sm *shardedMap[K, V]) len() int {
	n := 0
	for i := range sm.shards {
		sh := &sm.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
