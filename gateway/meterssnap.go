package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
)

// The meters snapshot.
//
// At start the gateway rebuilds from the ledger what its meters hold:
// each principal's spend of today, each group's, and the /stats counters
// (restoreMeters). Read from the records, that is every call and
// transaction of the last 50 hours, and it grows with the traffic. A
// meterBook is the same sums kept as of a cut: every call and transaction
// whose At is before the cut, folded in (At, Seq) order - the order the
// full read folds them in, which the capped /stats maps depend on - and
// nothing else. The book is written to the data dir (MetersFile) every
// Options.MetersSnapshotEvery while serving, with the cut a minute
// (metersLag) behind the clock so that calls still running are not yet
// due, and at Close with the cut at the clock (nothing runs any more).
//
// A start trusts the file only if
//
//   - its SHA-256 is one the state seal or mark names (the gateway records
//     there the snapshot it wrote or restored from; stateseal.go), so an
//     edited, truncated or replaced file is not used;
//   - it decodes, and the ledger still holds record Seq with the recorded
//     hash (the same chain, not truncated or replaced);
//   - no record after Seq has an At before the cut
//     (ledger.FirstBefore): the book then holds exactly the records before
//     the cut, and the ones at or after it are all still to read.
//
// Then it folds the records from the cut on (Query{Since: cut}: the last
// run's calls, not the last 50 hours') into the book and restores the
// meters from it. Anything else reads every call and transaction of the
// last 50 hours into an empty book, as before, and logs why.
//
// The meters restored are the same either way: the book holds more than
// the full read does (records older than 50 hours, until pruned), never
// less, and the restore takes from it only what the full read would count:
//
//   - a principal's spend for its spend day when that is today in its
//     zone. A civil date lasts at most 50 hours across the zones from
//     UTC-12 to UTC+14, so no record older than 50 hours has a spend day
//     that is still today anywhere (the spend day is the call's date, the
//     At its start);
//   - a group's spend of the minutes whose date in the group budget's zone
//     is today (zone offsets are whole minutes);
//   - the /stats minutes of the ring (the last 1441) and the 10-minute
//     slices overlapping them, whole: the full read counts the same
//     (restoreStats), every record of each in the same order.
//
// Like the seal, the file is not a secret and proves nothing to anyone
// who can write the data dir; it spares the read, and detects damage,
// edits, staleness and another ledger. Cluster mode has none (its meters
// are the cluster's, restored by every node from its own ledger).

// MetersFile is the meters snapshot's name in the data dir.
const MetersFile = "meters-snapshot"

const (
	// metersWindow is how far back the full read goes: the longest a
	// civil date lasts across zones.
	metersWindow = 50 * time.Hour
	// metersLag is how far behind the clock a snapshot written while
	// serving puts its cut: a call's record has the call's start as At
	// and is appended when it ends.
	metersLag = time.Minute
	// DefaultMetersSnapshotEvery is how often a serving gateway rewrites
	// the meters snapshot when Options.MetersSnapshotEvery is 0.
	DefaultMetersSnapshotEvery = time.Minute
)

var metersMagic = []byte("toolgate meters snapshot\x00\x01")

// dayKey is a principal's spend day.
type dayKey struct{ principal, day string }

// groupMinute is a group's spend in one unix minute.
type groupMinute struct {
	group  string
	minute int64
}

// meterBook is the meters as the ledger's calls and transactions before
// cut give them (see the top of this file). It is used by one goroutine
// at a time: the start, then the gateway's snapshot writer, then Close.
type meterBook struct {
	seq    uint64 // every record with At before cut has a seq up to this
	cut    int64  // unix ns
	spend  map[dayKey]money.Micros
	groups map[groupMinute]money.Micros
	stats  statsBook
	dirty  bool // records folded since it was read or written
}

func newMeterBook() *meterBook {
	return &meterBook{spend: map[dayKey]money.Micros{}, groups: map[groupMinute]money.Micros{}}
}

// add folds one call or transaction record.
func (b *meterBook) add(r *ledger.Record) {
	b.dirty = true
	b.stats.restore(r)
	if r.Type != ledger.TypeCall || r.Cost <= 0 {
		return
	}
	if r.SpendDay != "" {
		k := dayKey{r.Principal, r.SpendDay}
		b.spend[k] = b.spend[k].SatAdd(r.Cost)
	}
	if grp := groupOfRecord(r); grp != "" {
		k := groupMinute{grp, r.At.Unix() / 60}
		b.groups[k] = b.groups[k].SatAdd(r.Cost)
	}
}

