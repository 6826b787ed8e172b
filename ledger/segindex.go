package ledger

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"unsafe"
)

// A segment's index (file <first seq>.idx beside <first seq>.seg) locates
// every record of the segment by seq, by time and by principal, so that
// the segment is the only copy of each record. It is written once, when
// the segment is sealed, and never changed; it is derived from the
// segment alone (buildIndex), so the same segment always gives the same
// bytes, and Verify rebuilds it and compares. All integers are
// little-endian.
//
//	header (64 bytes):
//	  magic "TGLIDX1\n"
//	  first u64       seq of the segment's first record
//	  count u32       records in the segment (seqs first .. first+count-1)
//	  nprin u32       principals in the table below
//	  size u64        bytes of the segment covered (its whole size)
//	  nposts u32      entries in posts
//	  namesLen u32    bytes of names
//	  minAt, maxAt i64  smallest and largest At (Unix ns); 0, 0 when count = 0
//	  8 bytes zero
//	offs   [count]u32  offset in the segment of record i's uvarint length prefix
//	byTime [count]u32  record numbers ordered by (At, seq)
//	ats    [count]i64  At (Unix ns) of record i
//	prins  [nprin]{nameOff, nameLen, postStart, postLen u32}, by name
//	posts  [nposts]u32 each principal's record numbers ordered by (At, seq)
//	names  namesLen bytes
//	crc    u32         CRC-32C of everything before it
//
// A record number i stands for seq first+i. Records without a principal
// are in no posting list.
const (
	idxMagic  = "TGLIDX1\n"
	idxHeader = 64
	chunkSize = 4096 // records per sorted chunk of an active segment's lists
)

var errIndex = errors.New("malformed segment index")

// segIndex is a decoded segment index. Its slices alias the bytes it was
// decoded from (a mapped .idx file, or an active segment's memory), which
// must outlive it and never change.
type segIndex struct {
	first   uint64
	size    int64
	offs    []uint32
	byTime  []uint32
	ats     []int64
	prins   []uint32 // 4 per principal
	posts   []uint32
	names   []byte
	minAt   int64
	maxAt   int64
	rawSize int
}

// littleEndian is whether this machine stores integers like the index
// file, so that its arrays can be used in place.
var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

