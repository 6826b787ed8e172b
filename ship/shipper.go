package ship

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/toolgate/toolgate/ledger"
)

// Source yields a node's ledger records. *ledger.Ledger is one
// (through LedgerSource); cmd has another that reads a running gateway's
// management API.
type Source interface {
	// Export writes what ledger.Ledger.Export writes for records with
	// since <= At < until.
	Export(w io.Writer, since, until time.Time) error
	// Oldest returns the At of the oldest record; ok is false for an
	// empty ledger.
	Oldest() (at time.Time, ok bool, err error)
}

// LedgerSource is a Source reading a ledger in this process.
type LedgerSource struct{ L *ledger.Ledger }

// Export calls L.Export.
func (s LedgerSource) Export(w io.Writer, since, until time.Time) error {
	return s.L.Export(w, since, until)
}

// Oldest queries the time index for the first record.
func (s LedgerSource) Oldest() (time.Time, bool, error) {
	var at time.Time
	found := false
	err := s.L.Query(ledger.Query{Limit: 1}, func(r *ledger.Record) error {
		at, found = r.At, true
		return nil
	})
	return at, found, err
}

// LockMode is an S3 Object Lock retention mode.
type LockMode string

// Object Lock modes: COMPLIANCE retention cannot be shortened or removed
// by anyone until it ends; GOVERNANCE can be, with a special permission.
const (
	LockCompliance LockMode = "COMPLIANCE"
	LockGovernance LockMode = "GOVERNANCE"
)

// Defaults.
const (
	DefaultPartBytes = 64 << 20 // uncompressed bytes of one record file
	manifestName     = "manifest.json"
	sigName          = "manifest.sig"
	maxManifestBytes = 16 << 20
	dayLayout        = "2006-01-02"
)

// Config configures a Shipper.
type Config struct {
	Bucket *Bucket
	// Node names this node's chain: objects go under <prefix>/<node>/.
	Node   string
	Source Source
	// Key is the ledger's checkpoint key (ledger.LoadKey): it signs the
	// manifests, and its public half verifies what Source exports.
	Key ed25519.PrivateKey
	// StageDir holds the files of a day being shipped until its manifest
	// is uploaded and verified, so that an interrupted run resumes with
	// the same bytes. Required.
	StageDir string
	// Retain, when > 0, puts Object Lock retention on every object
	// shipped: LockMode (default COMPLIANCE) until now + Retain. The
	// bucket must have Object Lock enabled.
	Retain   time.Duration
	LockMode LockMode
	// PartBytes bounds the uncompressed size of one record file (a file
	// is cut after a checkpoint line past it); 0 means DefaultPartBytes.
	PartBytes int64
	// From is the first day shipped when the node has no manifest yet;
	// zero means the day of the oldest record.
	From time.Time
	Now  func() time.Time // nil: time.Now
	Log  *slog.Logger     // nil: discard
	// Metrics, if set, counts runs, days, objects and bytes.
	Metrics *Metrics
}

// Shipper ships a node's complete UTC days to S3. Run may be called
// again at any time: days already shipped are left alone, and a day
// whose upload was interrupted is finished from its staged files. Runs
// of one Shipper must not overlap; a lock file in StageDir keeps
// processes sharing it from overlapping too.
type Shipper struct {
	cfg Config
	pub ed25519.PublicKey
}

