package gateway

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
)

// The state seal.
//
// CheckState reads every management record in the ledger, which with a
// million keys is a million records and most of a minute. A gateway that
// stops cleanly has just had its state checked at start and kept in step
// since (every change it made is an admin record), so at shutdown it
// seals that state (SealState): the ledger's head (seq and hash), a
// digest of every key (identity.Store.Digest) and of every override, and
// the time its start check ran. The next start (CheckStateSealed) trusts
// the seal only if the ledger's head and both digests are exactly what it
// says - any record appended since (a call, `toolgate keys --offline`,
// rebuild-state), any changed, lost, damaged or restored key row or
// override makes it fall back to the full check - and deletes it before
// serving, so it is used at most once. A crash leaves no seal (or a stale
// one whose head no longer matches): the full check runs.
//
// Keys that expired since the sealed check are recorded as the full check
// would (a key expired between two starts has no record yet). The seal is
// not a secret and proves nothing to anyone without the data dir: it only
// saves re-reading the history when nothing changed.

// SealFile is the state seal's name in the data dir.
const SealFile = "state-seal"

// stateSeal is the seal's file content.
type stateSeal struct {
	Version         int       `json:"version"`
	LedgerSeq       uint64    `json:"ledger_seq"`
	LedgerHash      string    `json:"ledger_hash"`
	CheckedAt       time.Time `json:"checked_at"`
	Keys            int       `json:"keys"`
	KeysDigest      string    `json:"keys_digest"`
	Overrides       int       `json:"overrides"`
	OverridesDigest string    `json:"overrides_digest"`

	// KeysSnapshot is the SHA-256 of the keys snapshot this gateway
	// loaded its keys with or last wrote (identity.OpenSnapshot): the
	// next start uses a snapshot only if a seal or mark names its hash.
	// It is not part of the state compared.
	KeysSnapshot string `json:"keys_snapshot,omitempty"`
	// MetersSnapshot is the SHA-256 of the meters snapshot this gateway
	// restored its meters from or last wrote (meterssnap.go), the only
	// one the next start may trust. Not part of the state compared.
	MetersSnapshot string `json:"meters_snapshot,omitempty"`
}

const sealVersion = 1

// overridesDigest is the sum modulo 2²⁵⁶ of a SHA-256 per override over
// its principal and its policy's JSON.
func overridesDigest(overrides OverrideStore) (string, int, error) {
	stored, _, err := overrides.Load()
	if err != nil {
		return "", 0, err
	}
	var acc [4]uint64
	for p, pol := range stored {
		b, err := json.Marshal(pol)
		if err != nil {
			return "", 0, err
		}
		h := sha256.New()
		h.Write([]byte("toolgate/gateway/override-state/v1\x00"))
		h.Write(binary.AppendUvarint(nil, uint64(len(p))))
		h.Write([]byte(p))
		h.Write(b)
		var c uint64
		sum := h.Sum(nil)
		for i := range acc {
			acc[i], c = bits.Add64(acc[i], binary.LittleEndian.Uint64(sum[8*i:]), c)
		}
	}
	var out [32]byte
	for i := range acc {
		binary.LittleEndian.PutUint64(out[8*i:], acc[i])
	}
	return hex.EncodeToString(out[:]), len(stored), nil
}

func currentSeal(led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, checkedAt time.Time) (stateSeal, error) {
	seq, hash := led.Head()
	kd, nk := keys.Digest()
	od, no, err := overridesDigest(overrides)
	if err != nil {
		return stateSeal{}, err
	}
	snap, _ := keys.SnapshotState()
	return stateSeal{Version: sealVersion, LedgerSeq: seq, LedgerHash: hash, CheckedAt: checkedAt.UTC(),
		Keys: nk, KeysDigest: hex.EncodeToString(kd[:]), Overrides: no, OverridesDigest: od, KeysSnapshot: snap}, nil
}

// RecordedKeysSnapshots returns the keys snapshots (their SHA-256) that
// the state seal at sealPath and the state mark at markPath name, the
// seal's first: the snapshots this gateway wrote or loaded its keys
// with, the only ones identity.OpenSnapshot may trust. Call it before
// CheckStateAtStart (which removes the seal). An unreadable file names
// none.
func RecordedKeysSnapshots(sealPath, markPath string) []string {
	return recorded(sealPath, markPath, func(s stateSeal) string { return s.KeysSnapshot })
}

// RecordedMetersSnapshots is RecordedKeysSnapshots for the meters
// snapshot (Options.MetersSnapshotTrusted).
func RecordedMetersSnapshots(sealPath, markPath string) []string {
	return recorded(sealPath, markPath, func(s stateSeal) string { return s.MetersSnapshot })
}

func recorded(sealPath, markPath string, field func(stateSeal) string) []string {
	var out []string
	for _, p := range []string{sealPath, markPath} {
		if p == "" {
			continue
		}
		if s, err := readSeal(p); err == nil && s.Version == sealVersion && field(s) != "" && !slices.Contains(out, field(s)) {
			out = append(out, field(s))
		}
	}
	return out
}