func u32s(b []byte) []uint32 {
	n := len(b) / 4
	if n == 0 {
		return nil
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), n)
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func i64s(b []byte) []int64 {
	n := len(b) / 8
	if n == 0 {
		return nil
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
		return unsafe.Slice((*int64)(unsafe.Pointer(&b[0])), n)
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

// encodeIndex returns the index file of a segment starting at first,
// size bytes long, whose record i starts at offs[i] with At ats[i];
// prin maps each principal to its record numbers in any order.
func encodeIndex(first uint64, size int64, offs []uint32, ats []int64, prin map[string][]uint32) []byte {
	n := len(offs)
	byAt := func(a, b uint32) int {
		if c := cmp.Compare(ats[a], ats[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	}
	byTime := make([]uint32, n)
	for i := range byTime {
		byTime[i] = uint32(i)
	}
	slices.SortFunc(byTime, byAt)
	names := make([]string, 0, len(prin))
	nposts, namesLen := 0, 0
	for p, ps := range prin {
		names = append(names, p)
		nposts += len(ps)
		namesLen += len(p)
	}
	sort.Strings(names)
	var minAt, maxAt int64
	if n > 0 {
		minAt, maxAt = ats[byTime[0]], ats[byTime[n-1]]
	}
	b := make([]byte, 0, idxHeader+16*n+16*len(names)+4*nposts+namesLen+4)
	b = append(b, idxMagic...)
	b = binary.LittleEndian.AppendUint64(b, first)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(names)))
	b = binary.LittleEndian.AppendUint64(b, uint64(size))
	b = binary.LittleEndian.AppendUint32(b, uint32(nposts))
	b = binary.LittleEndian.AppendUint32(b, uint32(namesLen))
	b = binary.LittleEndian.AppendUint64(b, uint64(minAt))
	b = binary.LittleEndian.AppendUint64(b, uint64(maxAt))
	b = append(b, make([]byte, idxHeader-len(b))...)
	for _, o := range offs {
		b = binary.LittleEndian.AppendUint32(b, o)
	}
	for _, i := range byTime {
		b = binary.LittleEndian.AppendUint32(b, i)
	}
	for _, a := range ats {
		b = binary.LittleEndian.AppendUint64(b, uint64(a))
	}
	post, nameOff := 0, 0
	for _, p := range names {
		b = binary.LittleEndian.AppendUint32(b, uint32(nameOff))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = binary.LittleEndian.AppendUint32(b, uint32(post))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(prin[p])))
		nameOff += len(p)
		post += len(prin[p])
	}
	for _, p := range names {
		ps := slices.Clone(prin[p])
		slices.SortFunc(ps, byAt)
		for _, i := range ps {
			b = binary.LittleEndian.AppendUint32(b, i)
		}
	}
	for _, p := range names {
		b = append(b, p...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32Checksum(b))
}

// decodeIndex checks an index file (its checksum, its layout, that every
// record number and offset is in range and the orders are orders) and
// returns it decoded; the result aliases b.
func decodeIndex(b []byte) (*segIndex, error) {
	if len(b) < idxHeader+4 || string(b[:8]) != idxMagic {
		return nil, fmt.Errorf("%w: bad header", errIndex)
	}
	body := b[:len(b)-4]
	if crc32Checksum(body) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errIndex)
	}
	le := binary.LittleEndian
	ix := &segIndex{first: le.Uint64(b[8:]), size: int64(le.Uint64(b[24:])), rawSize: len(b)}
	n, nprin, nposts, namesLen := int(le.Uint32(b[16:])), int(le.Uint32(b[20:])), int(le.Uint32(b[32:])), int(le.Uint32(b[36:]))
	ix.minAt, ix.maxAt = int64(le.Uint64(b[40:])), int64(le.Uint64(b[48:]))
	if ix.first == 0 || idxHeader+16*n+16*nprin+4*nposts+namesLen != len(body) {
		return nil, fmt.Errorf("%w: sizes do not add up", errIndex)
	}
	p := idxHeader
	take := func(k int) []byte { s := b[p : p+k : p+k]; p += k; return s }
	ix.offs = u32s(take(4 * n))
	ix.byTime = u32s(take(4 * n))
	ix.ats = i64s(take(8 * n))
	ix.prins = u32s(take(16 * nprin))
	ix.posts = u32s(take(4 * nposts))
	ix.names = take(namesLen)
	for i, o := range ix.offs {
		if int64(o) >= ix.size || i > 0 && o <= ix.offs[i-1] {
			return nil, fmt.Errorf("%w: offset of record %d out of order", errIndex, ix.first+uint64(i))
		}
	}
	if !ix.sorted(ix.byTime) {
		return nil, fmt.Errorf("%w: time order broken", errIndex)
	}
	post, nameOff := 0, 0
	var prev []byte
	for k := 0; k < nprin; k++ {
		no, nl, ps, pl := int(ix.prins[4*k]), int(ix.prins[4*k+1]), int(ix.prins[4*k+2]), int(ix.prins[4*k+3])
		if no != nameOff || ps != post || nameOff+nl > namesLen || post+pl > nposts {
			return nil, fmt.Errorf("%w: principal table", errIndex)
		}
		name := ix.names[no : no+nl]
		if k > 0 && bytes.Compare(prev, name) >= 0 || !ix.sorted(ix.posts[ps:ps+pl]) {
			return nil, fmt.Errorf("%w: principal table order", errIndex)
		}
		prev, nameOff, post = name, nameOff+nl, post+pl
	}
	if post != nposts || nameOff != namesLen {
		return nil, fmt.Errorf("%w: principal table", errIndex)
	}
	return ix, nil
}

// sorted reports whether list holds record numbers in range, strictly
// ordered by (At, number).
func (ix *segIndex) sorted(list []uint32) bool {
	n := uint32(len(ix.offs))
	for k, i := range list {
		if i >= n {
			return false
		}
		if k > 0 {
			j := list[k-1]
			if ix.ats[j] > ix.ats[i] || ix.ats[j] == ix.ats[i] && j >= i {
				return false
			}
		}
	}
	return true
}

