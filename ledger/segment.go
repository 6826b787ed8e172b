package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The record store is the journal itself: segment files under DATA/ledger/
// named <first seq, 20 decimal digits>.seg, each holding consecutive
// frames (journal.go) whose records continue the chain from its first
// seq. A segment is written by the writer until it is full, then sealed:
// the writer fdatasyncs it and starts the next one, and the applier
// writes its index file <first seq>.idx (segindex.go) beside it. Sealed
// segments and their indexes are never written again. The segment being
// written is indexed in memory (activeIndex) and sealed at Close or, after
// a crash, by the next Open, which rebuilds its index from its frames.
const (
	segDir    = "ledger"
	segSuffix = ".seg"
	idxSuffix = ".idx"
	// mapSlack is mapped beyond the segment size, for the frame that
	// crosses it.
	mapSlack = 4 << 20
)

// storeSeg is one segment of the store.
type storeSeg struct {
	first   uint64
	path    string
	data    []byte    // the segment's bytes; for the active one, mapped beyond its end
	mapping []byte    // what data was cut from, to release at close
	ix      *segIndex // the index of a sealed segment; nil while active
	idx     []byte    // what ix aliases: the mapped .idx file (or heap bytes)
	act     *activeIndex
	f       *os.File // the active segment, read side; nil when sealed
	// idxMapped says idx is a mapping to release at close.
	idxMapped bool
}

// recordStore is the set of segments. The applier adds records and
// seals segments; readers take snapshots (views). mu guards segs and
// every segment's fields, including the active index's contents.
type recordStore struct {
	dir      string // DATA/ledger
	segBytes int64
	ro       bool

	mu    sync.RWMutex
	segs  []*storeSeg
	stale [][]byte // mappings replaced while readers may use them; released at close

	// tmp is a directory to remove at Close (a read-only migration's).
	tmp string
}

func segName(first uint64, suffix string) string {
	return fmt.Sprintf("%020d%s", first, suffix)
}

// listFiles returns the files in dir named prefix<20 digits>suffix, by
// number.
func listFiles(dir, prefix, suffix string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
			continue
		}
		num := strings.TrimSuffix(strings.TrimPrefix(name, prefix), suffix)
		first, err := strconv.ParseUint(num, 10, 64)
		if err != nil || len(num) != 20 || first == 0 {
			return nil, fmt.Errorf("ledger: unexpected file %s", name)
		}
		segs = append(segs, segment{first: first, path: filepath.Join(dir, name)})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	return segs, nil
}

// scanFrames walks the frames of a segment's bytes, calling fn with each
// frame's offset and body. A bad frame (short, bad length or checksum)
// is a torn tail when no valid frame starts anywhere after it: scanFrames
// then stops there with torn = true. A bad frame followed by a valid one
// is damage (a damaged length must not hide the frames behind it). end is
// where the last good frame ends.
func scanFrames(b []byte, fn func(off int, body []byte) error) (end int, torn bool, err error) {
	off := 0
	for off < len(b) {
		rest := b[off:]
		bad := ""
		var n int
		if len(rest) < frameHeader {
			bad = "short header"
		} else {
			n = int(binary.LittleEndian.Uint32(rest))
			switch {
			case n == 0 || n > maxFrame:
				bad = "bad length"
			case frameHeader+n > len(rest):
				bad = "short frame"
			case crc32Checksum(rest[frameHeader:frameHeader+n]) != binary.LittleEndian.Uint32(rest[4:]):
				bad = "checksum mismatch"
			}
		}
		if bad == "" {
			if err := fn(off, rest[frameHeader:frameHeader+n]); err != nil {
				return off, false, err
			}
			off += frameHeader + n
			continue
		}
		if p := validFrameAfter(b, off); p >= 0 {
			return off, false, fmt.Errorf("frame at offset %d: %s (a valid frame follows at %d)", off, bad, p)
		}
		return off, true, nil
	}
	return off, false, nil
}

