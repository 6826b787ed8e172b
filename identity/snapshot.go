package identity

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/dgraph-io/badger/v4"
)

// The keys snapshot.
//
// Loading a million keys means decoding a million JSON rows: most of a
// start's CPU. A snapshot is the decoded form of every key row, written
// by the gateway (WriteSnapshot) from one badger read: the keys as
// fixed-size records and their text, in row order, cut into groups of
// snapGroupRows (128) rows; for each group the row key it starts at, its
// number of rows, the SHA-256 of its rows exactly as stored (key and
// value bytes) and the sum of its keys' state hashes (Digest's terms).
//
// OpenSnapshot uses it only for rows that are provably still what it was
// made from: it reads every key row from badger (without decoding it),
// hashes each group's rows as they are now and takes a group's keys from
// the snapshot only if the hash and the count are the snapshot's; any
// other group (a key created, revoked, restored, edited or damaged since,
// by anyone) is decoded from its rows as Open does. The snapshot's own
// content is trusted only when its SHA-256 is one the caller vouches
// for: the gateway records the hash of the snapshot it wrote in its
// state mark and seal, and passes the recorded ones back at start. A
// snapshot edited, truncated or swapped while the gateway was down has
// another hash and is not used (every row is decoded, as without one),
// just as an edited key row changes the keys' digest the mark and seal
// record. So the keys in memory are always exactly what decoding every
// row would give (the digest, the state checks after it and
// authentication see no difference), and the snapshot only saves the
// decoding of the groups nothing changed.
//
// File layout (integers little-endian), named "keys-snapshot-" and the
// first 16 hex digits of its SHA-256:
//
//	groups, each: count × record (64 bytes: digest 32, created, expires,
//	        revoked int64, then uint16 lengths of id, name, hint, and 2
//	        zero bytes), then the group's text: for each key
//	        "key:" id name hint
//	table:  per group: uint16 length and the row key it starts at (the
//	        first group: the prefix), uint32 count, uint32 text length,
//	        rows SHA-256, keys' state-hash sum
//	tail:   uint64 keys, uint32 groups, uint64 table offset, sum of all
//	        groups' sums (32), snapshotMagic

const (
	snapshotMagic  = "toolgate-keys-v1" // 16 bytes
	snapshotPrefix = "keys-snapshot-"
	snapRecordSize = 64
	snapGroupRows  = 128 // a changed key costs the decoding of its group's rows
	snapTailSize   = 8 + 4 + 8 + 32 + len(snapshotMagic)
)

// SnapshotFile returns the file name of the snapshot whose SHA-256 is
// hash (hex).
func SnapshotFile(hash string) string {
	if len(hash) < 16 {
		return snapshotPrefix + hash
	}
	return snapshotPrefix + hash[:16]
}

// Loaded says how OpenSnapshot loaded the keys.
type Loaded struct {
	From      string // "snapshot" (every group from it), "snapshot+rows" (some groups decoded), or "rows"
	Snapshot  string // SHA-256 (hex) of the snapshot used; "" when none
	Decoded   int    // rows decoded from badger
	Groups    int    // groups in the snapshot
	Stale     int    // of them, groups whose rows changed since it was written
	WhyNot    string // why no snapshot (or not the first one recorded) was used
	SnapKeys  int    // keys taken from the snapshot
	TotalRows int    // key rows in badger
}

// snapGroup is one group of the table.
type snapGroup struct {
	lower    []byte
	count    int
	textLen  int
	rowsHash [32]byte
	sum      digestSum
	off      int64 // offset of its records in the file
}

// rowHasher hashes rows as WriteSnapshot and OpenSnapshot do.
type rowHasher struct {
	h   hash.Hash
	buf [2 * binary.MaxVarintLen64]byte
}

func newRowHasher() *rowHasher { return &rowHasher{h: sha256.New()} }

