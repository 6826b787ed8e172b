package ship

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/toolgate/toolgate/ledger"
)

// part is one record file being written.
type part struct {
	file            File
	f               *os.File
	h               io.Writer
	sum             interface{ Sum([]byte) []byte }
	zw              *gzip.Writer
	raw             int64 // uncompressed bytes
	firstAt, lastAt time.Time
	lastLine        []byte
}

// splitter cuts an export stream into record files: it drops the
// records and checkpoints up to after (shipped with an earlier day),
// checks seq continuity, and starts a new file at the first record after
// a checkpoint once a file holds partBytes.
type splitter struct {
	dir       string
	after     uint64
	partBytes int64
	parts     []*part
	cur       *part
	full      bool
	lastSeq   uint64
}

var (
	recordPrefix     = []byte(`{"seq":`)
	checkpointPrefix = []byte(`{"type":"checkpoint","seq":`)
)

// read consumes the export stream r; it stops early, with ctx's error,
// once ctx is done.
func (sp *splitter) read(ctx context.Context, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 0; sc.Scan(); n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		if err := sp.line(line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	return sp.finish()
}

func leadingSeq(line, prefix []byte) (uint64, bool) {
	rest := line[len(prefix):]
	i := bytes.IndexByte(rest, ',')
	if i <= 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	return n, err == nil
}

func (sp *splitter) line(line []byte) error {
	switch {
	case bytes.HasPrefix(line, recordPrefix):
		seq, ok := leadingSeq(line, recordPrefix)
		if !ok {
			return errors.New("export: undecodable record line")
		}
		if seq <= sp.after {
			return nil
		}
		if sp.lastSeq != 0 && seq != sp.lastSeq+1 {
			return fmt.Errorf("export: record %d follows record %d", seq, sp.lastSeq)
		}
		sp.lastSeq = seq
		if sp.cur == nil || sp.full {
			if err := sp.next(); err != nil {
				return err
			}
		}
		p := sp.cur
		if p.file.Records == 0 {
			var rec ledger.Record
			if err := rec.UnmarshalJSON(line); err != nil {
				return fmt.Errorf("export: record %d: %w", seq, err)
			}
			p.file.FirstSeq, p.file.PrevHead, p.firstAt = seq, rec.Prev, rec.At
		}
		p.file.Records++
		p.file.LastSeq = seq
		p.lastLine = append(p.lastLine[:0], line...)
		return p.write(line)
	case bytes.HasPrefix(line, checkpointPrefix):
		seq, ok := leadingSeq(line, checkpointPrefix)
		if !ok {
			return errors.New("export: undecodable checkpoint line")
		}
		if seq <= sp.after {
			return nil
		}
		if sp.cur == nil {
			return fmt.Errorf("export: checkpoint %d before any record", seq)
		}
		sp.cur.file.Checkpoints++
		if err := sp.cur.write(line); err != nil {
			return err
		}
		sp.full = sp.cur.raw >= sp.partBytes
		return nil
	}
	return errors.New("export: a line is neither a record nor a checkpoint")
}

func (sp *splitter) next() error {
	if sp.cur != nil {
		if err := sp.cur.close(); err != nil {
			return err
		}
	}
	name := fmt.Sprintf("records-%04d.jsonl.gz", len(sp.parts)+1)
	f, err := os.OpenFile(filepath.Join(sp.dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	p := &part{file: File{Name: name}, f: f, h: h, sum: h}
	p.zw = gzip.NewWriter(io.MultiWriter(f, h))
	sp.parts = append(sp.parts, p)
	sp.cur, sp.full = p, false
	return nil
}

func (p *part) write(line []byte) error {
	p.raw += int64(len(line)) + 1
	if _, err := p.zw.Write(line); err != nil {
		return err
	}
	_, err := p.zw.Write([]byte{'\n'})
	return err
}

// close finishes the file: the head and the last record's At come from
// its last record line.
func (p *part) close() error {
	var rec ledger.Record
	if err := rec.UnmarshalJSON(p.lastLine); err != nil {
		return fmt.Errorf("export: record %d: %w", p.file.LastSeq, err)
	}
	p.file.Head, p.lastAt = rec.Hash, rec.At
	if err := p.zw.Close(); err != nil {
		return err
	}
	if err := p.f.Sync(); err != nil {
		return err
	}
	fi, err := p.f.Stat()
	if err != nil {
		return err
	}
	p.file.Size = fi.Size()
	p.file.SHA256 = hex.EncodeToString(p.sum.Sum(nil))
	return p.f.Close()
}

func (sp *splitter) finish() error {
	if sp.cur == nil {
		return nil
	}
	err := sp.cur.close()
	sp.cur = nil
	return err
}

func (sp *splitter) abort() {
	for _, p := range sp.parts {
		p.f.Close()
	}
}