// New checks cfg and returns a Shipper.
func New(cfg Config) (*Shipper, error) {
	switch {
	case cfg.Bucket == nil || cfg.Source == nil || cfg.StageDir == "":
		return nil, errors.New("ship: Bucket, Source and StageDir are required")
	case len(cfg.Key) != ed25519.PrivateKeySize:
		return nil, errors.New("ship: Key is not an Ed25519 private key")
	case !validNode(cfg.Node):
		return nil, fmt.Errorf("ship: node %q: want 1 to 128 letters, digits, '.', '_' or '-'", cfg.Node)
	}
	if cfg.PartBytes <= 0 {
		cfg.PartBytes = DefaultPartBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Retain > 0 && cfg.LockMode == "" {
		cfg.LockMode = LockCompliance
	}
	return &Shipper{cfg: cfg, pub: cfg.Key.Public().(ed25519.PublicKey)}, nil
}

func validNode(s string) bool {
	if len(s) == 0 || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// DayResult says what Run did for one day.
type DayResult struct {
	Day      string `json:"day"`
	Records  uint64 `json:"records"`
	Files    int    `json:"files"`
	Uploaded int    `json:"uploaded"` // objects put (files, signature, manifest)
	Reused   int    `json:"reused"`   // objects found already uploaded (resumed)
	Bytes    int64  `json:"bytes"`    // bytes put
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// cursor is where the node's manifest chain ends.
type cursor struct {
	day     string
	lastSeq uint64
	head    string
	lastAt  time.Time
	sha     string // of the manifest's bytes
}

// errSkip says a day before the node's first record day was not shipped.
var errSkip = errors.New("ship: nothing to start the chain with")

// ErrBusy is returned by Run when another process ships from the same
// StageDir.
var ErrBusy = errors.New("ship: another process is shipping from this stage dir")

// Run ships, in order, every complete UTC day (before today) that follows
// the node's last shipped manifest, and returns what it shipped; a day
// with nothing new returns nothing. It stops at the first failure, having
// shipped the days before it.
func (s *Shipper) Run(ctx context.Context) ([]DayResult, error) {
	res, err := s.run(ctx)
	s.cfg.Metrics.run(res, err, s.cfg.Now())
	return res, err
}

// stageDir is where this destination's days of this node are staged:
// StageDir/<bucket>-<hash of the location>/<node>, so that shipping one
// node to two destinations stages (and locks) each apart.
func (s *Shipper) stageDir() string {
	loc := s.cfg.Bucket.Location()
	return filepath.Join(s.cfg.StageDir, loc.Bucket+"-"+sha256Hex([]byte(loc.String()))[:12], s.cfg.Node)
}

func (s *Shipper) run(ctx context.Context) ([]DayResult, error) {
	stage := s.stageDir()
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return nil, fmt.Errorf("stage dir: %w", err)
	}
	unlock, err := lockDir(stage)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cur, err := s.latest(ctx)
	if err != nil {
		return nil, err
	}
	if cur != nil {
		s.cfg.Metrics.shipped(cur.day)
	}
	var start time.Time
	switch {
	case cur != nil:
		d, _ := time.Parse(dayLayout, cur.day)
		start = d.AddDate(0, 0, 1)
	case !s.cfg.From.IsZero():
		start = utcDay(s.cfg.From)
	default:
		at, ok, err := s.cfg.Source.Oldest()
		if err != nil {
			return nil, fmt.Errorf("oldest record: %w", err)
		}
		if !ok {
			return nil, nil // nothing recorded yet
		}
		start = utcDay(at)
	}
	today := utcDay(s.cfg.Now())
	removeStale(stage, start)
	var done []DayResult
	for d := start; d.Before(today); d = d.AddDate(0, 0, 1) {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		r, next, err := s.shipDay(ctx, stage, d, cur)
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("ship %s: %w", d.Format(dayLayout), err)
		}
		cur = next
		done = append(done, r)
		s.cfg.Metrics.shipped(cur.day)
		s.cfg.Log.Info("audit day shipped", "day", r.Day, "node", s.cfg.Node, "records", r.Records,
			"first_seq", r.FirstSeq, "last_seq", r.LastSeq, "files", r.Files, "uploaded", r.Uploaded,
			"resumed", r.Reused, "bytes", r.Bytes, "to", s.cfg.Bucket.Location().String())
	}
	return done, nil
}

func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// removeStale deletes staged days before start: shipped already.
func removeStale(stage string, start time.Time) {
	ents, _ := os.ReadDir(stage)
	for _, e := range ents {
		if d, err := time.Parse(dayLayout, e.Name()); err == nil && d.Before(start) {
			os.RemoveAll(filepath.Join(stage, e.Name()))
		}
	}
}

func (s *Shipper) nodeRel() string { return s.cfg.Node + "/" }

// latest finds the node's newest manifest and checks its signature: the
// chain is extended only from a manifest this key signed.
func (s *Shipper) latest(ctx context.Context) (*cursor, error) {
	days, err := s.cfg.Bucket.dirs(ctx, s.nodeRel())
	if err != nil {
		return nil, err
	}
	for i := len(days) - 1; i >= 0; i-- {
		if _, err := time.Parse(dayLayout, days[i]); err != nil {
			continue
		}
		m, raw, err := readManifest(ctx, s.cfg.Bucket, s.nodeRel()+days[i]+"/", s.pub)
		if errors.Is(err, errNoManifest) {
			continue // an interrupted day: shipped again below
		}
		if err != nil {
			return nil, fmt.Errorf("latest manifest (%s): %w; refusing to extend the chain", days[i], err)
		}
		if m.Day != days[i] || m.Node != s.cfg.Node {
			return nil, fmt.Errorf("latest manifest (%s) names node %q day %s; refusing to extend the chain", days[i], m.Node, m.Day)
		}
		return &cursor{day: m.Day, lastSeq: m.LastSeq, head: m.Head, lastAt: m.LastAt, sha: sha256Hex(raw)}, nil
	}
	return nil, nil
}

// readManifest reads and checks dir's manifest and signature.
func readManifest(ctx context.Context, b Store, dir string, pub ed25519.PublicKey) (*Manifest, []byte, error) {
	raw, err := b.get(ctx, dir+manifestName, maxManifestBytes)
	if errors.Is(err, errNotFound) {
		return nil, nil, errNoManifest
	}
	if err != nil {
		return nil, nil, err
	}
	sig, err := b.get(ctx, dir+sigName, 4096)
	if errors.Is(err, errNotFound) {
		return nil, raw, fmt.Errorf("%s missing", sigName)
	}
	if err != nil {
		return nil, raw, err
	}
	if !VerifySignature(pub, raw, sig) {
		return nil, raw, errors.New("manifest signature does not verify with the public key (wrong key, or the manifest was changed)")
	}
	m, err := decodeManifest(raw)
	return m, raw, err
}

// shipDay ships day d after cur and returns the new cursor.
func (s *Shipper) shipDay(ctx context.Context, stage string, d time.Time, cur *cursor) (DayResult, *cursor, error) {
	day := d.Format(dayLayout)
	dir := filepath.Join(stage, day)
	m, raw, sig, err := s.staged(dir, day, cur)
	if err != nil {
		return DayResult{}, nil, err
	}
	if m == nil {
		if m, raw, sig, err = s.stage(ctx, dir, d, cur); err != nil {
			return DayResult{}, nil, err
		}
	}
	if cur == nil && m.Records == 0 {
		// Before the first day with records there is no chain to
		// extend: the first manifest is the first day with records.
		os.RemoveAll(dir)
		return DayResult{}, nil, errSkip
	}
	r := DayResult{Day: day, Records: m.Records, Files: len(m.Files), FirstSeq: m.FirstSeq, LastSeq: m.LastSeq}
	rel := s.nodeRel() + day + "/"
	po := putOptions{}
	if s.cfg.Retain > 0 {
		po.lockMode, po.retainUntil = types.ObjectLockMode(s.cfg.LockMode), s.cfg.Now().Add(s.cfg.Retain)
	}
	upload := func(name, path string, data []byte, sum string, size int64, ctype string) error {
		o, ok, err := s.cfg.Bucket.head(ctx, rel+name)
		if err != nil {
			return err
		}
		if ok && o.size == size && o.sha256 == sum {
			r.Reused++
		} else {
			po.contentType = ctype
			if data != nil {
				err = s.cfg.Bucket.putBytes(ctx, rel+name, data, po)
			} else {
				raw, _ := hex.DecodeString(sum)
				_, err = s.cfg.Bucket.putFile(ctx, rel+name, path, raw, po)
			}
			if err != nil {
				return err
			}
			r.Uploaded++
			r.Bytes += size
			s.cfg.Metrics.object(size)
		}
		// Read back what the store holds now.
		got, n, err := s.cfg.Bucket.hashObject(ctx, rel+name)
		if err != nil {
			return fmt.Errorf("read back: %w", err)
		}
		if got != sum || n != size {
			return fmt.Errorf("read back %s: store holds %d bytes with sha256 %s, uploaded %d bytes with sha256 %s", name, n, got, size, sum)
		}
		return nil
	}
	for _, f := range m.Files {
		if err := upload(f.Name, filepath.Join(dir, f.Name), nil, f.SHA256, f.Size, "application/gzip"); err != nil {
			return r, nil, err
		}
	}
	// The signature before the manifest: a manifest in the bucket is
	// the mark of a complete day.
	if err := upload(sigName, "", sig, sha256Hex(sig), int64(len(sig)), "text/plain"); err != nil {
		return r, nil, err
	}
	if err := upload(manifestName, "", raw, sha256Hex(raw), int64(len(raw)), "application/json"); err != nil {
		return r, nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		s.cfg.Log.Warn("audit ship: could not remove staged day", "dir", dir, "err", err)
	}
	next := &cursor{day: day, lastSeq: m.LastSeq, head: m.Head, lastAt: m.LastAt, sha: sha256Hex(raw)}
	if m.Records == 0 && cur != nil {
		next.lastAt = cur.lastAt
	}
	return r, next, nil
}

// staged returns the day staged in dir by an earlier, interrupted run,
// when it continues cur and its files are intact; nil otherwise (and
// the stale staging is removed).
func (s *Shipper) staged(dir, day string, cur *cursor) (*Manifest, []byte, []byte, error) {
	raw, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, os.RemoveAll(dir)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	sig, err := os.ReadFile(filepath.Join(dir, sigName))
	ok := err == nil && VerifySignature(s.pub, raw, sig)
	var m *Manifest
	if ok {
		m, err = decodeManifest(raw)
		ok = err == nil && m.Day == day && m.Node == s.cfg.Node
	}
	if ok {
		switch {
		case cur == nil:
			ok = m.Prev == nil
		default:
			ok = m.Prev != nil && m.Prev.Day == cur.day && m.Prev.SHA256 == cur.sha
		}
	}
	for i := 0; ok && i < len(m.Files); i++ {
		sum, n, err := hashFile(filepath.Join(dir, m.Files[i].Name))
		ok = err == nil && sum == m.Files[i].SHA256 && n == m.Files[i].Size
	}
	if !ok {
		return nil, nil, nil, os.RemoveAll(dir)
	}
	return m, raw, sig, nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// stage exports day d after cur into dir as record files, checks them,
// and writes the signed manifest there last.
func (s *Shipper) stage(ctx context.Context, dir string, d time.Time, cur *cursor) (*Manifest, []byte, []byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	day := d.Format(dayLayout)
	since, until := d, d.AddDate(0, 0, 1)
	var after uint64
	if cur != nil {
		after = cur.lastSeq
		// From the last shipped record on: records whose clock stepped
		// back before midnight still join the chain here.
		if !cur.lastAt.IsZero() && cur.lastAt.Before(since) {
			since = cur.lastAt
		}
	}
	sp := &splitter{dir: dir, after: after, partBytes: s.cfg.PartBytes}
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := s.cfg.Source.Export(pw, since, until)
		pw.CloseWithError(err)
		errc <- err
	}()
	serr := sp.read(ctx, pr)
	pr.CloseWithError(errors.New("ship: export stopped being read"))
	if err := <-errc; err != nil {
		sp.abort()
		return nil, nil, nil, fmt.Errorf("export: %w", err)
	}
	if serr != nil {
		sp.abort()
		return nil, nil, nil, serr
	}
	m := &Manifest{
		Version: ManifestVersion, Node: s.cfg.Node, Day: day, Files: []File{},
		PublicKey: hex.EncodeToString(s.pub), CreatedAt: s.cfg.Now().UTC(),
	}
	if cur != nil {
		m.Prev = &PrevManifest{Day: cur.day, SHA256: cur.sha}
		m.LastSeq, m.PrevHead, m.Head = cur.lastSeq, cur.head, cur.head
	} else {
		m.PrevHead, m.Head = zeroHead, zeroHead
	}
	m.FirstSeq = m.LastSeq + 1
	for i, p := range sp.parts {
		if i == 0 {
			if cur != nil && p.file.FirstSeq != cur.lastSeq+1 {
				return nil, nil, nil, fmt.Errorf("export of %s starts at record %d, want %d", day, p.file.FirstSeq, cur.lastSeq+1)
			}
			if cur != nil && p.file.PrevHead != cur.head {
				return nil, nil, nil, fmt.Errorf("%w: record %d does not continue the last shipped head", ledger.ErrTampered, p.file.FirstSeq)
			}
			m.FirstSeq, m.PrevHead, m.FirstAt = p.file.FirstSeq, p.file.PrevHead, p.firstAt
		}
		// Check what is signed: the file on disk, gunzipped, against
		// the ledger's key.
		if err := verifyPartFile(filepath.Join(dir, p.file.Name), s.pub); err != nil {
			return nil, nil, nil, err
		}
		m.Files = append(m.Files, p.file)
		m.LastSeq, m.Head, m.LastAt = p.file.LastSeq, p.file.Head, p.lastAt
		m.Records += p.file.Records
	}
	raw := m.Encode()
	sig := Sign(s.cfg.Key, raw)
	if err := writeFileSync(filepath.Join(dir, sigName), sig); err != nil {
		return nil, nil, nil, err
	}
	if err := writeFileSync(filepath.Join(dir, manifestName), raw); err != nil {
		return nil, nil, nil, err
	}
	return m, raw, sig, nil
}

func verifyPartFile(path string, pub ed25519.PublicKey) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	rep := ledger.VerifyExport(zr, pub)
	if !rep.OK {
		return fmt.Errorf("%s: %w: first bad record %d: %s", filepath.Base(path), ledger.ErrTampered, rep.FirstBadSeq, rep.Reason)
	}
	return nil
}

// writeFileSync writes data to path through a temp file, fsynced and
// renamed into place.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