func (r *rowHasher) row(key, value []byte) {
	n := binary.PutUvarint(r.buf[:], uint64(len(key)))
	r.h.Write(r.buf[:n])
	r.h.Write(key)
	n = binary.PutUvarint(r.buf[:], uint64(len(value)))
	r.h.Write(r.buf[:n])
	r.h.Write(value)
}

func (r *rowHasher) sum() (out [32]byte) {
	r.h.Sum(out[:0])
	r.h.Reset()
	return out
}

// SnapshotState returns the SHA-256 (hex) of the snapshot this store was
// loaded from or last wrote ("" when none), and whether it is current:
// no key changed through this store since, and it was made from exactly
// the rows the store holds.
func (s *Store) SnapshotState() (hash string, current bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.snapHash, s.snapHash != "" && !s.snapDirty
}

// WriteSnapshot writes a snapshot of the key rows into dir, from one
// badger read, and returns its SHA-256 (hex). Key changes may run
// meanwhile: the snapshot is of the rows as they were when it began
// (SnapshotState then reports it not current). It keeps the snapshot the
// store was loaded from or last wrote (a state mark may still name it)
// and removes older ones.
func (s *Store) WriteSnapshot(dir string) (string, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.RLock()
	txn := s.db.NewTransaction(false) // after every change so far, before any later one
	gen, prev := s.gen, s.snapHash
	s.mu.RUnlock()
	defer txn.Discard()

	tmp := filepath.Join(dir, snapshotPrefix+"tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("keys snapshot: %w", err)
	}
	defer os.Remove(tmp) // after the rename: nothing
	defer f.Close()
	fileHash := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, fileHash), 1<<20)
	var (
		table  []byte
		total  digestSum
		nKeys  int
		off    int64
		recs   = make([]byte, 0, snapGroupRows*snapRecordSize)
		text   = make([]byte, 0, snapGroupRows*48)
		count  int
		lower  = []byte(s.prefix)
		gsum   digestSum
		rows   = newRowHasher()
		groups int
	)
	flush := func() error {
		if count == 0 && groups > 0 {
			return nil
		}
		if len(lower) > 0xffff || len(text) > 0xffffffff {
			return errors.New("row key or group too long")
		}
		if _, err := w.Write(recs); err != nil {
			return err
		}
		if _, err := w.Write(text); err != nil {
			return err
		}
		table = binary.LittleEndian.AppendUint16(table, uint16(len(lower)))
		table = append(table, lower...)
		table = binary.LittleEndian.AppendUint32(table, uint32(count))
		table = binary.LittleEndian.AppendUint32(table, uint32(len(text)))
		h := rows.sum()
		table = append(table, h[:]...)
		table = gsum.append(table)
		total.addSum(&gsum)
		off += int64(len(recs) + len(text))
		groups++
		recs, text, count, gsum = recs[:0], text[:0], 0, digestSum{}
		return nil
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(s.prefix)})
	var k Key
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if count == snapGroupRows {
			if err := flush(); err != nil {
				it.Close()
				return "", fmt.Errorf("keys snapshot: %w", err)
			}
			lower = item.KeyCopy(nil)
		}
		err := item.Value(func(v []byte) error {
			// The stored form is read in place (its strings alias v, used
			// only inside this function); any other through decodeStored.
			var f storedFields
			if parseFast(v, &f) == nil {
				k = Key{ID: unsafeString(f.id), Name: unsafeString(f.name), Hint: unsafeString(f.hint), Hash: f.hash,
					created: f.created, expires: f.expires, revoked: f.revoked}
			} else if err := decodeStored(v, &k); err != nil {
				return err
			}
			if string(item.Key()[len(s.prefix):]) != k.ID {
				return errors.New("its row key is not its key_id")
			}
			if len(k.ID) > 0xffff || len(k.Name) > 0xffff || len(k.Hint) > 0xffff {
				return errors.New("a field is too long")
			}
			rows.row(item.Key(), v)
			recs = appendSnapRecord(recs, &k)
			text = append(text, "key:"...)
			text = append(text, k.ID...)
			text = append(text, k.Name...)
			text = append(text, k.Hint...)
			gsum.add(&k)
			return nil
		})
		k = Key{}
		if err != nil {
			it.Close()
			return "", fmt.Errorf("keys snapshot: key %s: %w", item.Key(), err)
		}
		count++
		nKeys++
	}
	it.Close()
	if err := flush(); err != nil {
		return "", fmt.Errorf("keys snapshot: %w", err)
	}
	tail := table
	tail = binary.LittleEndian.AppendUint64(tail, uint64(nKeys))
	tail = binary.LittleEndian.AppendUint32(tail, uint32(groups))
	tail = binary.LittleEndian.AppendUint64(tail, uint64(off))
	tail = total.append(tail)
	tail = append(tail, snapshotMagic...)
	if _, err := w.Write(tail); err != nil {
		return "", fmt.Errorf("keys snapshot: %w", err)
	}
	if err := w.Flush(); err != nil {
		return "", fmt.Errorf("keys snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("keys snapshot: %w", err)
	}
	hash := hex.EncodeToString(fileHash.Sum(nil))
	if err := os.Rename(tmp, filepath.Join(dir, SnapshotFile(hash))); err != nil {
		return "", fmt.Errorf("keys snapshot: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return "", fmt.Errorf("keys snapshot: %w", err)
		}
	}
	s.mu.Lock()
	s.snapHash, s.snapDirty = hash, s.gen != gen
	s.mu.Unlock()
	removeSnapshots(dir, hash, prev)
	return hash, nil
}