// scanRecords walks the records of a segment's frames (see scanFrames),
// calling fn with each record's offset (of its length prefix) and stored
// bytes.
func scanRecords(b []byte, fn func(off int, v []byte) error) (end int, torn bool, err error) {
	return scanFrames(b, func(off int, body []byte) error {
		p := off + frameHeader
		for len(body) > 0 {
			n, k := binary.Uvarint(body)
			if k <= 0 || n == 0 || n > uint64(len(body)-k) {
				return fmt.Errorf("frame at offset %d: %w", off, errBinary)
			}
			if err := fn(p, body[k:k+int(n)]); err != nil {
				return err
			}
			body = body[k+int(n):]
			p += k + int(n)
		}
		return nil
	})
}

// storedKeyFields decodes, from a stored record, what the index needs:
// its seq, At and principal (aliasing v).
func storedKeyFields(v []byte) (seq uint64, at int64, principal []byte, ok bool) {
	if len(v) == 0 || v[0] < binaryVersion || v[0] > binaryVersion5 {
		return 0, 0, nil, false
	}
	d := binReader{b: v[1:]}
	d.bytes()
	d.bytes()
	d.bytes()
	seq = d.uvarint()
	if a := d.fixed(8); a != nil {
		at = int64(binary.BigEndian.Uint64(a))
	}
	d.bytes()
	principal = d.bytes()
	return seq, at, principal, !d.err
}

// indexBuilder collects what encodeIndex needs while a segment's records
// stream by.
type indexBuilder struct {
	first uint64
	offs  []uint32
	ats   []int64
	prin  map[string][]uint32
}

// add notes the record at off; it fails when the record is undecodable
// or not the next seq.
func (b *indexBuilder) add(off int, v []byte) error {
	seq, at, p, ok := storedKeyFields(v)
	want := b.first + uint64(len(b.offs))
	if !ok {
		return fmt.Errorf("record after %d undecodable", want-1)
	}
	if seq != want {
		return fmt.Errorf("record %d where %d belongs", seq, want)
	}
	i := uint32(len(b.offs))
	b.offs = append(b.offs, uint32(off))
	b.ats = append(b.ats, at)
	if len(p) > 0 {
		if b.prin == nil {
			b.prin = map[string][]uint32{}
		}
		b.prin[string(p)] = append(b.prin[string(p)], i)
	}
	return nil
}

func (b *indexBuilder) encode(size int64) []byte {
	return encodeIndex(b.first, size, b.offs, b.ats, b.prin)
}

// record returns the stored form of record number i of a segment whose
// bytes are data and record offsets offs.
func recordAt(data []byte, offs []uint32, i int) ([]byte, error) {
	o := int(offs[i])
	if o >= len(data) {
		return nil, errBinary
	}
	n, k := binary.Uvarint(data[o:])
	if k <= 0 || n == 0 || uint64(len(data)-o-k) < n {
		return nil, errBinary
	}
	return data[o+k : o+k+int(n)], nil
}

// segView is a reader's snapshot of one segment: its first n records.
type segView struct {
	first uint64
	n     int
	end   int64 // bytes of frames holding those records
	data  []byte
	offs  []uint32
	ats   []int64
	ix    *segIndex // sealed: the stored index; nil for the active segment
	idx   []byte    // sealed: the stored index file's bytes
	lists [][]uint32
}

func (v *segView) last() uint64 { return v.first + uint64(v.n) - 1 }

func (v *segView) record(i int) ([]byte, error) { return recordAt(v.data, v.offs, i) }

// listSel says which lists a snapshot should carry: none, the time
// order, or one principal's.
type listSel struct {
	want      bool
	principal string
}

// snapshot returns views of every segment as they are now, with the
// lists sel asks for; the views stay valid after later appends.
func (s *recordStore) snapshot(sel listSel) []segView {
	s.mu.RLock()
	defer s.mu.RUnlock()
	vs := make([]segView, 0, len(s.segs))
	for _, g := range s.segs {
		v := segView{first: g.first, data: g.data}
		if g.ix != nil {
			v.n, v.end, v.offs, v.ats, v.ix, v.idx = len(g.ix.offs), g.ix.size, g.ix.offs, g.ix.ats, g.ix, g.idx
			if sel.want {
				var l []uint32
				if sel.principal == "" {
					l = g.ix.byTime
				} else {
					l = g.ix.postings(sel.principal)
				}
				if len(l) > 0 {
					v.lists = [][]uint32{l}
				}
			}
		} else {
			a := g.act
			v.n, v.end = len(a.offs), a.end
			v.offs, v.ats = a.offs[:v.n:v.n], a.ats[:v.n:v.n]
			if sel.want {
				if sel.principal == "" {
					v.lists = a.time.snapshot(a.ats, nil)
				} else if c := a.prin[sel.principal]; c != nil {
					v.lists = c.snapshot(a.ats, nil)
				}
			}
		}
		if v.n > 0 {
			vs = append(vs, v)
		}
	}
	return vs
}

