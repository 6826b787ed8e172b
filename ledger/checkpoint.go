package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// KeyFile is the name of the checkpoint signing key inside the data dir:
// an Ed25519 private key, PKCS #8 in a PEM block, mode 0600.
const KeyFile = "checkpoint.key"

// Key errors.
var (
	ErrKeyPermissions = errors.New("ledger: checkpoint key is readable by group or others")
	ErrKeyInvalid     = errors.New("ledger: checkpoint key is not an Ed25519 private key")
)

// Checkpoint is a signed statement that the chain's record Seq has hash
// Hash and that the chain then held Count records (always Seq: the chain
// starts at 1 and has no gaps). Sig is the hex Ed25519 signature over
// SignedBytes.
type Checkpoint struct {
	Seq   uint64    `json:"seq"`
	Hash  string    `json:"hash"`
	At    time.Time `json:"at"`
	Count uint64    `json:"count"`
	Sig   string    `json:"sig"`
}

const checkpointDomain = "toolgate/ledger/checkpoint/v1\x00"

// SignedBytes returns the byte string a checkpoint signature covers:
//
//	"toolgate/ledger/checkpoint/v1" 0x00
//	seq        uint64 big-endian
//	hash       32 bytes (the record hash, binary)
//	at         int64 big-endian, Unix nanoseconds
//	count      uint64 big-endian
//
// It fails only when Hash is not 64 lowercase hex digits.
func (c *Checkpoint) SignedBytes() ([]byte, error) {
	h, ok := parseHash(c.Hash)
	if !ok {
		return nil, fmt.Errorf("checkpoint %d: malformed hash", c.Seq)
	}
	b := make([]byte, 0, len(checkpointDomain)+56)
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint64(b, c.Seq)
	b = append(b, h[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.At.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, c.Count)
	return b, nil
}

// Valid reports whether c is well formed and signed by pub.
func (c *Checkpoint) Valid(pub ed25519.PublicKey) bool {
	msg, err := c.SignedBytes()
	if err != nil || c.Count != c.Seq {
		return false
	}
	sig, err := hex.DecodeString(c.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, msg, sig)
}

func signCheckpoint(priv ed25519.PrivateKey, seq uint64, hash [32]byte, at time.Time) Checkpoint {
	c := Checkpoint{Seq: seq, Hash: hex.EncodeToString(hash[:]), At: at.UTC(), Count: seq}
	msg, _ := c.SignedBytes()
	c.Sig = hex.EncodeToString(ed25519.Sign(priv, msg))
	return c
}

// checkpointer decides when the applier signs a checkpoint and signs it
// with the ledger's key. It lives as long as its Ledger. The applier
// goroutine (and Open's replay before it starts) alone calls due and
// signed; sign and last are safe from any goroutine. It is built by
// newCheckpointer; the zero value is not usable.
type checkpointer struct {
	priv ed25519.PrivateKey
	// every is the record count that makes a checkpoint due
	// (Options.CheckpointEvery after defaults); <= 0 turns count-based
	// checkpoints off.
	every int
	// interval is Options.CheckpointInterval: the applier forces a
	// checkpoint this often; 0 means never.
	interval time.Duration
	now      func() time.Time
	seq      atomic.Uint64 // last checkpointed seq
}

// newCheckpointer returns a checkpointer signing with priv, on the
// schedule of opts (after Open's defaults), whose last checkpoint is seq.
func newCheckpointer(priv ed25519.PrivateKey, opts *Options, seq uint64) *checkpointer {
	c := &checkpointer{priv: priv, every: opts.CheckpointEvery, interval: opts.CheckpointInterval, now: opts.Now}
	c.seq.Store(seq)
	return c
}

// due reports whether a checkpoint is due once seq is applied: every
// records or more after the last one.
func (c *checkpointer) due(seq uint64) bool {
	return c.every > 0 && seq-c.seq.Load() >= uint64(c.every)
}

// last returns the seq of the last checkpoint stored.
func (c *checkpointer) last() uint64 { return c.seq.Load() }

// sign returns a checkpoint over record seq with hash, at the clock's
// time.
func (c *checkpointer) sign(seq uint64, hash [32]byte) Checkpoint {
	return signCheckpoint(c.priv, seq, hash, c.now())
}

// signed records that the checkpoint over seq is committed.
func (c *checkpointer) signed(seq uint64) { c.seq.Store(seq) }

// checkpointNow asks the writer to journal what is pending, then the
// applier to apply everything up to it and sign the head. It is a no-op
// on a read-only ledger and after Close (which writes the final
// checkpoint); otherwise it returns the journal write's or the apply's
// error.
func (l *Ledger) checkpointNow() error {
	if l.readOnly {
		return nil
	}
	return l.w.checkpoint()
}

// appendJSON writes c as one JSON object tagged "type":"checkpoint", the
// form stored under l/c/ and written to exports.
func (c *Checkpoint) appendJSON(b []byte) []byte {
	b = append(b, `{"type":"checkpoint","seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = appendStr(b, `,"hash":`, c.Hash)
	b = append(b, `,"at":"`...)
	b = c.At.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","count":`...)
	b = strconv.AppendUint(b, c.Count, 10)
	b = appendStr(b, `,"sig":`, c.Sig)
	return append(b, '}')
}

func decodeCheckpoint(b []byte) (Checkpoint, error) {
	var c Checkpoint
	err := json.Unmarshal(b, &c)
	return c, err
}

// loadOrCreateKey reads dir/checkpoint.key, creating it (0600) when absent
// and create is true.
func loadOrCreateKey(dir string, create bool) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		return createKey(dir, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("stat checkpoint key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v, want 0600", ErrKeyPermissions, path, fi.Mode().Perm())
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s", ErrKeyInvalid, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKeyInvalid, path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrKeyInvalid, path)
	}
	return priv, nil
}

func createKey(dir, path string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate checkpoint key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint key: %w", err)
	}
	// Write to a temp file and link it in place, so a crash never leaves a
	// half-written key and two racing starts agree on one key.
	tmp, err := os.CreateTemp(dir, KeyFile+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("create checkpoint key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create checkpoint key: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write checkpoint key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("sync checkpoint key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write checkpoint key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadOrCreateKey(dir, false)
		}
		return nil, fmt.Errorf("install checkpoint key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return priv, nil
}
