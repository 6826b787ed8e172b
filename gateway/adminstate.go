package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/policy"
)

// Management changes (keys created, revoked, expired; overrides put and
// deleted) are admin records in the ledger. The store keeps the live
// state; the tamper-evident chain keeps its history, so that the state
// can be checked against it at start (CheckState) and put back from it
// (RebuildState). The records never hold a secret: a key's state carries
// a fingerprint of its digest (identity.Fingerprint), which detects a
// damaged digest row but cannot authenticate, so a key whose row is lost
// cannot be rebuilt; it is recorded as revoked instead.

// keyState is the State of a key's admin record: the key after the change.
type keyState struct {
	KeyID     string    `json:"key_id"`
	Name      string    `json:"name,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Status    string    `json:"status"`
	DigestFP  string    `json:"digest_fingerprint"`
}

func stateOfKey(k *identity.Key, now time.Time) keyState {
	return keyState{KeyID: k.ID, Name: k.Name, CreatedAt: k.CreatedAt(), ExpiresAt: k.ExpiresAt(),
		RevokedAt: k.RevokedAt(), Status: k.Status(now), DigestFP: identity.Fingerprint(k.Hash)}
}

// policyState is the State of an override's admin record.
type policyState struct {
	Policy *policy.Policy `json:"policy"` // nil once deleted
}

// actorAdmin names the holder of the admin token by the address it
// called from.
func actorAdmin(addr string) string { return "admin@" + addr }

// Actors of changes the gateway makes itself.
const (
	actorStart   = "toolgate serve (start)"
	actorRebuild = "toolgate audit rebuild-state"
)

func adminRecord(now time.Time, actor, principal, kind string, state any) (*ledger.Record, error) {
	b, err := json.Marshal(state)
	if err != nil {
		return nil, err
	}
	return &ledger.Record{Type: ledger.TypeAdmin, At: now, Principal: principal, Kind: kind, Actor: actor, State: b}, nil
}

// appendAdmin records one management change and waits until it is
// journaled.
func appendAdmin(led *ledger.Ledger, now time.Time, actor, principal, kind string, state any) error {
	r, err := adminRecord(now, actor, principal, kind, state)
	if err != nil {
		return err
	}
	return led.Append(r).Wait()
}

// RecordKeyChange records a change of key k (kind: ledger.KindKey…) made
// by actor outside the management API (toolgate keys --offline).
func RecordKeyChange(led *ledger.Ledger, now time.Time, actor, kind string, k *identity.Key) error {
	return appendAdmin(led, now, actor, k.Principal, kind, stateOfKey(k, now))
}

// recordKey records a change of key k.
func (g *Gateway) recordKey(actor, kind string, k *identity.Key) error {
	now := g.now()
	err := appendAdmin(g.led, now, actor, k.Principal, kind, stateOfKey(k, now))
	if err != nil {
		g.log.Error("record key change", "key_id", k.ID, "kind", kind, "err", err)
		g.marker.Broken()
	} else {
		g.marker.Changed(false)
	}
	return err
}

// recordPolicy records the override of principal after a change (nil:
// deleted).
func (g *Gateway) recordPolicy(actor, principal string, p *policy.Policy) error {
	kind := ledger.KindPolicyPut
	if p == nil {
		kind = ledger.KindPolicyDeleted
	}
	err := appendAdmin(g.led, g.now(), actor, principal, kind, policyState{p})
	if err != nil {
		g.log.Error("record policy change", "principal", principal, "kind", kind, "err", err)
		g.marker.Broken()
	} else {
		g.marker.Changed(true)
	}
	return err
}

// adminHistory is the management state the ledger's admin records
// describe: the latest state of every key and override, with the seq
// that set it.
type adminHistory struct {
	records   int
	keys      map[string]keyState // by key_id
	keySeq    map[string]uint64
	overrides map[string][]byte // principal → policy JSON (json.Marshal form)
	polSeq    map[string]uint64
}

func loadHistory(led *ledger.Ledger) (*adminHistory, error) {
	h := &adminHistory{keys: map[string]keyState{}, keySeq: map[string]uint64{},
		overrides: map[string][]byte{}, polSeq: map[string]uint64{}}
	err := led.AdminRecords(func(r *ledger.Record) error {
		h.records++
		switch r.Kind {
		case ledger.KindKeyCreated, ledger.KindKeyRevoked, ledger.KindKeyExpired:
			var ks keyState
			if err := json.Unmarshal(r.State, &ks); err != nil || ks.KeyID == "" || r.Principal != identity.KeyPrincipal(ks.KeyID).String() {
				return fmt.Errorf("admin record %d: key state undecodable", r.Seq)
			}
			h.keys[ks.KeyID], h.keySeq[ks.KeyID] = ks, r.Seq
		case ledger.KindPolicyPut, ledger.KindPolicyDeleted:
			var ps struct {
				Policy json.RawMessage `json:"policy"`
			}
			if err := json.Unmarshal(r.State, &ps); err != nil {
				return fmt.Errorf("admin record %d: policy state undecodable", r.Seq)
			}
			h.polSeq[r.Principal] = r.Seq
			if r.Kind == ledger.KindPolicyDeleted || len(ps.Policy) == 0 || string(ps.Policy) == "null" {
				delete(h.overrides, r.Principal)
				return nil
			}
			b, err := normalPolicy(ps.Policy)
			if err != nil {
				return fmt.Errorf("admin record %d: policy: %w", r.Seq, err)
			}
			h.overrides[r.Principal] = b
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the ledger's management records: %w", err)
	}
	return h, nil
}

// normalPolicy decodes and re-encodes a policy, so that two documents
// compare equal exactly when they mean the same.
func normalPolicy(raw []byte) ([]byte, error) {
	p, err := policy.DecodePolicy(raw)
	if err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

// StateError lists how the store's keys and overrides differ from the
// ledger's management records.
type StateError struct {
	Problems []string
}

func (e *StateError) Error() string {
	var b strings.Builder
	b.WriteString("the store does not match the ledger's management records (the store is damaged or was edited); refusing to start:")
	const show = 20
	for i, p := range e.Problems {
		if i == show {
			fmt.Fprintf(&b, "\n  … and %d more", len(e.Problems)-show)
			break
		}
		b.WriteString("\n  " + p)
	}
	b.WriteString("\nWith the gateway stopped, `toolgate audit rebuild-state --data DIR` puts back key statuses and overrides from the ledger (a revocation always wins); keys whose row is lost cannot be rebuilt (the ledger holds nothing that authenticates) and are recorded as revoked.")
	return b.String()
}

// diff is one difference between the store and the ledger.
type diff struct {
	msg string
	fix func() (string, error) // what rebuild-state does about it
}

// compareState compares the store (keys, overrides) with the ledger's
// history. Differences a start may settle by itself are returned as
// benign: a key revoked in the store but not in the ledger (a revocation
// whose record failed; a revocation always wins) and a key that expired
// since its last record. Everything else is a problem.
func compareState(h *adminHistory, keys *identity.Store, overrides OverrideStore, led *ledger.Ledger, now time.Time, actor string) (benign, problems []diff, err error) {
	stored, _, err := overrides.Load()
	if err != nil {
		return nil, nil, err
	}
	record := func(k *identity.Key, kind string) error {
		return appendAdmin(led, now, actor, k.Principal, kind, stateOfKey(k, now))
	}
	inStore := map[string]bool{}
	for _, k := range keys.List() {
		inStore[k.ID] = true
		got := stateOfKey(k, now)
		want, ok := h.keys[k.ID]
		seq := h.keySeq[k.ID]
		switch {
		case !ok && k.RevokedAt().IsZero():
			problems = append(problems, diff{fmt.Sprintf("key %s: in the store but never created in the ledger", k.ID), func() (string, error) {
				rk, err := keys.Restore(k.ID, k.Name, k.ExpiresAt(), now)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("key %s: revoked (not in the ledger)", k.ID), record(rk, ledger.KindKeyRevoked)
			}})
		case !ok || want.RevokedAt.IsZero() && !k.RevokedAt().IsZero():
			benign = append(benign, diff{fmt.Sprintf("key %s: revoked in the store but not in the ledger; recording the revocation", k.ID), func() (string, error) {
				return fmt.Sprintf("key %s: revocation recorded", k.ID), record(k, ledger.KindKeyRevoked)
			}})
		case got.DigestFP != want.DigestFP:
			problems = append(problems, diff{fmt.Sprintf("key %s: its digest does not match the one recorded at seq %d (damaged row)", k.ID, seq), func() (string, error) {
				rk, err := keys.Restore(k.ID, want.Name, want.ExpiresAt, firstNonZero(want.RevokedAt, now))
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("key %s: digest damaged, cannot be rebuilt; revoked (issue a new key)", k.ID), record(rk, ledger.KindKeyRevoked)
			}})
		case !want.RevokedAt.Equal(got.RevokedAt) || !want.ExpiresAt.Equal(got.ExpiresAt) || want.Name != got.Name || !want.CreatedAt.Equal(got.CreatedAt):
			what := "name, creation or expiry"
			if !want.RevokedAt.IsZero() && got.RevokedAt.IsZero() {
				what = "revoked"
			}
			if what == "revoked" {
				problems = append(problems, diff{fmt.Sprintf("key %s: revoked in the ledger (seq %d) but active in the store", k.ID, seq), nil})
			} else {
				problems = append(problems, diff{fmt.Sprintf("key %s: %s differs from the ledger (seq %d)", k.ID, what, seq), nil})
			}
			problems[len(problems)-1].fix = func() (string, error) {
				_, err := keys.Restore(k.ID, want.Name, want.ExpiresAt, want.RevokedAt)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("key %s: restored from the ledger (seq %d)", k.ID, seq), nil
			}
		case want.Status != "expired" && got.Status == "expired":
			benign = append(benign, diff{fmt.Sprintf("key %s: expired; recording it", k.ID), func() (string, error) {
				return fmt.Sprintf("key %s: expiry recorded", k.ID), record(k, ledger.KindKeyExpired)
			}})
		}
	}
	ids := make([]string, 0, len(h.keys))
	for id := range h.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		want := h.keys[id]
		if inStore[id] || !want.RevokedAt.IsZero() || !want.ExpiresAt.IsZero() && !now.Before(want.ExpiresAt) {
			continue // a revoked or expired key missing from the store serves nothing
		}
		seq := h.keySeq[id]
		problems = append(problems, diff{fmt.Sprintf("key %s: created in the ledger (seq %d) but missing from the store", id, seq), func() (string, error) {
			want.RevokedAt, want.Status = now.Truncate(time.Second), "revoked"
			err := appendAdmin(led, now, actor, identity.KeyPrincipal(id).String(), ledger.KindKeyRevoked, want)
			return fmt.Sprintf("key %s: its row is lost and cannot be rebuilt (the ledger holds nothing that authenticates); recorded as revoked: issue a new key", id), err
		}})
	}
	principals := map[string]bool{}
	for p := range stored {
		principals[p] = true
	}
	for p := range h.overrides {
		principals[p] = true
	}
	ps := make([]string, 0, len(principals))
	for p := range principals {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	for _, p := range ps {
		want, inLedger := h.overrides[p]
		var got []byte
		if sp, ok := stored[p]; ok {
			if got, err = json.Marshal(sp); err != nil {
				return nil, nil, err
			}
		}
		if bytes.Equal(got, want) {
			continue
		}
		var msg string
		switch {
		case !inLedger:
			msg = fmt.Sprintf("override of %s: in the store but not in the ledger", p)
		case got == nil:
			msg = fmt.Sprintf("override of %s: put in the ledger (seq %d) but missing from the store", p, h.polSeq[p])
		default:
			msg = fmt.Sprintf("override of %s: differs from the ledger (seq %d)", p, h.polSeq[p])
		}
		problems = append(problems, diff{msg, func() (string, error) {
			if !inLedger {
				return fmt.Sprintf("override of %s: deleted (not in the ledger)", p), overrides.Delete(p)
			}
			pol, err := policy.DecodePolicy(want)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("override of %s: restored from the ledger (seq %d)", p, h.polSeq[p]), overrides.Put(p, pol)
		}})
	}
	return benign, problems, nil
}

func firstNonZero(a, b time.Time) time.Time {
	if !a.IsZero() {
		return a
	}
	return b
}

// CheckState compares the store's keys and overrides with the ledger's
// management records before the gateway serves. A store that grants
// anything the ledger does not say (a key the ledger revoked, a key or
// override it never recorded, a different override, a damaged digest,
// keys gone) is refused with a *StateError naming each key_id and
// principal. A revocation the ledger lacks and an expiry since the last
// record are recorded (a revocation always wins). A data dir written
// before admin records existed (a ledger without any, a store with keys
// or overrides) is adopted: its state is recorded as found, once.
func CheckState(led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, now time.Time, log *slog.Logger) error {
	h, err := loadHistory(led)
	if err != nil {
		return err
	}
	if h.records == 0 {
		return adopt(led, keys, overrides, now, log)
	}
	benign, problems, err := compareState(h, keys, overrides, led, now, actorStart)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		e := &StateError{}
		for _, p := range problems {
			e.Problems = append(e.Problems, p.msg)
		}
		return e
	}
	for _, b := range benign {
		log.Warn("management state", "change", b.msg)
		if _, err := b.fix(); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	return nil
}

// adopt records the keys and overrides of a store whose ledger has no
// admin record yet.
func adopt(led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, now time.Time, log *slog.Logger) error {
	stored, _, err := overrides.Load()
	if err != nil {
		return err
	}
	if keys.Len() == 0 && len(stored) == 0 {
		return nil
	}
	const actor = actorStart + ": adopted, made before admin records"
	for _, k := range keys.List() {
		if err := appendAdmin(led, now, actor, k.Principal, ledger.KindKeyCreated, stateOfKey(k, now)); err != nil {
			return err
		}
	}
	for p, pol := range stored {
		if err := appendAdmin(led, now, actor, p, ledger.KindPolicyPut, policyState{pol}); err != nil {
			return err
		}
	}
	log.Info("management state adopted into the ledger", "keys", keys.Len(), "overrides", len(stored))
	return nil
}

// RebuildState puts the store's keys and overrides back as the ledger's
// management records say, with the gateway stopped (toolgate audit
// rebuild-state): statuses, names and expiries restored (a revocation in
// either wins), overrides restored or removed, keys the ledger never
// created revoked, and keys whose row is lost or damaged recorded as
// revoked (they cannot be rebuilt). Every change that makes the ledger
// agree is itself an admin record. It returns one line per change.
func RebuildState(led *ledger.Ledger, keys *identity.Store, overrides OverrideStore, now time.Time) ([]string, error) {
	h, err := loadHistory(led)
	if err != nil {
		return nil, err
	}
	if h.records == 0 {
		return nil, errors.New("the ledger holds no management records: nothing to rebuild from (a data dir from before admin records is adopted at its next start)")
	}
	benign, problems, err := compareState(h, keys, overrides, led, now, actorRebuild)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, d := range append(problems, benign...) {
		what, err := d.fix()
		if err != nil {
			return done, fmt.Errorf("%s: %w", d.msg, err)
		}
		done = append(done, what)
	}
	return done, nil
}