// find returns the view holding seq among vs (in seq order), or false.
func findView(vs []segView, seq uint64) (*segView, bool) {
	k := sort.Search(len(vs), func(k int) bool { return vs[k].last() >= seq })
	if k == len(vs) || seq < vs[k].first {
		return nil, false
	}
	return &vs[k], true
}

// lookup returns the stored form of record seq (a copy is not made: it
// aliases the mapped segment, which lives until the ledger closes).
func (s *recordStore) lookup(seq uint64) ([]byte, bool, error) {
	vs := s.snapshot(listSel{})
	v, ok := findView(vs, seq)
	if !ok {
		return nil, false, nil
	}
	b, err := v.record(int(seq - v.first))
	return b, true, err
}

// head returns the last record the store holds (0 when none).
func (s *recordStore) head() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := len(s.segs) - 1; i >= 0; i-- {
		g := s.segs[i]
		n := 0
		if g.ix != nil {
			n = len(g.ix.offs)
		} else {
			n = len(g.act.offs)
		}
		if n > 0 {
			return g.first + uint64(n) - 1
		}
	}
	return 0
}

// openSealed maps a sealed segment and its index file; the index must
// decode, start at first and cover the segment exactly.
func openSealed(path string, first uint64) (*storeSeg, error) {
	g := &storeSeg{first: first, path: path}
	data, err := mapPath(path)
	if err != nil {
		return nil, err
	}
	g.data, g.mapping = data, data
	ipath := strings.TrimSuffix(path, segSuffix) + idxSuffix
	idx, err := mapPath(ipath)
	if err != nil {
		unmapFile(data)
		return nil, err
	}
	ix, err := decodeIndex(idx)
	if err == nil && (ix.first != first || ix.size != int64(len(data))) {
		err = fmt.Errorf("%w: it names records from %d over %d bytes, the segment starts at %d and holds %d bytes", errIndex, ix.first, ix.size, first, len(data))
	}
	if err != nil {
		unmapFile(data)
		unmapFile(idx)
		return nil, fmt.Errorf("%s: %w", filepath.Base(ipath), err)
	}
	g.ix, g.idx, g.idxMapped = ix, idx, true
	return g, nil
}

// mapPath maps a whole file read-only.
func mapPath(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return mapFile(f, int(fi.Size()))
}

// writeIndexFile writes an index file atomically (temp file, fsync,
// rename, fsync of the dir).
func writeIndexFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// add indexes the records of a journaled group in the active segment,
// first sealing the previous segment when the writer has moved on.
// Only the applier calls it.
func (s *recordStore) add(g *group) error {
	cur := s.last()
	if cur == nil || cur.first != g.seg {
		if cur != nil && cur.act != nil {
			if err := s.seal(cur); err != nil {
				return err
			}
		}
		var err error
		if cur, err = s.openActive(g.seg); err != nil {
			return err
		}
	}
	end := g.off + int64(len(g.jbuf))
	if int64(len(cur.data)) < end || !mapsGrow {
		if err := s.remap(cur, end); err != nil {
			return err
		}
	}
	s.mu.Lock()
	for _, p := range g.pos {
		cur.act.add(uint32(g.off)+p.jpos, p.at, p.principal)
	}
	cur.act.end = end
	s.mu.Unlock()
	return nil
}

func (s *recordStore) last() *storeSeg {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n := len(s.segs); n > 0 {
		return s.segs[n-1]
	}
	return nil
}

// openActive opens the segment the writer started at first and makes it
// the active one.
func (s *recordStore) openActive(first uint64) (*storeSeg, error) {
	path := filepath.Join(s.dir, segName(first, segSuffix))
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	data, err := mapFile(f, int(s.segBytes)+mapSlack)
	if err != nil {
		f.Close()
		return nil, err
	}
	g := &storeSeg{first: first, path: path, data: data, mapping: data, f: f, act: &activeIndex{}}
	s.mu.Lock()
	s.segs = append(s.segs, g)
	s.mu.Unlock()
	return g, nil
}