// fold adds the calls and transactions with since <= At < until (until
// zero: every one) and moves the cut to until (or past the last At and
// now when until is zero). It returns how many records it read.
func (b *meterBook) fold(led *ledger.Ledger, since, until, now time.Time) (int, error) {
	head, _ := led.Head()
	n, last, lastAt := 0, uint64(0), int64(0)
	for _, typ := range []string{ledger.TypeCall, ledger.TypeTxn} {
		err := led.Query(ledger.Query{Since: since, Until: until, Type: typ}, func(r *ledger.Record) error {
			b.add(r)
			n++
			last, lastAt = max(last, r.Seq), max(lastAt, r.At.UnixNano())
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	b.seq = max(b.seq, head, last)
	if until.IsZero() {
		b.cut = max(now.UnixNano(), lastAt+1)
	} else {
		b.cut = until.UnixNano()
	}
	return n, nil
}

// prune drops what no later restore can take: spend days before the UTC
// date before the cut's (every zone's today is at least that), group
// minutes older than metersWindow.
func (b *meterBook) prune() {
	cut := time.Unix(0, b.cut).UTC()
	oldest := cut.AddDate(0, 0, -1).Format(time.DateOnly)
	for k := range b.spend {
		if k.day < oldest {
			delete(b.spend, k)
		}
	}
	from := cut.Add(-metersWindow).Unix() / 60
	for k := range b.groups {
		if k.minute < from {
			delete(b.groups, k)
		}
	}
}

// apply restores the meters from the book at now: the spend of today of
// every principal and budgeted group, and the /stats counters.
func (g *Gateway) applyMeters(b *meterBook, st *state, now time.Time) {
	for k, v := range b.spend {
		day, _ := meter.DayOf(now, st.effective(st.tierOfName(k.principal), k.principal).Location())
		if day.String() == k.day {
			g.spend.Restore(k.principal, day, v)
		}
	}
	g.applyGroups(b, st, now)
	from := now.Unix()/60 - int64(statsMinutes-1)
	g.stats.merge(&b.stats, from)
}

// restoreMetersBook returns the book the meters restore from at now:
// from the trusted snapshot and the records after its cut, else from the
// last metersWindow of the ledger; from says which ("snapshot" or
// "ledger") and why names the snapshot's refusal.
func (g *Gateway) restoreMetersBook(now time.Time) (b *meterBook, from, hash, why string, n int, err error) {
	if path := g.opts.MetersSnapshot; path != "" {
		b, hash, why = readMeters(path, g.opts.MetersSnapshotTrusted, g.led, now)
		if why == "" {
			n, err = b.fold(g.led, time.Unix(0, b.cut), time.Time{}, now)
			return b, "snapshot", hash, "", n, err
		}
	}
	b = newMeterBook()
	n, err = b.fold(g.led, now.Add(-metersWindow), time.Time{}, now)
	return b, "ledger", "", why, n, err
}

// readMeters reads the snapshot at path and returns it when it may be
// trusted (see the top of this file), else why not.
func readMeters(path string, trusted []string, led *ledger.Ledger, now time.Time) (*meterBook, string, string) {
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, "", "none"
	case err != nil:
		return nil, "", "unreadable: " + err.Error()
	}
	sum := sha256.Sum256(raw)
	hash := hex.EncodeToString(sum[:])
	if !slices.Contains(trusted, hash) {
		return nil, hash, "not the one the state seal or mark names"
	}
	b, recHash, err := decodeMeters(raw)
	if err != nil {
		return nil, hash, "undecodable: " + err.Error()
	}
	if now.UnixNano() < b.cut {
		return nil, hash, "the clock is behind its cut"
	}
	h, ok, err := led.RecordHash(b.seq)
	switch {
	case err != nil:
		return nil, hash, err.Error()
	case !ok && b.seq != 0:
		return nil, hash, fmt.Sprintf("the ledger holds no record %d", b.seq)
	case h != recHash:
		return nil, hash, fmt.Sprintf("record %d's hash differs from the snapshot's (another ledger)", b.seq)
	}
	seq, found, err := led.FirstBefore(b.seq, time.Unix(0, b.cut))
	switch {
	case err != nil:
		return nil, hash, err.Error()
	case found:
		return nil, hash, fmt.Sprintf("record %d, after the snapshot's seq %d, is older than its cut (stale)", seq, b.seq)
	}
	return b, hash, ""
}

// writeMeters folds the records up to cut into the book and writes it to
// path (a temporary name, synced, renamed), returning the file's
// SHA-256. A record appended since the last fold with an At before the
// book's cut (a call that ran longer than metersLag) means the book
// missed it: it is then rebuilt from the last metersWindow of the ledger.
func (g *Gateway) writeMeters(b *meterBook, path string, cut time.Time) (*meterBook, string, error) {
	old, oldCut := b.seq, time.Unix(0, b.cut)
	if cut.After(oldCut) {
		if _, err := b.fold(g.led, oldCut, cut, cut); err != nil {
			return b, "", err
		}
	}
	if !b.dirty {
		return b, "", nil // the file holds it
	}
	seq, found, err := g.led.FirstBefore(old, oldCut)
	if err != nil {
		return b, "", err
	}
	if found {
		g.log.Warn("meters snapshot: a record appended after the last one was older than its cut; rebuilding it from the ledger", "seq", seq)
		b = newMeterBook()
		if _, err := b.fold(g.led, cut.Add(-metersWindow), cut, cut); err != nil {
			return b, "", err
		}
	}
	b.prune()
	recHash := ""
	if b.seq > 0 {
		h, ok, err := g.led.RecordHash(b.seq)
		if err != nil || !ok {
			return b, "", fmt.Errorf("meters snapshot: record %d: %v", b.seq, err)
		}
		recHash = h
	}
	raw, err := encodeMeters(b, recHash)
	if err != nil {
		return b, "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return b, "", err
	}
	if err := syncFile(tmp); err != nil {
		return b, "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return b, "", err
	}
	b.dirty = false
	sum := sha256.Sum256(raw)
	return b, hex.EncodeToString(sum[:]), nil
}

// MetersSnapshot returns the SHA-256 of the meters snapshot this gateway
// restored from or last wrote ("" when none): the state seal names it.
func (g *Gateway) MetersSnapshot() string {
	if h := g.metersHash.Load(); h != nil {
		return *h
	}
	return ""
}

// MetersFrom says where the start restored the meters from: "snapshot",
// "ledger" or "" (no snapshot configured).
func (g *Gateway) MetersFrom() string { return g.metersFrom }

// snapshotMeters writes the meters snapshot with its cut at cut and has
// the state mark name it.
func (g *Gateway) snapshotMeters(cut time.Time) {
	t0 := time.Now()
	b, hash, err := g.writeMeters(g.meters, g.opts.MetersSnapshot, cut)
	g.meters = b
	if err != nil {
		g.log.Warn("meters snapshot not written; the next start reads the meters' records since it", "err", err)
		return
	}
	if hash == "" {
		return
	}
	g.metersHash.Store(&hash)
	g.marker.MetersSnapshot(hash)
	g.log.Debug("meters snapshot written", "sha256", hash[:16], "seq", b.seq, "ms", time.Since(t0).Milliseconds())
}

// Encoding: the magic, then uvarints and varints, strings as a length and
// bytes, maps as a count and entries.

func encodeMeters(b *meterBook, recHash string) ([]byte, error) {
	var h [32]byte
	if recHash != "" {
		if _, err := hex.Decode(h[:], []byte(recHash)); err != nil {
			return nil, err
		}
	}
	e := append([]byte(nil), metersMagic...)
	e = binary.AppendUvarint(e, b.seq)
	e = append(e, h[:]...)
	e = binary.AppendVarint(e, b.cut)
	e = binary.AppendUvarint(e, uint64(len(b.spend)))
	for k, v := range b.spend {
		e = appendMStr(appendMStr(e, k.principal), k.day)
		e = binary.AppendVarint(e, int64(v))
	}
	e = binary.AppendUvarint(e, uint64(len(b.groups)))
	for k, v := range b.groups {
		e = binary.AppendVarint(appendMStr(e, k.group), k.minute)
		e = binary.AppendVarint(e, int64(v))
	}
	var ms []*statMinute
	for i := range b.stats.minutes {
		if s := &b.stats.minutes[i]; s.outcomes != nil {
			ms = append(ms, s)
		}
	}
	e = binary.AppendUvarint(e, uint64(len(ms)))
	for _, s := range ms {
		e = binary.AppendVarint(e, s.minute)
		e = binary.AppendVarint(e, int64(s.spend))
		e = binary.AppendVarint(e, int64(s.revenue))
		e = appendCounts(e, s.outcomes)
		e = appendCounts(e, s.reasons)
		e = binary.AppendUvarint(e, uint64(len(s.tools)))
		for t, c := range s.tools {
			e = appendMStr(e, t)
			e = binary.AppendVarint(binary.AppendVarint(binary.AppendVarint(e, c.calls), c.denied), int64(c.spend))
		}
	}
	var ss []*statSlice
	for i := range b.stats.slices {
		if s := &b.stats.slices[i]; s.principals != nil {
			ss = append(ss, s)
		}
	}
	e = binary.AppendUvarint(e, uint64(len(ss)))
	for _, s := range ss {
		e = binary.AppendVarint(e, s.slice)
		e = binary.AppendUvarint(e, uint64(len(s.principals)))
		for p, c := range s.principals {
			e = appendMStr(e, p)
			e = binary.AppendVarint(binary.AppendVarint(binary.AppendVarint(e, c.calls), c.denied), int64(c.spend))
		}
	}
	return e, nil
}

func appendMStr(e []byte, s string) []byte {
	return append(binary.AppendUvarint(e, uint64(len(s))), s...)
}

func appendCounts(e []byte, m map[string]int64) []byte {
	e = binary.AppendUvarint(e, uint64(len(m)))
	for k, n := range m {
		e = binary.AppendVarint(appendMStr(e, k), n)
	}
	return e
}

// metersReader decodes; the first error sticks.
type metersReader struct {
	b   []byte
	err error
}

func (d *metersReader) fail(what string) {
	if d.err == nil {
		d.err = errors.New(what)
	}
	d.b = nil
}

func (d *metersReader) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *metersReader) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an entry count, each entry at least least bytes.
func (d *metersReader) count(least int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/least) {
		d.fail("count beyond the file")
		return 0
	}
	return int(n)
}

