package ship

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/toolgate/toolgate/ledger"
)

// Report is the result of verifying one shipped day. On failure File
// names the first bad object (relative to the day, or "<day>/manifest.json"
// for the previous manifest), FirstBadSeq the first record not vouched
// for, and Reason what is wrong.
type Report struct {
	OK          bool   `json:"ok"`
	Node        string `json:"node"`
	Day         string `json:"day"`
	Records     uint64 `json:"records"`
	Files       int    `json:"files"`
	FirstSeq    uint64 `json:"first_seq,omitempty"`
	LastSeq     uint64 `json:"last_seq,omitempty"`
	Head        string `json:"head,omitempty"`
	File        string `json:"file,omitempty"`
	FirstBadSeq uint64 `json:"first_bad_seq,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// Extra lists objects in the day's folder that the manifest does not
	// name (they are not evidence; nothing vouches for them).
	Extra []string `json:"extra,omitempty"`
}

func (r *Report) fail(file string, seq uint64, format string, args ...any) Report {
	r.OK, r.File, r.FirstBadSeq, r.Reason = false, file, seq, fmt.Sprintf(format, args...)
	return *r
}

// maxFileBytes bounds one record file read by Verify (compressed and
// uncompressed).
const maxFileBytes = 4 << 30

// Verify checks node's shipped day against pub, needing nothing but the
// bucket (or a copy of it, Dir) and the key: the manifest's signature, every file's SHA-256
// and order, each file as an audit export (hash chain, canonical
// encoding, checkpoint signatures), that the files continue one another
// and the manifest's seq range and heads, and the link to the previous
// day's manifest (present, unchanged, signed, continued by this day).
// The first bad point is reported; an error means the bucket could not
// be read.
func Verify(ctx context.Context, b Store, node string, day time.Time, pub ed25519.PublicKey) (Report, error) {
	dayS := utcDay(day).Format(dayLayout)
	rep := Report{Node: node, Day: dayS}
	if !validNode(node) {
		return rep, fmt.Errorf("node %q: want 1 to 128 letters, digits, '.', '_' or '-'", node)
	}
	rel := node + "/" + dayS + "/"
	m, raw, err := readManifest(ctx, b, rel, pub)
	switch {
	case errors.Is(err, errNoManifest):
		return rep.fail(manifestName, 0, "no manifest: day %s of node %s was not shipped, or its manifest was deleted", dayS, node), nil
	case err != nil && raw == nil:
		return rep, err
	case err != nil:
		return rep.fail(manifestName, 0, "%v", err), nil
	}
	rep.FirstSeq, rep.LastSeq, rep.Head, rep.Files = m.FirstSeq, m.LastSeq, m.Head, len(m.Files)
	if m.Node != node || m.Day != dayS {
		return rep.fail(manifestName, m.FirstSeq, "manifest names node %q day %s, stored as node %q day %s", m.Node, m.Day, node, dayS), nil
	}
	if m.LastSeq+1 < m.FirstSeq || m.Records != m.LastSeq+1-m.FirstSeq {
		return rep.fail(manifestName, m.FirstSeq, "manifest's seq range %d..%d does not hold %d records", m.FirstSeq, m.LastSeq, m.Records), nil
	}

	want, head := m.FirstSeq, m.PrevHead
	named := map[string]bool{manifestName: true, sigName: true}
	for i, f := range m.Files {
		named[f.Name] = true
		if f.FirstSeq != want || f.PrevHead != head {
			return rep.fail(manifestName, want, "manifest's file %d (%s) starts at record %d, want %d", i+1, f.Name, f.FirstSeq, want), nil
		}
		gz, err := b.get(ctx, rel+f.Name, maxFileBytes)
		if errors.Is(err, errNotFound) {
			return rep.fail(f.Name, f.FirstSeq, "file %d of %d missing (records %d..%d)", i+1, len(m.Files), f.FirstSeq, f.LastSeq), nil
		}
		if err != nil {
			return rep, err
		}
		c := checkFile(gz, pub)
		if sum := sha256Hex(gz); sum != f.SHA256 || int64(len(gz)) != f.Size {
			where := c.describe()
			if c.err != "" {
				where += "; " + c.err
			}
			bad := f.FirstSeq
			if c.first == f.FirstSeq && c.badSeq != 0 {
				bad = c.badSeq // a change inside the file: name the first record that fails
			}
			if c.first != 0 && c.first != f.FirstSeq {
				return rep.fail(f.Name, f.FirstSeq, "file %d of %d changed or reordered: it holds %s, the manifest lists records %d..%d there (sha256 %s, want %s)",
					i+1, len(m.Files), where, f.FirstSeq, f.LastSeq, sum, f.SHA256), nil
			}
			return rep.fail(f.Name, bad, "file %d of %d changed: sha256 %s, manifest says %s (%s)", i+1, len(m.Files), sum, f.SHA256, where), nil
		}
		if c.err != "" {
			return rep.fail(f.Name, c.badSeq, "file %d of %d: %s", i+1, len(m.Files), c.err), nil
		}
		if c.first != f.FirstSeq || c.last != f.LastSeq || c.prev != f.PrevHead || c.head != f.Head || c.records != f.Records {
			return rep.fail(f.Name, f.FirstSeq, "file %d of %d holds %s, the manifest lists records %d..%d", i+1, len(m.Files), c.describe(), f.FirstSeq, f.LastSeq), nil
		}
		want, head = f.LastSeq+1, f.Head
		rep.Records += f.Records
	}
	if want != m.LastSeq+1 || head != m.Head {
		return rep.fail(manifestName, want, "the files end at record %d, the manifest at %d", want-1, m.LastSeq), nil
	}

	if names, err := b.files(ctx, rel); err == nil {
		for _, n := range names {
			if !named[n] {
				rep.Extra = append(rep.Extra, n)
			}
		}
	}

	// The manifest chain: the day before must be shipped, unchanged and
	// continued by this day.
	if m.Prev != nil {
		wantDay := utcDay(day).AddDate(0, 0, -1).Format(dayLayout)
		prevFile := m.Prev.Day + "/" + manifestName
		if m.Prev.Day != wantDay {
			return rep.fail(manifestName, m.FirstSeq, "manifest chain broken: previous manifest named is day %s, want %s", m.Prev.Day, wantDay), nil
		}
		pm, praw, err := readManifest(ctx, b, node+"/"+m.Prev.Day+"/", pub)
		switch {
		case errors.Is(err, errNoManifest):
			return rep.fail(prevFile, m.FirstSeq, "manifest chain broken: the previous day's manifest is missing"), nil
		case err != nil && praw == nil:
			return rep, err
		case sha256Hex(praw) != m.Prev.SHA256:
			return rep.fail(prevFile, m.FirstSeq, "manifest chain broken: the previous day's manifest changed (sha256 %s, this manifest names %s)", sha256Hex(praw), m.Prev.SHA256), nil
		case err != nil:
			return rep.fail(prevFile, m.FirstSeq, "manifest chain broken: previous day: %v", err), nil
		case pm.LastSeq+1 != m.FirstSeq || pm.Head != m.PrevHead:
			return rep.fail(prevFile, m.FirstSeq, "manifest chain broken: the previous day ends at record %d, this day starts at %d", pm.LastSeq, m.FirstSeq), nil
		}
	} else if m.FirstSeq != 1 && m.PrevHead == zeroHead {
		return rep.fail(manifestName, m.FirstSeq, "manifest starts the chain at record %d with the zero head", m.FirstSeq), nil
	}
	rep.OK = true
	return rep, nil
}

// fileCheck is what a record file holds, read independently of the
// manifest.
type fileCheck struct {
	first, last, records uint64
	prev, head           string
	err                  string // "" when it verifies as an export
	badSeq               uint64
}

func (c *fileCheck) describe() string {
	if c.first == 0 {
		return "no readable records"
	}
	return fmt.Sprintf("records %d..%d", c.first, c.last)
}

// checkFile gunzips gz and verifies it as an audit export.
func checkFile(gz []byte, pub ed25519.PublicKey) fileCheck {
	var c fileCheck
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		c.err = "not gzip: " + err.Error()
		return c
	}
	data, err := io.ReadAll(io.LimitReader(zr, maxFileBytes))
	if err != nil {
		c.err = "gzip: " + err.Error()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var last []byte
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, recordPrefix) {
			continue
		}
		if c.first == 0 {
			var r ledger.Record
			if r.UnmarshalJSON(line) == nil {
				c.first, c.prev = r.Seq, r.Prev
			}
		}
		c.records++
		last = line
	}
	if last != nil {
		var r ledger.Record
		if r.UnmarshalJSON(last) == nil {
			c.last, c.head = r.Seq, r.Hash
		}
	}
	if c.err != "" {
		return c
	}
	rep := ledger.VerifyExport(bytes.NewReader(data), pub)
	if !rep.OK {
		c.err, c.badSeq = "does not verify as an audit export: "+rep.Reason, rep.FirstBadSeq
	}
	return c
}

// Nodes lists the nodes that shipped under b's prefix.
func Nodes(ctx context.Context, b Store) ([]string, error) { return b.dirs(ctx, "") }