// removeSnapshots removes the snapshots in dir other than keep.
func removeSnapshots(dir string, keep ...string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	kept := map[string]bool{}
	for _, h := range keep {
		if h != "" {
			kept[SnapshotFile(h)] = true
		}
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, snapshotPrefix) && !kept[n] && n != snapshotPrefix+"tmp" {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

func appendSnapRecord(b []byte, k *Key) []byte {
	b = append(b, k.Hash[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(k.created))
	b = binary.LittleEndian.AppendUint64(b, uint64(k.expires))
	b = binary.LittleEndian.AppendUint64(b, uint64(k.revoked))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(k.ID)))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(k.Name)))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(k.Hint)))
	return append(b, 0, 0)
}

func (d *digestSum) append(b []byte) []byte {
	for _, l := range d {
		b = binary.LittleEndian.AppendUint64(b, l)
	}
	return b
}

func (d *digestSum) read(b []byte) {
	for i := range d {
		d[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
}

// OpenSnapshot is Open, taking the keys of every group of rows unchanged
// since the snapshot in dir whose SHA-256 is one of trusted (the first
// one found) from it instead of decoding them (see the top of this file).
// Without a usable snapshot it loads every row as Open does; Loaded says
// which was done and why.
func OpenSnapshot(db *badger.DB, dir string, trusted []string) (*Store, Loaded, error) {
	why := "none recorded"
	for _, h := range trusted {
		if h == "" {
			continue
		}
		s, l, err := openSnapshot(db, keyPrefix, filepath.Join(dir, SnapshotFile(h)), h)
		if err == nil {
			s.snapHash, s.snapDirty = h, l.Stale > 0
			if why != "none recorded" {
				l.WhyNot = why // of the ones tried before
			}
			return s, l, nil
		}
		// Missing, damaged, edited or not matching: the next one, or the rows decide.
		if why == "none recorded" {
			why = ""
		} else {
			why += "; "
		}
		why += SnapshotFile(h) + ": " + err.Error()
	}
	s, err := Open(db)
	if err != nil {
		return nil, Loaded{}, err
	}
	s.snapDirty = true
	return s, Loaded{From: "rows", WhyNot: why, Decoded: s.Len(), TotalRows: s.Len()}, nil
}

// errSnapshot marks a snapshot that is not usable (Open then decodes
// every row).
var errSnapshot = errors.New("keys snapshot")

func snapErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errSnapshot, fmt.Sprintf(format, args...))
}