// postings returns principal p's list, nil when it has none.
func (ix *segIndex) postings(p string) []uint32 {
	nprin := len(ix.prins) / 4
	k := sort.Search(nprin, func(k int) bool {
		no, nl := ix.prins[4*k], ix.prins[4*k+1]
		return string(ix.names[no:no+nl]) >= p
	})
	if k == nprin {
		return nil
	}
	no, nl, ps, pl := ix.prins[4*k], ix.prins[4*k+1], ix.prins[4*k+2], ix.prins[4*k+3]
	if string(ix.names[no:no+nl]) != p {
		return nil
	}
	return ix.posts[ps : ps+pl]
}

// principalOf returns, for each record number, the principal whose list
// holds it ("" for none, or "\x00dup" when two lists do); Verify uses it
// to name the first record an index misplaces.
func (ix *segIndex) principalOf() []string {
	out := make([]string, len(ix.offs))
	for k := 0; k < len(ix.prins)/4; k++ {
		no, nl, ps, pl := ix.prins[4*k], ix.prins[4*k+1], ix.prins[4*k+2], ix.prins[4*k+3]
		name := string(ix.names[no : no+nl])
		for _, i := range ix.posts[ps : ps+pl] {
			if out[i] != "" {
				out[i] = "\x00dup"
			} else {
				out[i] = name
			}
		}
	}
	return out
}

// chunkList is a growing list of record numbers of an active segment:
// full chunks sorted by (At, number) and immutable, and a tail in seq
// order that a reader copies and sorts. The owner (activeIndex) guards
// it.
type chunkList struct {
	sorted [][]uint32
	tail   []uint32
	n      int
}

func (c *chunkList) add(i uint32, ats []int64) {
	c.tail = append(c.tail, i)
	c.n++
	if len(c.tail) == chunkSize {
		s := slices.Clone(c.tail)
		sortByAt(s, ats)
		c.sorted = append(c.sorted, s)
		c.tail = c.tail[:0] // readers copy the tail under the lock
	}
}

// snapshot returns the lists to merge: the sorted chunks (shared) and a
// sorted copy of the tail. Call it under the owner's read lock.
func (c *chunkList) snapshot(ats []int64, dst [][]uint32) [][]uint32 {
	dst = append(dst, c.sorted...)
	if len(c.tail) > 0 {
		t := slices.Clone(c.tail)
		sortByAt(t, ats)
		dst = append(dst, t)
	}
	return dst
}

// all returns every record number in the list, in no particular order.
func (c *chunkList) all() []uint32 {
	out := make([]uint32, 0, c.n)
	for _, s := range c.sorted {
		out = append(out, s...)
	}
	return append(out, c.tail...)
}

func sortByAt(list []uint32, ats []int64) {
	slices.SortFunc(list, func(a, b uint32) int {
		if c := cmp.Compare(ats[a], ats[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
}

// activeIndex indexes the segment being written, in memory: the applier
// adds each journaled record, readers take snapshots. offs and ats only
// grow (a snapshot keeps a prefix of them), the lists are chunkLists.
type activeIndex struct {
	mu   sync.RWMutex
	offs []uint32
	ats  []int64
	time chunkList
	prin map[string]*chunkList
	end  int64 // bytes of the segment indexed (the end of the last frame)
}

func (a *activeIndex) add(off uint32, at int64, principal string) {
	i := uint32(len(a.offs))
	a.offs = append(a.offs, off)
	a.ats = append(a.ats, at)
	a.time.add(i, a.ats)
	if principal == "" {
		return
	}
	if a.prin == nil {
		a.prin = map[string]*chunkList{}
	}
	c := a.prin[principal]
	if c == nil {
		c = &chunkList{}
		a.prin[principal] = c
	}
	c.add(i, a.ats)
}

// encode returns the index file of the records indexed so far.
func (a *activeIndex) encode(first uint64) []byte {
	prin := make(map[string][]uint32, len(a.prin))
	for p, c := range a.prin {
		prin[p] = c.all()
	}
	return encodeIndex(first, a.end, a.offs, a.ats, prin)
}
