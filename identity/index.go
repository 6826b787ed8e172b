package identity

import (
	"encoding/binary"
	"hash/maphash"
	"sync/atomic"
)

// keyIndex holds a Store's keys in memory and finds them by the digest
// of their secret (the hot path) and by key_id. A million keys live in
// it, so it is built for memory: the keys sit in slabs of slabSize, and
// each index is one open-addressing table of 8-byte slots (a 32-bit tag
// and a slab position), not a Go map of pointers (a map of a million
// entries rounds up to 2²¹ slots of key, pointer and control byte; two
// of them were 113 MiB, these are 32 MiB; the tables hold no pointers,
// so the collector does not scan them either).
//
// One writer at a time (the Store's write lock, or Open before the
// Store is shared); readers take no lock. A key is written into its
// slab before its slot is published with an atomic store, so a reader
// that finds the slot sees the whole key. Keys are immutable: a change
// (revocation, restore) appends a new key and points both slots at it;
// the old one stays in its slab (callers may hold it), 120 bytes per
// change.
type keyIndex struct {
	slabs  atomic.Pointer[[]*slab] // append-only; slab i holds positions [i·slabSize, (i+1)·slabSize)
	byHash atomic.Pointer[table]   // by the digest's first 128 bits
	byID   atomic.Pointer[table]   // by maphash of the key_id
	seed   maphash.Seed

	n   uint32    // positions used (writer only)
	ids int       // distinct key_ids (writer only; Len reads it under the Store's lock)
	sum digestSum // Store.Digest of the current keys, kept as keys are added (writer only)
}

const slabBits = 10
const slabSize = 1 << slabBits

type slab [slabSize]Key

// table is an open-addressing hash table with linear probing. A slot is
// 0 (empty) or tag<<32 | pos+1. Slots are never emptied (keys are not
// deleted); a replaced key's slot takes the new position.
type table struct {
	slots []atomic.Uint64
	mask  uint64
	used  int // writer only
}

func newTable(n int) *table {
	size := 16
	for size*3/4 < n { // at most 3/4 full
		size *= 2
	}
	return &table{slots: make([]atomic.Uint64, size), mask: uint64(size - 1)}
}

func newKeyIndex(n int) *keyIndex {
	x := &keyIndex{seed: maphash.MakeSeed()}
	x.byHash.Store(newTable(n))
	x.byID.Store(newTable(n))
	empty := []*slab{}
	x.slabs.Store(&empty)
	return x
}

// at returns the key at pos, which must have been published.
func (x *keyIndex) at(pos uint32) *Key {
	return &(*x.slabs.Load())[pos>>slabBits][pos&(slabSize-1)]
}

func digestHash(h *[32]byte) (slot uint64, tag uint32) {
	return binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint32(h[8:12])
}

func (x *keyIndex) idHash(id string) (slot uint64, tag uint32) {
	v := maphash.String(x.seed, id)
	return v, uint32(v >> 32)
}

// digest returns the key whose digest starts with h's first 128 bits,
// or nil; the caller confirms the full digest in constant time.
func (x *keyIndex) digest(h *[32]byte) *Key {
	t := x.byHash.Load()
	hv, tag := digestHash(h)
	for i := hv & t.mask; ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		if e == 0 {
			return nil
		}
		if uint32(e>>32) == tag {
			if k := x.at(uint32(e) - 1); [16]byte(k.Hash[:16]) == [16]byte(h[:16]) {
				return k
			}
		}
	}
}

// id returns the key with key_id id, or nil.
func (x *keyIndex) id(id string) *Key {
	t := x.byID.Load()
	hv, tag := x.idHash(id)
	for i := hv & t.mask; ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		if e == 0 {
			return nil
		}
		if uint32(e>>32) == tag {
			if k := x.at(uint32(e) - 1); k.ID == id {
				return k
			}
		}
	}
}

// each calls fn with every key by key_id (the latest of each id).
func (x *keyIndex) each(fn func(*Key)) {
	t := x.byID.Load()
	for i := range t.slots {
		if e := t.slots[i].Load(); e != 0 {
			fn(x.at(uint32(e) - 1))
		}
	}
}

// reserve returns the next position's key, in a slab allocated if
// needed, to be filled and then published with add (writer only).
func (x *keyIndex) reserve() (*Key, uint32) {
	pos := x.n
	if pos == ^uint32(0)-1 {
		panic("identity: more than 2³²-2 key positions")
	}
	slabs := *x.slabs.Load()
	if int(pos>>slabBits) == len(slabs) {
		grown := append(slabs[:len(slabs):len(slabs)], new(slab))
		x.slabs.Store(&grown)
		slabs = grown
	}
	x.n++
	return &slabs[pos>>slabBits][pos&(slabSize-1)], pos
}

// addSlab appends a slab filled by the caller with n keys (Open), to be
// published with add; the index must not have a partly filled slab.
func (x *keyIndex) addSlab(s *slab, n int) uint32 {
	if x.n%slabSize != 0 {
		panic("identity: addSlab after a partial slab")
	}
	slabs := *x.slabs.Load()
	grown := append(slabs[:len(slabs):len(slabs)], s)
	x.slabs.Store(&grown)
	base := x.n
	x.n += uint32(n) // a partial last slab's rest is filled by reserve
	return base
}

// add publishes the key at pos in both tables, replacing the key of the
// same id and the key of the same digest (writer only).
func (x *keyIndex) add(pos uint32) {
	old, _ := x.link(pos)
	if old != nil {
		x.sum.sub(old)
	} else {
		x.ids++
	}
	x.sum.add(x.at(pos))
}

