package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// The journal is the ledger's write-ahead log and, since segments are
// kept, its record store: segment files DATA/ledger/<first seq, 20 decimal
// digits>.seg (segment.go). The writer appends each group as one frame
// with one write(2) and answers its callers; the applier indexes the
// frames and seals each finished segment with its index file.
//
//	frame := length u32 LE | crc u32 LE | body        length = len(body) > 0
//	body  := { uvarint n | n bytes: a stored record (binary.go) }...
//
// crc is CRC-32C (Castagnoli) of body. A segment holds consecutive frames
// whose records continue the chain from the segment's first seq. A group
// is one frame, so a crash keeps or loses the records of one Append
// together. Only the last frame of the last segment can be torn (the
// write of an unanswered group cut short); recovery drops it.
//
// Stores written before segments were kept held the records in badger and
// the journal as DATA/ledger-<first seq>.wal, deleted once applied; Open
// migrates them (legacy.go).
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

// journal is the write side of the segment being written. Only the
// holder of writer.fmu uses it (a caller journaling its group, or the
// writer goroutine).
type journal struct {
	dir      string // DATA/ledger
	segBytes int64

	f     *os.File
	first uint64 // first seq of the segment f
	off   int64
	dirty bool // written since the last sync
}

// listSegments returns the legacy journal segments in dir (the data dir),
// in seq order.
func listSegments(dir string) ([]segment, error) {
	return listFiles(dir, journalPrefix, journalSuffix)
}

// parseFrames splits a segment's bytes into frame bodies (see
// scanFrames).
func parseFrames(b []byte) (bodies [][]byte, torn bool, err error) {
	_, torn, err = scanFrames(b, func(_ int, body []byte) error {
		bodies = append(bodies, body)
		return nil
	})
	return bodies, torn, err
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

// create starts a new, empty segment whose first record will be first,
// after syncing the finished one (whatever the sync mode, so that only
// the last segment can lose a tail to a machine crash, and a sealed
// segment is durable before its index is written). Any file of that name
// holds only unanswered records (everything from first on is), so it is
// truncated.
func (j *journal) create(first uint64) error {
	path := filepath.Join(j.dir, segName(first, segSuffix))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		f.Close()
		return fmt.Errorf("journal: sync dir: %w", err)
	}
	if j.f != nil {
		if err := datasync(j.f); err != nil {
			f.Close()
			return fmt.Errorf("journal: sync: %w", err)
		}
		j.f.Close()
	}
	j.f, j.first, j.off, j.dirty = f, first, 0, false
	return nil
}

// append writes one frame (header included) whose first record is
// first, rotating to a new segment first when the current one is full,
// and with sync fdatasyncs it. It returns the segment written (its first
// seq) and the frame's offset in it. On failure the segment is cut back
// to its previous end, so the next group can reuse the seqs; if even
// that fails the error wraps errJournalCut.
func (j *journal) append(frame []byte, first uint64, sync bool) (seg uint64, off int64, err error) {
	if j.f == nil || j.off >= j.segBytes && j.off > 0 {
		if err := j.create(first); err != nil {
			return 0, 0, err
		}
	}
	_, err = j.f.WriteAt(frame, j.off)
	if err == nil && sync {
		err = datasync(j.f)
	}
	if err != nil {
		if terr := j.f.Truncate(j.off); terr != nil {
			return 0, 0, fmt.Errorf("journal: %v; %w: %v", err, errJournalCut, terr)
		}
		return 0, 0, fmt.Errorf("journal: %w", err)
	}
	off = j.off
	j.off += int64(len(frame))
	j.dirty = !sync
	return j.first, off, nil
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

// close closes the segment being written, removing it when nothing was
// written to it.
func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	if j.off == 0 {
		os.Remove(j.f.Name())
	}
	j.f = nil
	return err
}

func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
