package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The journal is the ledger's write-ahead log: append-only segment files
// in the data dir named ledger-<first seq, 20 decimal digits>.wal. The
// writer appends each group as one frame with one write(2) and answers
// its callers; the applier copies journaled groups into badger later and
// deletes a segment once badger holds (and has synced) all of it.
//
//	frame := length u32 LE | crc u32 LE | body        length = len(body) > 0
//	body  := { uvarint n | n bytes: a stored record (binary.go) }...
//
// crc is CRC-32C (Castagnoli) of body. A segment holds consecutive frames
// whose records continue the chain from the segment's first seq. A group
// is one frame, so a crash keeps or loses the records of one Append
// together. Only the last frame of the last segment can be torn (the
// write of an unanswered group cut short); recovery drops it.
const (
	journalPrefix     = "ledger-"
	journalSuffix     = ".wal"
	frameHeader       = 8
	maxFrame          = 1 << 30
	defaultMaxBacklog = 100_000
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errJournalCut marks a journal that cannot be cut back after a failed
// append; the ledger then refuses records until it is reopened.
var errJournalCut = errors.New("cut the journal back")

type segment struct {
	first uint64
	path  string
}

// journal is the open segment set. The writer goroutine alone writes,
// rotates and syncs (f, off, dirty); the applier removes fully applied
// segments from the front of segs under mu.
type journal struct {
	dir      string
	syncDir  bool // fsync the dir after creating or removing a segment (always; a field for clarity)
	segBytes int64

	mu   sync.Mutex
	segs []segment // in seq order; the last one is being written

	f     *os.File
	off   int64
	dirty bool // written since the last sync
}

func segmentName(first uint64) string {
	return fmt.Sprintf("%s%020d%s", journalPrefix, first, journalSuffix)
}

// listSegments returns the journal segments in dir, in seq order.
func listSegments(dir string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, journalPrefix) || !strings.HasSuffix(name, journalSuffix) {
			continue
		}
		num := strings.TrimSuffix(strings.TrimPrefix(name, journalPrefix), journalSuffix)
		first, err := strconv.ParseUint(num, 10, 64)
		if err != nil || len(num) != 20 || first == 0 {
			return nil, fmt.Errorf("journal: unexpected file %s", name)
		}
		segs = append(segs, segment{first: first, path: filepath.Join(dir, name)})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	return segs, nil
}

// parseFrames splits a segment's bytes into frame bodies. A bad frame
// (short, bad length or checksum) is a torn tail when no valid frame
// starts anywhere after it: then parseFrames returns the frames before it
// and torn = true. A bad frame followed by a valid one is corruption (a
// damaged length field must not hide the frames behind it).
func parseFrames(b []byte) (bodies [][]byte, torn bool, err error) {
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
			case crc32.Checksum(rest[frameHeader:frameHeader+n], castagnoli) != binary.LittleEndian.Uint32(rest[4:]):
				bad = "checksum mismatch"
			}
		}
		if bad == "" {
			bodies = append(bodies, rest[frameHeader:frameHeader+n])
			off += frameHeader + n
			continue
		}
		if p := validFrameAfter(b, off); p >= 0 {
			return bodies, false, fmt.Errorf("frame at offset %d: %s (a valid frame follows at %d)", off, bad, p)
		}
		return bodies, true, nil
	}
	return bodies, false, nil
}

// validFrameAfter returns the offset of the first valid frame that starts
// after off, or -1. It runs only when Open meets a bad frame.
func validFrameAfter(b []byte, off int) int {
	for p := off + 1; p+frameHeader < len(b); p++ {
		n := int(binary.LittleEndian.Uint32(b[p:]))
		if n == 0 || n > len(b)-p-frameHeader {
			continue
		}
		if crc32.Checksum(b[p+frameHeader:p+frameHeader+n], castagnoli) == binary.LittleEndian.Uint32(b[p+4:]) {
			return p
		}
	}
	return -1
}

// frameRecords splits a frame body into stored records.
func frameRecords(body []byte, fn func(v []byte) error) error {
	for len(body) > 0 {
		n, k := binary.Uvarint(body)
		if k <= 0 || n == 0 || n > uint64(len(body)-k) {
			return errBinary
		}
		if err := fn(body[k : k+int(n)]); err != nil {
			return err
		}
		body = body[k+int(n):]
	}
	return nil
}

// create starts a new, empty segment whose first record will be first.
// Any file of that name holds only unanswered records (everything from
// first on is), so it is truncated.
func (j *journal) create(first uint64) error {
	path := filepath.Join(j.dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := j.syncDirectory(); err != nil {
		f.Close()
		return err
	}
	if j.f != nil {
		// The finished segment is synced once, whatever the sync mode, so
		// that only the last segment can lose a tail to a machine crash.
		if err := datasync(j.f); err != nil {
			f.Close()
			return fmt.Errorf("journal: sync: %w", err)
		}
		j.f.Close()
	}
	j.f, j.off, j.dirty = f, 0, false
	j.mu.Lock()
	if n := len(j.segs); n > 0 && j.segs[n-1].first == first {
		j.segs[n-1].path = path
	} else {
		j.segs = append(j.segs, segment{first: first, path: path})
	}
	j.mu.Unlock()
	return nil
}

// append writes one frame (header included) whose first record is
// first, rotating to a new segment first when the current one is full,
// and with sync fdatasyncs it. On failure the segment is cut back to its
// previous end, so the next group can reuse the seqs; if even that fails
// the error wraps errJournalCut.
func (j *journal) append(frame []byte, first uint64, sync bool) error {
	if j.f == nil || j.off >= j.segBytes && j.off > 0 {
		if err := j.create(first); err != nil {
			return err
		}
	}
	_, err := j.f.WriteAt(frame, j.off)
	if err == nil && sync {
		err = datasync(j.f)
	}
	if err != nil {
		if terr := j.f.Truncate(j.off); terr != nil {
			return fmt.Errorf("journal: %v; %w: %v", err, errJournalCut, terr)
		}
		return fmt.Errorf("journal: %w", err)
	}
	j.off += int64(len(frame))
	j.dirty = !sync
	return nil
}

// sync fdatasyncs the current segment if it was written since the last
// sync.
func (j *journal) sync() error {
	if j.f == nil || !j.dirty {
		return nil
	}
	if err := datasync(j.f); err != nil {
		return fmt.Errorf("journal: sync: %w", err)
	}
	j.dirty = false
	return nil
}

// applied returns the segments, all but the one being written, whose
// records all have seq <= seq.
func (j *journal) applied(seq uint64) []segment {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for n+1 < len(j.segs) && j.segs[n+1].first-1 <= seq {
		n++
	}
	return append([]segment(nil), j.segs[:n]...)
}

// remove deletes the first len(segs) segments, which applied returned.
func (j *journal) remove(segs []segment) error {
	for _, s := range segs {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("journal: %w", err)
		}
		j.mu.Lock()
		j.segs = j.segs[1:]
		j.mu.Unlock()
	}
	return j.syncDirectory()
}

// close closes the segment being written; with removeAll (everything is
// applied and synced) it deletes every segment, leaving no journal.
func (j *journal) close(removeAll bool) error {
	var err error
	if j.f != nil {
		err = j.f.Close()
		j.f = nil
	}
	if err != nil || !removeAll {
		return err
	}
	j.mu.Lock()
	segs := append([]segment(nil), j.segs...)
	j.mu.Unlock()
	return j.remove(segs)
}

func (j *journal) syncDirectory() error {
	if !j.syncDir {
		return nil
	}
	d, err := os.Open(j.dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("journal: sync dir: %w", err)
	}
	return nil
}

func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
