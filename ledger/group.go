package ledger

import (
	"encoding/binary"
	"sync"
)

// group is the set of records appended between two writer passes; they
// are journaled as one frame and applied together. Keys and values of all
// its badger entries are packed back to back in buf, and its journal
// frame in jbuf, so a group costs a few allocations however many records
// it holds.
//
// A group is built by Append under writer.mu (or by Open's replay), is
// read-only once the writer took it, and is handed to the applier, which
// returns its buffers to the groupPool after applying it. done is closed
// once err is final.
type group struct {
	buf      []byte
	entries  []span
	jbuf     []byte // frame header, then uvarint-length-prefixed stored records
	firstSeq uint64
	lastSeq  uint64
	lastHash [32]byte
	done     chan struct{}
	err      error
}

// span locates one entry in group.buf: key buf[k:v], value buf[v:end].
type span struct{ k, v, end int }

func (g *group) add(k, v, end int) { g.entries = append(g.entries, span{k, v, end}) }

// addRecord appends r's badger entries (record, time index, admin index,
// principal index, balance index) and returns where its stored form lies in buf.
// prev and hash are the binary hashes behind r.Prev and r.Hash.
func (g *group) addRecord(r *Record, prev, hash *[32]byte) (rv, rend int) {
	// Record: its stored (binary) form, encoded once.
	k := len(g.buf)
	g.buf = appendSeqKey(g.buf, prefixRecord, r.Seq)
	rv = len(g.buf)
	g.buf = r.appendBinary(g.buf, prev, hash)
	rend = len(g.buf)
	g.add(k, rv, rend)
	// Time index: filters only.
	k = len(g.buf)
	g.buf = appendTimeKey(g.buf, r.At, r.Seq)
	v := len(g.buf)
	g.buf = appendIndexValue(g.buf, r)
	g.add(k, v, len(g.buf))
	if r.Type == TypeAdmin {
		// Admin index: the management history, read whole at start.
		k = len(g.buf)
		g.buf = appendSeqKey(g.buf, prefixAdmin, r.Seq)
		v = len(g.buf)
		g.buf = append(g.buf, g.buf[rv:rend]...)
		g.add(k, v, len(g.buf))
	}
	if r.Principal == "" {
		return rv, rend
	}
	// Principal index: a byte-exact copy of the record, so a replay
	// never reads l/r/ (Verify checks the copies).
	k = len(g.buf)
	g.buf = appendPrincipalKey(g.buf, r.Principal, r.At, r.Seq)
	v = len(g.buf)
	g.buf = append(g.buf, g.buf[rv:rend]...)
	g.add(k, v, len(g.buf))
	if r.Type == TypeTxn && r.BalanceAfter != nil {
		k = len(g.buf)
		g.buf = append(g.buf, prefixBalance...)
		g.buf = append(g.buf, r.Principal...)
		v = len(g.buf)
		g.buf = binary.BigEndian.AppendUint64(g.buf, r.Seq)
		g.add(k, v, len(g.buf))
	}
	return rv, rend
}

// closedChan is the done channel of groups that need no answer (those
// Open replays from the journal).
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// maxSpare bounds the buffer of a group kept for reuse, maxSpares the
// number of groups kept.
const (
	maxSpare  = 1 << 20
	maxSpares = 64
)

// groupPool holds the buffers of applied groups for the next groups to
// reuse. The applier puts, Append gets (under writer.mu); it has its own
// lock, so that recycling never waits for an Append. The zero value is
// an empty pool.
type groupPool struct {
	mu     sync.Mutex
	spares []*group
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
		if cap(g.buf) > maxSpare || cap(g.jbuf) > maxSpare {
			continue
		}
		p.spares = append(p.spares, &group{buf: g.buf[:0], entries: g.entries[:0], jbuf: g.jbuf[:0]})
	}
}