// snapFile is a snapshot's table, read from its end.
type snapFile struct {
	f       *os.File
	size    int64
	nKeys   int
	groups  []snapGroup
	sum     digestSum
	tableAt int64
	meta    []byte // the table and the tail, as read (hashed last)
}

func readSnapTable(path, prefix string) (*snapFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	sf := &snapFile{f: f, size: st.Size()}
	if err := sf.parse(prefix); err != nil {
		f.Close()
		return nil, err
	}
	return sf, nil
}

func (sf *snapFile) parse(prefix string) error {
	if sf.size < int64(snapTailSize) {
		return snapErr("truncated")
	}
	tail := make([]byte, snapTailSize)
	if _, err := sf.f.ReadAt(tail, sf.size-int64(snapTailSize)); err != nil {
		return snapErr("read: %v", err)
	}
	if string(tail[snapTailSize-len(snapshotMagic):]) != snapshotMagic {
		return snapErr("not a keys snapshot of this version")
	}
	nKeys := binary.LittleEndian.Uint64(tail)
	nGroups := binary.LittleEndian.Uint32(tail[8:])
	tableAt := binary.LittleEndian.Uint64(tail[12:])
	sf.sum.read(tail[20:])
	if tableAt > uint64(sf.size)-uint64(snapTailSize) || nKeys > 1<<32 || uint64(nGroups) > nKeys/snapGroupRows+1 ||
		uint64(sf.size)-tableAt > uint64(nGroups)*(74+1<<10)+uint64(snapTailSize) { // row keys of up to 1 KiB (ids are ~20 bytes)
		return snapErr("bad tail")
	}
	sf.nKeys, sf.tableAt = int(nKeys), int64(tableAt)
	sf.meta = make([]byte, sf.size-sf.tableAt)
	if _, err := sf.f.ReadAt(sf.meta, sf.tableAt); err != nil {
		return snapErr("read: %v", err)
	}
	t := sf.meta[:len(sf.meta)-snapTailSize]
	var off int64
	keys := 0
	for g := range int(nGroups) {
		if len(t) < 2 {
			return snapErr("bad table")
		}
		n := int(binary.LittleEndian.Uint16(t))
		if len(t) < 2+n+8+64 {
			return snapErr("bad table")
		}
		gr := snapGroup{lower: t[2 : 2+n], count: int(binary.LittleEndian.Uint32(t[2+n:])),
			textLen: int(binary.LittleEndian.Uint32(t[6+n:])), off: off}
		copy(gr.rowsHash[:], t[10+n:])
		gr.sum.read(t[42+n:])
		t = t[74+n:]
		if gr.count > snapGroupRows || (gr.count < snapGroupRows && g != int(nGroups)-1) || !bytes.HasPrefix(gr.lower, []byte(prefix)) ||
			(g == 0) != (len(gr.lower) == len(prefix)) || (g > 0 && bytes.Compare(sf.groups[g-1].lower, gr.lower) >= 0) {
			return snapErr("bad table")
		}
		off += int64(gr.count*snapRecordSize + gr.textLen)
		keys += gr.count
		sf.groups = append(sf.groups, gr)
	}
	if len(t) != 0 || off != sf.tableAt || keys != sf.nKeys {
		return snapErr("bad table")
	}
	return nil
}