// link publishes the key at pos in both tables, and returns the key of
// the same id it replaced and whether it replaced one of the same digest
// (writer only); add keeps the count and the digest sum besides.
func (x *keyIndex) link(pos uint32) (old *Key, sameDigest bool) {
	k := x.at(pos)
	h, htag := digestHash(&k.Hash)
	t, oldh := x.put(x.byHash.Load(), h, htag, pos, func(o *Key) bool { return o.Hash == k.Hash }, x.digestOf)
	x.byHash.Store(t)
	i, itag := x.idHash(k.ID)
	t, old = x.put(x.byID.Load(), i, itag, pos, func(o *Key) bool { return o.ID == k.ID }, x.idOf)
	x.byID.Store(t)
	return old, oldh != nil
}

func (x *keyIndex) digestOf(k *Key) (uint64, uint32) { return digestHash(&k.Hash) }
func (x *keyIndex) idOf(k *Key) (uint64, uint32)     { return x.idHash(k.ID) }

// put stores pos in t under (h, tag), replacing the slot of a key same
// reports as equal (returned as old); it returns t, or a table twice its
// size when t would be more than 3/4 full (the caller publishes it).
func (x *keyIndex) put(t *table, h uint64, tag uint32, pos uint32, same func(*Key) bool, hash func(*Key) (uint64, uint32)) (_ *table, old *Key) {
	e := uint64(tag)<<32 | uint64(pos+1)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		was := t.slots[i].Load()
		if was == 0 {
			break
		}
		if k := x.at(uint32(was) - 1); uint32(was>>32) == tag && same(k) {
			t.slots[i].Store(e)
			return t, k
		}
	}
	if (t.used+1)*4 > len(t.slots)*3 {
		g := &table{slots: make([]atomic.Uint64, 2*len(t.slots)), mask: uint64(2*len(t.slots) - 1), used: t.used}
		for i := range t.slots {
			if old := t.slots[i].Load(); old != 0 {
				oh, _ := hash(x.at(uint32(old) - 1))
				g.insert(oh, old)
			}
		}
		t = g
	}
	t.insert(h, e)
	t.used++
	return t, nil
}

// insert stores e in the first empty slot from h (the key is not there).
func (t *table) insert(h uint64, e uint64) {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		if t.slots[i].Load() == 0 {
			t.slots[i].Store(e)
			return
		}
	}
}

// fill publishes every position [0, x.n) in both tables, which must be
// empty and sized for them (newKeyIndex(n)), and counts them as ids; the
// caller sets the digest sum. It inserts in the order of the slots the
// keys hash to, so that each insertion touches the table near the one
// before (a million inserts in position order miss the cache on each),
// the two tables on two goroutines. It reports false, leaving the index
// unusable, when two keys have one id or one digest (add replaces the
// older one; fill does not decide).
func (x *keyIndex) fill() bool {
	keys := 0
	for pos := range x.n {
		if !x.hole(pos) {
			keys++
		}
	}
	for _, t := range []*atomic.Pointer[table]{&x.byHash, &x.byID} {
		if t.Load().used != 0 {
			return false
		}
		if keys*4 > len(t.Load().slots)*3 {
			t.Store(newTable(keys))
		}
	}
	var okHash bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		okHash = x.fillTable(x.byHash.Load(), x.digestOf, func(a, b *Key) bool { return a.Hash == b.Hash })
	}()
	okID := x.fillTable(x.byID.Load(), x.idOf, func(a, b *Key) bool { return a.ID == b.ID })
	<-done
	if okHash && okID {
		x.ids = keys
	}
	return okHash && okID
}

// hole reports whether pos holds no key (a position OpenSnapshot left
// empty; every key has a Principal).
func (x *keyIndex) hole(pos uint32) bool { return x.at(pos).Principal == "" }

func (x *keyIndex) fillTable(t *table, hash func(*Key) (uint64, uint32), same func(a, b *Key) bool) bool {
	n := int(x.n)
	const bucketBits = 12 // buckets of len(t.slots)>>12 slots: a few KiB of table each
	shift := 0
	for len(t.slots)>>shift > 1<<bucketBits {
		shift++
	}
	type entry struct{ h, e uint64 }
	ents := make([]entry, 0, n)
	var counts [1<<bucketBits + 1]int
	for pos := range n {
		if x.hole(uint32(pos)) {
			continue
		}
		h, tag := hash(x.at(uint32(pos)))
		ents = append(ents, entry{h, uint64(tag)<<32 | uint64(pos+1)})
		counts[(h&t.mask)>>shift+1]++
	}
	for i := 1; i < len(counts); i++ {
		counts[i] += counts[i-1]
	}
	sorted := make([]entry, len(ents))
	for _, e := range ents {
		b := (e.h & t.mask) >> shift
		sorted[counts[b]] = e
		counts[b]++
	}
	ents = nil
	for _, e := range sorted {
		k := x.at(uint32(e.e) - 1)
		i := e.h & t.mask
		for ; ; i = (i + 1) & t.mask {
			was := t.slots[i].Load()
			if was == 0 {
				break
			}
			if uint32(was>>32) == uint32(e.e>>32) && same(x.at(uint32(was)-1), k) {
				return false
			}
		}
		t.slots[i].Store(e.e)
	}
	t.used = len(sorted)
	return true
}

// reindex rebuilds both tables, the count and the digest sum from every
// position in order, as add publishes them (the later of two keys of one
// id replaces the earlier); after fill refused (writer only).
func (x *keyIndex) reindex() {
	x.byHash.Store(newTable(int(x.n)))
	x.byID.Store(newTable(int(x.n)))
	x.ids, x.sum = 0, digestSum{}
	for pos := range x.n {
		if !x.hole(pos) {
			x.add(pos)
		}
	}
}
