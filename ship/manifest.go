package ship

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ManifestVersion is the version of the manifest format this package
// writes and reads.
const ManifestVersion = 1

// manifestDomain prefixes the bytes a manifest signature covers, so that
// a manifest signature can never be taken for a ledger checkpoint's (the
// two are made with the same key).
const manifestDomain = "toolgate/audit-ship/manifest/v1\x00"

// Manifest describes one node's shipped UTC day: its record files in
// order, the seq range and chain heads they cover, and the hash of the
// node's previous manifest, so that the manifests form a chain of their
// own. It is stored as manifest.json beside the files, signed by
// manifest.sig (see Sign).
//
// Records holds LastSeq-FirstSeq+1 records. A day without records has no
// files, FirstSeq = LastSeq+1 and PrevHead = Head: the chain passes
// through it unchanged.
type Manifest struct {
	Version int    `json:"version"`
	Node    string `json:"node"`
	Day     string `json:"day"` // "2026-12-01", UTC
	// FirstSeq..LastSeq is the seq range of the day's records.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Records  uint64 `json:"records"`
	// FirstAt and LastAt are the At of the first and last record (zero
	// for an empty day).
	FirstAt time.Time `json:"first_at,omitzero"`
	LastAt  time.Time `json:"last_at,omitzero"`
	// PrevHead is the chain hash before FirstSeq (the prev of record
	// FirstSeq), Head the hash of record LastSeq.
	PrevHead string `json:"prev_head"`
	Head     string `json:"head"`
	Files    []File `json:"files"`
	// Prev names the node's previous manifest; nil for the first one
	// shipped.
	Prev *PrevManifest `json:"prev_manifest"`
	// PublicKey is the signer's Ed25519 key (hex), for the reader's
	// information only: verification uses a key the verifier trusts.
	PublicKey string    `json:"public_key"`
	CreatedAt time.Time `json:"created_at"`
}

// File is one shipped record file: a gzipped `toolgate audit export`
// stream (record lines, the ledger's checkpoints after the records they
// cover, a checkpoint over its last record at its end).
type File struct {
	Name        string `json:"name"`
	SHA256      string `json:"sha256"` // of the object's bytes (gzipped)
	Size        int64  `json:"size"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	Records     uint64 `json:"records"`
	Checkpoints int    `json:"checkpoints"`
	PrevHead    string `json:"prev_head"` // prev of record FirstSeq
	Head        string `json:"head"`      // hash of record LastSeq
}

// PrevManifest links a manifest to the one before it.
type PrevManifest struct {
	Day    string `json:"day"`
	SHA256 string `json:"sha256"` // of the previous manifest.json's bytes
}

// Encode returns the manifest's bytes as stored (indented JSON and a
// newline). The signature and the next manifest's link cover exactly
// these bytes.
func (m *Manifest) Encode() []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

// decodeManifest parses stored manifest bytes strictly.
func decodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("manifest: version %d, want %d", m.Version, ManifestVersion)
	}
	return &m, nil
}

// Sign returns the detached signature of manifest bytes b, as stored in
// manifest.sig: the hex Ed25519 signature over
// "toolgate/audit-ship/manifest/v1" 0x00 || b, and a newline.
func Sign(priv ed25519.PrivateKey, b []byte) []byte {
	sig := ed25519.Sign(priv, signedBytes(b))
	return []byte(hex.EncodeToString(sig) + "\n")
}

// VerifySignature reports whether sig (the contents of manifest.sig)
// is pub's signature over manifest bytes b.
func VerifySignature(pub ed25519.PublicKey, b, sig []byte) bool {
	raw, err := hex.DecodeString(string(bytes.TrimSpace(sig)))
	if err != nil || len(raw) != ed25519.SignatureSize || len(pub) != ed25519.PublicKeySize {
		return false
	}
	return ed25519.Verify(pub, signedBytes(b), raw)
}

func signedBytes(b []byte) []byte {
	return append([]byte(manifestDomain), b...)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// zeroHead is the prev of record 1.
var zeroHead = hex.EncodeToString(make([]byte, 32))

// errNoManifest says a day has no manifest (not shipped, or not
// finished).
var errNoManifest = errors.New("ship: no manifest")