// openSnapshot loads the keys under prefix with the snapshot at path,
// whose SHA-256 must be want; an error when it cannot be used.
func openSnapshot(db *badger.DB, prefix, path, want string) (*Store, Loaded, error) {
	sf, err := readSnapTable(path, prefix)
	if err != nil {
		return nil, Loaded{}, err
	}
	defer sf.f.Close()
	l := Loaded{Snapshot: want, Groups: len(sf.groups)}

	// The snapshot's keys, in slabs in file order, read and hashed on one
	// goroutine while two others hash the rows as they are now (and
	// decode the groups whose rows changed).
	var slabs []*slab
	var fileErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		slabs, fileErr = sf.readSlabs(want)
	}()

	// The rows: each half of the groups by its own goroutine, in one read
	// transaction (the same rows for both).
	txn := db.NewTransaction(false)
	defer txn.Discard()
	changed := make([]*changedGroup, len(sf.groups)) // nil: the rows are the snapshot's
	var rowErrs [2]error
	var rowsSeen [2]int
	half := len(sf.groups) / 2
	for r := range 2 {
		from, to := 0, half
		if r == 1 {
			from, to = half, len(sf.groups)
		}
		if from == to {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rowsSeen[r], rowErrs[r] = sf.hashRows(txn, prefix, from, to, changed)
		}()
	}
	wg.Wait()
	if err := errors.Join(fileErr, rowErrs[0], rowErrs[1]); err != nil {
		return nil, Loaded{}, err
	}
	l.TotalRows = rowsSeen[0] + rowsSeen[1]

	s := &Store{db: db, prefix: prefix, idx: newKeyIndex(l.TotalRows)}
	sum := sf.sum
	for g, c := range changed {
		if c != nil {
			l.Stale++
			l.Decoded += len(c.keys)
			sum.subSum(&sf.groups[g].sum)
			sum.addSum(&c.sum)
		}
	}
	l.SnapKeys = l.TotalRows - l.Decoded
	// The slabs as read; a changed group's keys replace its snapshot keys
	// in place (left over positions stay empty, keys beyond them go at
	// the end), so that nothing is copied.
	for i, sl := range slabs {
		s.idx.addSlab(sl, min(slabSize, sf.nKeys-i*slabSize))
	}
	pos := 0
	holes := map[uint32]bool{}
	for g, gr := range sf.groups {
		if c := changed[g]; c != nil {
			for i := range gr.count {
				k := s.idx.at(uint32(pos + i))
				if i < len(c.keys) {
					*k = c.keys[i]
				} else {
					*k = Key{} // a hole: no Principal (fill skips it)
					holes[uint32(pos+i)] = true
				}
			}
			for i := gr.count; i < len(c.keys); i++ {
				slot, _ := s.idx.reserve()
				*slot = c.keys[i]
			}
		}
		pos += gr.count
	}
	for pos := range s.idx.n {
		if !holes[pos] {
			s.principal(s.idx.at(pos)) // every key then has a Principal
		}
	}
	if !s.idx.fill() {
		return nil, Loaded{}, snapErr("two keys of one id or digest") // Open decides which one wins
	}
	s.idx.sum = sum
	l.From = "snapshot"
	if l.Stale > 0 {
		l.From = "snapshot+rows"
	}
	return s, l, nil
}

// changedGroup is a group whose rows differ from the snapshot's: its
// keys decoded from the rows, and their digest terms.
type changedGroup struct {
	keys []Key
	sum  digestSum
}