// SealState writes the state seal to path: call it at a clean shutdown,
// once nothing can change keys, overrides or the ledger any more (the
// servers and background work stopped, the ledger closed), with the time
// the start check of this process ran (CheckStateSealed's now), and the
// SHA-256 of the meters snapshot the gateway last wrote
// (Gateway.MetersSnapshot; "": none). The file is written to a temporary
// name, synced and renamed.
func SealState(path string, led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, checkedAt time.Time, meters string) error {
	s, err := currentSeal(led, keys, overrides, checkedAt)
	if err != nil {
		return fmt.Errorf("state seal: %w", err)
	}
	s.MetersSnapshot = meters
	if err := writeSeal(path, s); err != nil {
		return fmt.Errorf("state seal: %w", err)
	}
	return nil
}

// writeSeal writes s to path: to a temporary name, synced and renamed.
func writeSeal(path string, s stateSeal) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncFile(filepath.Dir(path)) // the rename
}

// syncFile fsyncs a file or directory.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// CheckStateSealed is CheckState, skipping the read of the ledger's
// history when the seal at path matches the ledger and the store exactly
// (see the top of this file). It removes the seal in any case. sealed
// reports whether the seal was used.
func CheckStateSealed(path string, led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, now time.Time, log *slog.Logger) (sealed bool, err error) {
	how, err := CheckStateAtStart(path, "", led, keys, overrides, now, log)
	return how == CheckedBySeal, err
}

// How a start check was made (CheckStateAtStart).
const (
	CheckedBySeal = "seal" // the state seal of a clean shutdown
	CheckedByMark = "mark" // the state mark (statemark.go): after a crash
	CheckedInFull = "full" // every management record read (CheckState)
)

// CheckStateAtStart is CheckState made as cheaply as the data dir
// allows: by the seal at sealPath (removed in any case) when it matches
// exactly, else by the state mark at markPath ("": none) when it
// matches, else in full. how is one of the Checked… constants.
func CheckStateAtStart(sealPath, markPath string, led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, now time.Time, log *slog.Logger) (how string, err error) {
	seal, why := matchSeal(sealPath, led, keys, overrides)
	if err := os.Remove(sealPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("state seal: %w", err)
	}
	if why == "" && now.Before(seal.CheckedAt) {
		why = "the clock is behind the sealed check"
	}
	if why == "" {
		log.Info("management state: as sealed at the last clean shutdown; the ledger's history was not re-read",
			"ledger_seq", seal.LedgerSeq, "keys", seal.Keys, "overrides", seal.Overrides)
		return CheckedBySeal, recordExpiredSince(led, keys, seal.CheckedAt, now, log)
	}
	if markPath != "" {
		mark, whyNot := matchMark(markPath, led, keys, overrides, now)
		if whyNot == "" {
			log.Info("management state: as marked while the last run served; only the management records after the mark were read",
				"state_seal", why, "mark_seq", mark.LedgerSeq, "keys", mark.Keys, "overrides", mark.Overrides)
			return CheckedByMark, recordExpiredSince(led, keys, mark.CheckedAt, now, log)
		}
		if why != "no seal" || whyNot != "none" {
			why += "; state mark: " + whyNot
		}
	}
	if why != "no seal" {
		log.Info("management state: full check against the ledger", "state_seal", why)
	}
	return CheckedInFull, CheckState(led, keys, overrides, now, log)
}

// recordExpiredSince records the keys that expired after the check at
// after and by now: they have no expiry record yet (a start check
// records the expiries before it, as the full check does).
func recordExpiredSince(led *ledger.Ledger, keys *identity.Store, after, now time.Time, log *slog.Logger) error {
	var expired []*identity.Key
	from, until := after.Unix(), now.Unix()
	keys.Each(func(k *identity.Key) {
		if e := k.ExpiresAt(); k.RevokedAt().IsZero() && !e.IsZero() && e.Unix() > from && e.Unix() <= until {
			expired = append(expired, k)
		}
	})
	for _, k := range expired {
		log.Warn("management state", "change", fmt.Sprintf("key %s: expired; recording it", k.ID))
		if err := appendAdmin(led, now, actorStart, k.Principal, ledger.KindKeyExpired, stateOfKey(k, now)); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	return nil
}

// matchSeal reads the seal at path and returns "" when it describes the
// ledger and the store as they are, else why not.
func matchSeal(path string, led *ledger.Ledger, keys *identity.Store, overrides OverrideStore) (stateSeal, string) {
	s, err := readSeal(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, "no seal"
	case err != nil:
		return s, "unreadable: " + err.Error()
	case s.Version != sealVersion:
		return s, fmt.Sprintf("version %d", s.Version)
	}
	cur, err := currentSeal(led, keys, overrides, s.CheckedAt)
	switch {
	case err != nil:
		return s, err.Error()
	case cur.LedgerSeq != s.LedgerSeq || cur.LedgerHash != s.LedgerHash:
		return s, fmt.Sprintf("the ledger moved since the seal (head %d, sealed %d)", cur.LedgerSeq, s.LedgerSeq)
	case cur.Keys != s.Keys || cur.KeysDigest != s.KeysDigest:
		return s, "the keys differ from the sealed ones"
	case cur.Overrides != s.Overrides || cur.OverridesDigest != s.OverridesDigest:
		return s, "the overrides differ from the sealed ones"
	}
	return s, ""
}

func readSeal(path string) (stateSeal, error) {
	var s stateSeal
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, err
	}
	return s, nil
}