func (d *metersReader) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("truncated")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *metersReader) counts() map[string]int64 {
	n := d.count(2)
	m := make(map[string]int64, n)
	for range n {
		k := d.str()
		m[k] = d.varint()
	}
	return m
}

func decodeMeters(raw []byte) (*meterBook, string, error) {
	if !bytes.HasPrefix(raw, metersMagic) {
		return nil, "", errors.New("not a meters snapshot of this version")
	}
	d := &metersReader{b: raw[len(metersMagic):]}
	b := newMeterBook()
	b.seq = d.uvarint()
	if len(d.b) < 32 {
		return nil, "", errors.New("truncated")
	}
	var recHash string
	if h := d.b[:32]; !bytes.Equal(h, make([]byte, 32)) {
		recHash = hex.EncodeToString(h)
	}
	d.b = d.b[32:]
	b.cut = d.varint()
	for range d.count(3) {
		k := dayKey{d.str(), d.str()}
		b.spend[k] = money.Micros(d.varint())
	}
	for range d.count(3) {
		k := groupMinute{d.str(), d.varint()}
		b.groups[k] = money.Micros(d.varint())
	}
	for range d.count(6) {
		m := d.varint()
		if m < 0 || b.stats.minutes[m%int64(statsMinutes)].outcomes != nil {
			d.fail("minute out of place")
			break
		}
		s := b.stats.minute(m)
		s.spend, s.revenue = money.Micros(d.varint()), money.Micros(d.varint())
		s.outcomes, s.reasons = d.counts(), d.counts()
		for range d.count(4) {
			t := d.str()
			s.tools[t] = statCount{calls: d.varint(), denied: d.varint(), spend: money.Micros(d.varint())}
		}
	}
	for range d.count(2) {
		n := d.varint()
		if n < 0 || b.stats.slices[n%int64(statsSlices)].principals != nil {
			d.fail("slice out of place")
			break
		}
		s := b.stats.slice(n * statsSliceMinutes)
		for range d.count(4) {
			p := d.str()
			s.principals[p] = statCount{calls: d.varint(), denied: d.varint(), spend: money.Micros(d.varint())}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, "", d.err
	}
	return b, recHash, nil
}