// readSlabs reads the snapshot's keys into slabs, in file order,
// checking that the file's SHA-256 is want.
func (sf *snapFile) readSlabs(want string) ([]*slab, error) {
	h := sha256.New()
	r := bufio.NewReaderSize(io.TeeReader(io.NewSectionReader(sf.f, 0, sf.tableAt), h), 1<<20)
	recs := make([]byte, snapGroupRows*snapRecordSize)
	slabs := make([]*slab, 0, (sf.nKeys+slabSize-1)/slabSize)
	pos := 0
	for g := range sf.groups {
		gr := &sf.groups[g]
		rb := recs[:gr.count*snapRecordSize]
		if _, err := io.ReadFull(r, rb); err != nil {
			return nil, snapErr("read: %v", err)
		}
		tb := make([]byte, gr.textLen)
		if _, err := io.ReadFull(r, tb); err != nil {
			return nil, snapErr("read: %v", err)
		}
		text := unsafeString(tb) // one string per group for the keys' ids, names and hints; tb is never written again
		p := 0
		for i := range gr.count {
			if pos>>slabBits == len(slabs) {
				slabs = append(slabs, new(slab))
			}
			k := &slabs[pos>>slabBits][pos&(slabSize-1)]
			pos++
			b := rb[i*snapRecordSize:]
			copy(k.Hash[:], b[:32])
			k.created = int64(binary.LittleEndian.Uint64(b[32:]))
			k.expires = int64(binary.LittleEndian.Uint64(b[40:]))
			k.revoked = int64(binary.LittleEndian.Uint64(b[48:]))
			ni, nn, nh := int(binary.LittleEndian.Uint16(b[56:])), int(binary.LittleEndian.Uint16(b[58:])), int(binary.LittleEndian.Uint16(b[60:]))
			end := p + len("key:") + ni + nn + nh
			if end > len(text) || text[p:p+len("key:")] != "key:" {
				return nil, snapErr("bad group %d", g)
			}
			q := p + len("key:") + ni
			k.Principal, k.ID, k.Name, k.Hint = text[p:q], text[p+len("key:"):q], text[q:q+nn], text[q+nn:end]
			p = end
		}
		if p != len(text) {
			return nil, snapErr("bad group %d", g)
		}
	}
	h.Write(sf.meta)
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return nil, snapErr("its SHA-256 is not the one recorded (damaged or edited since it was written)")
	}
	return slabs, nil
}

// hashRows hashes the rows of groups [from, to) as they are in txn, and
// decodes those of each group that differ from the snapshot's into
// changed (as Open decodes them); it returns the number of rows read.
func (sf *snapFile) hashRows(txn *badger.Txn, prefix string, from, to int, changed []*changedGroup) (int, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
	defer it.Close()
	var dec *badger.Iterator // for the changed groups, made when one is
	defer func() {
		if dec != nil {
			dec.Close()
		}
	}()
	rows := newRowHasher()
	g, n, seen := from, 0, 0
	end := func() error {
		if sum := rows.sum(); n == sf.groups[g].count && sum == sf.groups[g].rowsHash { // sum resets the hasher
			return nil
		}
		if dec == nil {
			dec = txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		}
		c, err := decodeGroup(dec, prefix, sf.groups, g)
		changed[g] = c
		return err
	}
	var next []byte
	if to < len(sf.groups) {
		next = sf.groups[to].lower
	}
	for it.Seek(sf.groups[from].lower); it.Valid(); it.Next() {
		item := it.Item()
		key := item.Key()
		if next != nil && bytes.Compare(key, next) >= 0 {
			break
		}
		for g+1 < to && bytes.Compare(key, sf.groups[g+1].lower) >= 0 {
			if err := end(); err != nil {
				return 0, err
			}
			g, n = g+1, 0
		}
		if err := item.Value(func(v []byte) error { rows.row(key, v); return nil }); err != nil {
			return 0, fmt.Errorf("key %s: %w", key, err)
		}
		n++
		seen++
	}
	for ; g < to; g, n = g+1, 0 {
		if err := end(); err != nil {
			return 0, err
		}
	}
	return seen, nil
}

// decodeGroup decodes the rows of group g with it as Open does.
func decodeGroup(it *badger.Iterator, prefix string, groups []snapGroup, g int) (*changedGroup, error) {
	var next []byte
	if g+1 < len(groups) {
		next = groups[g+1].lower
	}
	c := &changedGroup{}
	for it.Seek(groups[g].lower); it.Valid(); it.Next() {
		item := it.Item()
		if next != nil && bytes.Compare(item.Key(), next) >= 0 {
			break
		}
		var k Key
		if err := item.Value(func(v []byte) error { return decodeStored(v, &k) }); err != nil {
			return nil, fmt.Errorf("load keys: key %s: %w", item.Key(), err)
		}
		if string(item.Key()[len(prefix):]) != k.ID {
			return nil, snapErr("key %s: its row key is not its key_id", item.Key()) // Open loads it as it is
		}
		c.sum.add(&k)
		c.keys = append(c.keys, k)
	}
	return c, nil
}

// unsafeString views b as a string; b must not change while it is used.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