// remap maps the active segment anew so that it covers end; the old
// mapping stays valid for readers until close.
func (s *recordStore) remap(g *storeSeg, end int64) error {
	data, err := mapFile(g.f, int(max(end+mapSlack, 2*int64(len(g.data)))))
	if err != nil {
		return err
	}
	s.mu.Lock()
	if g.mapping != nil {
		s.stale = append(s.stale, g.mapping)
	}
	g.data, g.mapping = data, data
	s.mu.Unlock()
	return nil
}

// seal writes the index of a finished active segment (the writer has
// synced it) and turns it into a sealed one. When the index cannot be
// written the segment keeps its index in memory (the next Open writes
// it).
func (s *recordStore) seal(g *storeSeg) error {
	b := g.act.encode(g.first)
	ix, err := decodeIndex(b)
	if err != nil {
		return fmt.Errorf("seal segment %d: %w", g.first, err)
	}
	idx, mapped := b, false
	ipath := strings.TrimSuffix(g.path, segSuffix) + idxSuffix
	if !s.ro && writeIndexFile(ipath, b) == nil {
		if m, err := mapPath(ipath); err == nil {
			if mix, err := decodeIndex(m); err == nil {
				ix, idx, mapped = mix, m, true
			} else {
				unmapFile(m)
			}
		}
	}
	s.mu.Lock()
	g.ix, g.idx, g.idxMapped, g.act = ix, idx, mapped, nil
	g.data = g.data[:ix.size:ix.size]
	f := g.f
	g.f = nil
	s.mu.Unlock()
	if f != nil {
		f.Close()
	}
	return nil
}

// sealActive seals the active segment, if any, at Close; an empty one
// is removed. A segment whose records were not all indexed (badger
// failed, so the applier stopped short of the journal's end) stays
// unsealed: an index covering part of it would not open, and the next
// Open indexes it from its records.
func (s *recordStore) sealActive() error {
	g := s.last()
	if g == nil || g.act == nil {
		return nil
	}
	if fi, err := g.f.Stat(); err != nil || fi.Size() != g.act.end {
		return nil
	}
	if len(g.act.offs) == 0 {
		s.mu.Lock()
		s.segs = s.segs[:len(s.segs)-1]
		s.stale = append(s.stale, g.mapping)
		s.mu.Unlock()
		g.f.Close()
		if !s.ro {
			os.Remove(g.path)
		}
		return nil
	}
	return s.seal(g)
}

// close releases every mapping. It runs once no reader can be using
// them: when the Ledger is unreachable (a cleanup registered by Open), or
// when Open fails. Reads after Ledger.Close keep working until then.
func (s *recordStore) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		unmapFile(g.mapping)
		if g.idxMapped {
			unmapFile(g.idx)
		}
		if g.f != nil {
			g.f.Close()
		}
	}
	for _, m := range s.stale {
		unmapFile(m)
	}
	s.segs, s.stale = nil, nil
}

// equalIndex reports whether a sealed view's stored index is the one its
// records imply, and if not the first record it gets wrong.
func (v *segView) checkIndex(want []byte) (ok bool, firstBad uint64) {
	if bytes.Equal(v.idx, want) {
		return true, 0
	}
	wix, err := decodeIndex(want)
	if err != nil {
		return false, v.first
	}
	got := v.ix
	bad := uint64(0)
	note := func(i int) {
		if s := v.first + uint64(i); bad == 0 || s < bad {
			bad = s
		}
	}
	n := min(len(got.offs), len(wix.offs))
	for i := 0; i < n; i++ {
		if got.offs[i] != wix.offs[i] || got.ats[i] != wix.ats[i] {
			note(i)
			break
		}
	}
	if len(got.offs) != len(wix.offs) {
		note(n)
	}
	for k := range min(len(got.byTime), len(wix.byTime)) {
		if got.byTime[k] != wix.byTime[k] {
			note(int(min(got.byTime[k], wix.byTime[k])))
			break
		}
	}
	gp, wp := got.principalOf(), wix.principalOf()
	for i := range min(len(gp), len(wp)) {
		if gp[i] != wp[i] {
			note(i)
			break
		}
	}
	if bad == 0 {
		bad = v.first
	}
	return false, bad
}
