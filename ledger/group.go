package ledger

import (
	"encoding/binary"
	"sync"
	"unsafe"
)

// group is the set of records appended between two writer passes; they
// are journaled as one frame and applied together. Its journal frame is
// built in jbuf; the few badger entries its records need (the admin index
// copy of admin records, the balance index of balance-bearing txns) are
// packed back to back in buf, so a group costs a few allocations however
// many records it holds.
//
// A group is built by Append under writer.mu (or by Open's replay), is
// read-only once the writer took it, and is handed to the applier, which
// returns its buffers to the groupPool after applying it. done is closed
// once err is final.
type group struct {
	buf      []byte
	entries  []span
	jbuf     []byte   // frame header, then uvarint-length-prefixed stored records
	pos      []recPos // each record's place in jbuf, for the segment index
	firstSeq uint64
	lastSeq  uint64
	lastHash [32]byte
	// seg and off are where the writer journaled jbuf: the segment's
	// first seq and the frame's offset in it.
	seg uint64
	off int64
	// indexed marks a group Open replayed from a segment it indexed
	// itself: the applier writes only its badger entries.
	indexed bool
	done    chan struct{}
	err     error
}

// recPos is one record of a group as the segment index needs it.
type recPos struct {
	jpos      uint32 // offset in jbuf of its uvarint length prefix
	at        int64  // At, Unix nanoseconds
	principal string
}

// span locates one entry in group.buf: key buf[k:v], value buf[v:end].
type span struct{ k, v, end int }

func (g *group) add(k, v, end int) { g.entries = append(g.entries, span{k, v, end}) }

// addRecord appends r's stored form (enc, which it returns, is scratch
// space) to the frame, notes its place for the index and adds its badger
// entries. prev and hash are the binary hashes behind r.Prev and r.Hash.
func (g *group) addRecord(r *Record, prev, hash *[32]byte, enc []byte) []byte {
	enc = r.appendBinary(enc[:0], prev, hash)
	g.pos = append(g.pos, recPos{jpos: uint32(len(g.jbuf)), at: r.At.UnixNano(), principal: r.Principal})
	g.jbuf = binary.AppendUvarint(g.jbuf, uint64(len(enc)))
	g.jbuf = append(g.jbuf, enc...)
	g.addEntries(r, enc)
	return enc
}

// addEntries adds the badger entries of record r, whose stored form is
// v: the admin index (a byte-exact copy, read whole at start) and the
// balance index.
func (g *group) addEntries(r *Record, v []byte) {
	if r.Type == TypeAdmin {
		k := len(g.buf)
		g.buf = appendSeqKey(g.buf, prefixAdmin, r.Seq)
		vs := len(g.buf)
		g.buf = append(g.buf, v...)
		g.add(k, vs, len(g.buf))
	}
	if r.Principal != "" && r.Type == TypeTxn && r.BalanceAfter != nil {
		k := len(g.buf)
		g.buf = append(g.buf, prefixBalance...)
		g.buf = append(g.buf, r.Principal...)
		vs := len(g.buf)
		g.buf = binary.BigEndian.AppendUint64(g.buf, r.Seq)
		g.add(k, vs, len(g.buf))
	}
}

// closedChan is the done channel of groups that need no answer (those
// Open replays from the journal).
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// maxSpare bounds the buffer of a group kept for reuse, maxSpares the
// number of groups kept and maxSpareBytes their buffers' capacity in all.
// The applier returns groups once applyBatch of them are queued (or
// applyDelay after the first, at low rates), so the pool must hold more
// than applyBatch groups for Append not to build new ones.
const (
	maxSpare      = 1 << 20
	maxSpares     = 4 * applyBatch
	maxSpareBytes = 8 << 20
)

// groupPool holds the buffers of applied groups for the next groups to
// reuse. The applier puts, Append gets (under writer.mu); it has its own
// lock, so that recycling never waits for an Append. The zero value is
// an empty pool.
type groupPool struct {
	mu     sync.Mutex
	spares []*group
	bytes  int // capacity of the spares' buffers
}

// get returns a group with empty buffers (reused when the pool has one);
// its done channel, seqs and err are the caller's to set.
func (p *groupPool) get() *group {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.spares)
	if n == 0 {
		return &group{}
	}
	g := p.spares[n-1]
	p.spares[n-1] = nil
	p.spares = p.spares[:n-1]
	p.bytes -= g.size()
	return g
}

// put keeps the applied groups' buffers for reuse. Tickets keep only a
// group's done channel and err, which a new group struct replaces with
// its own, so the buffers are free once the groups are applied.
func (p *groupPool) put(gs []*group) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range gs {
		if len(p.spares) >= maxSpares {
			return
		}
		if cap(g.buf) > maxSpare || cap(g.jbuf) > maxSpare || p.bytes+g.size() > maxSpareBytes {
			continue
		}
		clear(g.pos) // drop the principals
		p.spares = append(p.spares, &group{buf: g.buf[:0], entries: g.entries[:0], jbuf: g.jbuf[:0], pos: g.pos[:0]})
		p.bytes += g.size()
	}
}

// size is the capacity of g's buffers, as the pool counts it.
func (g *group) size() int {
	return cap(g.buf) + cap(g.jbuf) + cap(g.entries)*int(unsafe.Sizeof(span{})) + cap(g.pos)*int(unsafe.Sizeof(recPos{}))
}
